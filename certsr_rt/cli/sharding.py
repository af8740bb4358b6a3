"""``torchrun ... -m certsr_rt.cli.app upscale``: the inputs of one batch split over the processes.

``torchrun --nproc_per_node N`` starts N copies of the command with ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` set (several machines: the same command on each, with ``--nnodes``, ``--node-rank`` or a
rendezvous endpoint, see the README). :func:`join_shard` reads them through
:func:`certsr_rt.train.distributed.init_distributed` and joins a gloo group: only a few integers travel
(the seed, failure counts), on the CPU, whether the ranks upscale on GPUs or not. Without those variables
every method here is a no-op and the command runs in one process, as always.

What the command does with a :class:`Shard` (``certsr_rt/cli/upscale.py``):

* every rank lists the inputs and plans the outputs the same way; rank ``r`` of ``W`` then upscales inputs
  ``r, r + W, r + 2W, ...`` of that plan, so each input is read and written by exactly one rank;
* rank 0 builds its Upscaler first (a one-time ONNX export lands in the cache once) and sends its seed, so
  every rank smooths with the same noise and each output is the one a single process would write with that
  seed; the others build theirs after it, or stop quietly when it could not;
* problems every rank sees (a missing input, an output that would overwrite an input) and the notes and
  progress bar are printed by rank 0 only; an error about an input comes from the rank that owns it;
* at the end the failure counts are summed: rank 0 prints the summary, and every rank exits 1 if any
  input failed anywhere (torchrun's own exit code is then non-zero too).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import torch

from certsr_rt.errors import InputError

if TYPE_CHECKING:
    from certsr_rt.train.distributed import DistInfo

__all__ = ["Shard", "join_shard"]

T = TypeVar("T")


@dataclass
class Shard:
    """This process's place in a sharded run (a single process: rank 0 of 1, every call a no-op).

    Attributes:
        info: rank, world size and local rank (``None``: a single process).
    """

    # None, not DistInfo(), in one process: certsr_rt.train pulls in the trainer, which upscale needs not.
    info: DistInfo | None = None

    @property
    def enabled(self) -> bool:
        """True with more than one process."""
        return self.info is not None and self.info.enabled

    @property
    def rank(self) -> int:
        """Global rank."""
        return self.info.rank if self.info is not None else 0

    @property
    def world_size(self) -> int:
        """Number of processes."""
        return self.info.world_size if self.info is not None else 1

    @property
    def is_main(self) -> bool:
        """Rank 0: prints what all ranks share (notes, progress, problems every rank sees, the summary)."""
        return self.rank == 0

    def mine(self, items: Sequence[T]) -> list[T]:
        """This rank's part of ``items``: every ``world_size``-th item from position ``rank``."""
        return list(items[self.rank :: self.world_size])

    def broadcast(self, value: int) -> int:
        """Rank 0's ``value`` on every rank (``value`` itself in a single process)."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.int64)
        torch.distributed.broadcast(t, src=0)
        return int(t.item())

    def sum(self, value: int) -> int:
        """The sum of ``value`` over the ranks."""
        return self._reduce(value, torch.distributed.ReduceOp.SUM) if self.enabled else value

    def max(self, value: int) -> int:
        """The largest ``value`` over the ranks."""
        return self._reduce(value, torch.distributed.ReduceOp.MAX) if self.enabled else value

    def sync(self) -> None:
        """Wait until every rank is here.

        Called last, so that rank 0's final lines are out before torchrun, seeing another rank exit with
        an error, stops the group.
        """
        if self.enabled:
            torch.distributed.barrier()

    def _reduce(self, value: int, op: torch.distributed.ReduceOp) -> int:
        t = torch.tensor([value], dtype=torch.int64)
        torch.distributed.all_reduce(t, op=op)
        return int(t.item())

    def close(self) -> None:
        """Leave the group (if :func:`join_shard` created it)."""
        if self.info is not None:
            from certsr_rt.train.distributed import cleanup_distributed

            cleanup_distributed(self.info)


def join_shard(device: str) -> tuple[Shard, str]:
    """Join torchrun's group, if the environment describes one, and pick this rank's device.

    Args:
        device: the ``--device`` option (``auto``, ``cpu`` or ``cuda``).

    Returns:
        ``(shard, device)``: under torchrun, ``auto`` and ``cuda`` become ``cuda:LOCAL_RANK`` where CUDA is
        available (and that device is made current); otherwise ``device`` as given.

    Raises:
        InputError: bad torchrun variables, or fewer CUDA devices on this machine than local ranks.
    """
    if os.environ.get("WORLD_SIZE", "1") in ("", "1"):
        return Shard(), device  # not under torchrun (a bad WORLD_SIZE is reported below)
    from certsr_rt.train.distributed import init_distributed

    info = init_distributed(use_cuda=False, backend="gloo")
    if not info.enabled:
        return Shard(info), device
    shard = Shard(info)
    if device in ("auto", "cuda") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if info.local_rank >= count:
            shard.close()
            raise InputError(
                f"LOCAL_RANK={info.local_rank} needs at least {info.local_rank + 1} CUDA devices on this "
                f"machine, but it has {count}: start at most {count} processes per node"
            )
        torch.cuda.set_device(info.local_rank)
        device = f"cuda:{info.local_rank}"
    return shard, device
