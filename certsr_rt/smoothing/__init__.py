"""Median randomized smoothing: configuration, position-keyed noise, aggregation and certification maths."""

from certsr_rt.smoothing.aggregate import median, median_and_order_statistics, order_statistics
from certsr_rt.smoothing.config import SmoothingConfig
from certsr_rt.smoothing.noise import gaussian_field

__all__ = ["SmoothingConfig", "gaussian_field", "median", "median_and_order_statistics", "order_statistics"]
