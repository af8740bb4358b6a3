"""Reductions over the sample axis: the median and extra order statistics, in torch.

The CUDA kernel in :mod:`certsr_rt.runtime.cuda_median` computes the same values faster on GPU; this module
is the fallback everywhere else, and its ``method="sort"`` is the reference both are tested against.

NaN policy: NaNs order after every number (as ``torch.sort`` does). The runtime never feeds NaNs here in
practice: a chunk with a non-finite output is recomputed in fp32 before aggregation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from certsr_rt.smoothing.network import NETWORK_MAX_N, apply_network, needed_ranks, selection_network


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
    samples: torch.Tensor, ranks: Sequence[int] = (), *, method: str = "auto"
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Median and 1-based order statistics over axis 0, on any device.

    Args:
        samples: ``n x ...`` tensor of n samples.
        ranks: extra 1-based ranks, each in ``[1, n]``.
        method: ``"sort"`` (``torch.sort`` along the sample axis: the reference), ``"network"`` (the
            compare-exchange selection network of :mod:`certsr_rt.smoothing.network` on whole sample
            planes, n <= :data:`~certsr_rt.smoothing.network.NETWORK_MAX_N`), or ``"auto"``: the network
            when it applies, redone with the sort when its median holds a NaN (``torch.minimum`` spreads a
            NaN where the sort orders it last). Both give the same values (``-0.0`` and ``+0.0`` may swap).

    Returns:
        ``(median, [order statistic for each rank])``, each shaped ``samples.shape[1:]``.
    """
    n = samples.shape[0]
    for k in ranks:
        if not 1 <= k <= n:
            raise ValueError(f"order-statistic rank must be in [1, {n}], got {k}")
    if method not in ("auto", "sort", "network"):
        raise ValueError(f"method must be auto, sort or network, got {method!r}")
    if method == "network" and n > NETWORK_MAX_N:
        raise ValueError(f"the network method takes n <= {NETWORK_MAX_N}, got n = {n}")
    positions = needed_ranks(n, ranks)
    if method in ("auto", "network") and 1 < n <= NETWORK_MAX_N:
        wires = apply_network(list(samples.unbind(0)), selection_network(n, positions))
        med, stats = _pick(wires.__getitem__, n, ranks)
        # A NaN among a pixel's samples reaches every selected wire (each order statistic depends on every
        # sample, and min/max spread NaN to both outputs), so a NaN-free median means NaN-free samples;
        # otherwise sort, which orders NaN last. Checking the median reads 1/n of the data.
        if method == "network" or not bool(torch.isnan(med).any()):
            return med, stats
    # Sorting along a contiguous last axis is ~2x faster on CPU than along the strided sample axis.
    ordered, _ = torch.sort(samples.movedim(0, -1).contiguous(), dim=-1)
    return _pick(lambda p: ordered[..., p], n, ranks)


def _pick(
    at: Callable[[int], torch.Tensor], n: int, ranks: Sequence[int]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The median (mean of the two middle values for even n) and the ranks, from sorted position -> value."""
    med = at(n // 2) if n % 2 == 1 else 0.5 * (at(n // 2 - 1) + at(n // 2))
    return med, [at(k - 1) for k in ranks]
