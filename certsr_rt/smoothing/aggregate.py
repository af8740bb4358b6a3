"""Reductions over the sample axis: the median and extra order statistics (torch reference).

The CUDA kernel in :mod:`certsr_rt.runtime.cuda_median` computes the same values faster on GPU; this module
is the reference it is tested against and the fallback everywhere else.

NaN policy: NaNs order after every number (as ``torch.sort`` does). The runtime never feeds NaNs here in
practice: a chunk with a non-finite output is recomputed in fp32 before aggregation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def median(samples: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Per-element median over ``dim``.

    For odd n this is the middle order statistic; for even n the mean of the two middle ones (so for n = 2
    it is the mean, as in the paper's MRS fine-tuning).

    Args:
        samples: tensor with the n samples along ``dim``.
        dim: the sample axis.

    Returns:
        The tensor with ``dim`` removed.
    """
    n = samples.shape[dim]
    if n == 1:
        return samples.squeeze(dim)
    ordered, _ = torch.sort(samples, dim=dim)
    if n % 2 == 1:
        return ordered.select(dim, n // 2)
    return 0.5 * (ordered.select(dim, n // 2 - 1) + ordered.select(dim, n // 2))


def order_statistics(samples: torch.Tensor, ranks: Sequence[int], dim: int = 0) -> list[torch.Tensor]:
    """The k-th smallest values over ``dim`` for each 1-based rank k in ``ranks``.

    Args:
        samples: tensor with the n samples along ``dim``.
        ranks: 1-based ranks, each in [1, n].
        dim: the sample axis.

    Returns:
        One tensor per rank, with ``dim`` removed.
    """
    n = samples.shape[dim]
    for k in ranks:
        if not 1 <= k <= n:
            raise ValueError(f"order-statistic rank must be in [1, {n}], got {k}")
    if not ranks:
        return []
    ordered, _ = torch.sort(samples, dim=dim)
    return [ordered.select(dim, k - 1) for k in ranks]


def median_and_order_statistics(
    samples: torch.Tensor, ranks: Sequence[int] = ()
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Median and order statistics over axis 0 with one sort (torch reference for the CUDA kernel)."""
    n = samples.shape[0]
    for k in ranks:
        if not 1 <= k <= n:
            raise ValueError(f"order-statistic rank must be in [1, {n}], got {k}")
    # Sorting along a contiguous last axis is ~2x faster on CPU than along the strided sample axis.
    ordered, _ = torch.sort(samples.movedim(0, -1).contiguous(), dim=-1)
    med = ordered[..., n // 2] if n % 2 == 1 else 0.5 * (ordered[..., n // 2 - 1] + ordered[..., n // 2])
    return med, [ordered[..., k - 1] for k in ranks]
