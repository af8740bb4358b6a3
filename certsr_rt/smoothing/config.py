"""Configuration of median randomized smoothing."""

from __future__ import annotations

from dataclasses import dataclass

from certsr_rt.errors import InputError


@dataclass(frozen=True)
class SmoothingConfig:
    """How the smoothed prediction is formed: ``median_i f(x + g_i)``, ``g_i ~ N(0, sigma^2 I)``.

    ``samples == 1`` with ``sigma == 0`` is the plain model.
    """

    sigma: float | None = None
    """Noise standard deviation in [0, 1] image units; ``None`` uses the model's recommended sigma."""

    samples: int = 21
    """Number of noisy copies n whose outputs are reduced by the per-pixel median."""

    seed: int = 0
    """Seed of the noise field. Same seed, same image, same options -> identical output on any backend."""

    chunk_size: int | None = None
    """How many noisy copies go through the network in one batch; ``None`` picks from the input size."""

    def __post_init__(self) -> None:
        if self.sigma is not None and not (0.0 <= self.sigma <= 1.0):
            raise InputError(f"sigma must be in [0, 1], got {self.sigma}")
        if not (1 <= self.samples <= 100_000):
            raise InputError(f"samples must be between 1 and 100000, got {self.samples}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise InputError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if not (0 <= self.seed < 2**31):
            raise InputError(f"seed must be in [0, 2**31), got {self.seed}")

    def resolved(self, default_sigma: float) -> SmoothingConfig:
        """This config with ``sigma`` filled in from ``default_sigma`` when it was left as ``None``."""
        if self.sigma is not None:
            return self
        return SmoothingConfig(default_sigma, self.samples, self.seed, self.chunk_size)
