"""Compare-exchange selection networks: the median and order statistics without sorting.

A *sorting network* is a fixed sequence of compare-exchanges ``(i, j)`` that sorts any n values; pruned to the
sorted positions that are wanted (the median, the certified bounds' ranks) it becomes a *selection network*.
The same network, as plain data, drives two implementations:

* the CUDA kernel in :mod:`certsr_rt.runtime.cuda_median` (one thread per element, values in registers);
* :func:`certsr_rt.smoothing.aggregate.median_and_order_statistics` on any torch device, as whole-tensor
  ``torch.minimum`` / ``torch.maximum`` over the n sample planes (91 pairs for the median of 21: ~6x faster
  than ``torch.sort`` along the sample axis on CPU, see benchmarks/results/cost_cpu.md).

Because the network is data it is verified on CPU: tests simulate it against sorting and, for n = 21, on all
2**21 zero-one inputs, which by the zero-one principle proves it for every input.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import torch

from certsr_rt.errors import InputError

__all__ = [
    "NETWORK_MAX_N",
    "Comparator",
    "apply_network",
    "batcher_sorting_network",
    "check_ranks",
    "needed_ranks",
    "selection_network",
    "simulate_network",
]

NETWORK_MAX_N = 64
"""Largest n served by a selection network; larger n sort (torch) or use the kernel's generic path."""

Comparator = tuple[int, int]


def check_ranks(n: int, ranks: Sequence[int]) -> None:
    """Raise :class:`InputError` unless every 1-based rank is in ``[1, n]``."""
    for k in ranks:
        if not 1 <= k <= n:
            raise InputError(f"Expected order-statistic ranks in [1, {n}], but got {k}")


def apply_network(wires: list[torch.Tensor], network: Sequence[Comparator]) -> list[torch.Tensor]:
    """Run compare-exchanges over a list of same-shaped tensors (one per wire), elementwise.

    The input tensors are not modified: each compare-exchange makes two new tensors. ``torch.minimum`` and
    ``torch.maximum`` propagate NaN to both outputs, so callers that need an order for NaN (it sorts last)
    must not pass NaN here.

    Args:
        wires: the n values, one tensor per wire.
        network: comparators ``(i, j)``, ``i < j``; afterwards wire ``i`` holds the minimum and ``j``
            the maximum.

    Returns:
        A new list of wires.
    """
    wires = list(wires)
    for a, b in network:
        wires[a], wires[b] = torch.minimum(wires[a], wires[b]), torch.maximum(wires[a], wires[b])
    return wires


@cache
def batcher_sorting_network(n: int) -> tuple[Comparator, ...]:
    """Batcher's odd-even merge sorting network for ``n`` wires, as compare-exchanges ``(i, j)``, ``i < j``.

    After a compare-exchange wire ``i`` holds the smaller and wire ``j`` the larger value. The network is
    built for the next power of two and the comparators touching wires ``>= n`` are dropped: those wires
    can be thought of as holding ``+inf``, which no ascending comparator ever moves, so the dropped
    comparators were no-ops.

    Args:
        n: number of values, >= 1.

    Returns:
        The comparators in execution order.
    """
    if n < 1:
        raise InputError(f"Expected a network size n >= 1, but got {n}")
    size = 1
    while size < n:
        size *= 2
    comparators: list[Comparator] = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            j = k % p
            while j < size - k:
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        comparators.append((i + j, i + j + k))
                j += 2 * k
            k //= 2
        p *= 2
    return tuple((a, b) for a, b in comparators if b < n)


def needed_ranks(n: int, ranks: Sequence[int] = ()) -> tuple[int, ...]:
    """The 0-based sorted positions the kernel must produce: the median's one or two, then ``ranks``.

    Args:
        n: number of samples.
        ranks: extra 1-based order statistics.

    Returns:
        Sorted, de-duplicated 0-based positions.
    """
    check_ranks(n, ranks)
    middle = {n // 2} if n % 2 == 1 else {n // 2 - 1, n // 2}
    return tuple(sorted(middle | {k - 1 for k in ranks}))


@cache
def selection_network(n: int, positions: tuple[int, ...]) -> tuple[Comparator, ...]:
    """The sorting network for ``n`` pruned to the comparators that can affect ``positions``.

    Walking the sorting network backwards, a comparator is kept when one of its output wires is still
    needed, and then both of its input wires become needed. The kept comparators put exactly the sorted
    values at ``positions`` (other wires may end unsorted).

    Args:
        n: number of values.
        positions: 0-based sorted positions wanted, each in ``[0, n)``.

    Returns:
        The kept comparators in execution order.
    """
    for p in positions:
        if not 0 <= p < n:
            raise InputError(f"Expected sorted positions in [0, {n}), but got {p}")
    needed = set(positions)
    kept: list[Comparator] = []
    for a, b in reversed(batcher_sorting_network(n)):
        if a in needed or b in needed:
            kept.append((a, b))
            needed.update((a, b))
    return tuple(reversed(kept))


def simulate_network(values: torch.Tensor, network: Sequence[Comparator]) -> torch.Tensor:
    """Apply a compare-exchange network along dim 0 (CPU check of what the kernel does).

    Args:
        values: ``n x ...`` tensor.
        network: comparators ``(i, j)``, ``i < j``.

    Returns:
        A new tensor where each comparator has put the minimum on wire ``i`` and the maximum on wire ``j``.
    """
    return torch.stack(apply_network(list(values.unbind(0)), network))
