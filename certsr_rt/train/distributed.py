"""Several processes through ``torchrun``: process-group setup and the few collectives training needs.

``torchrun --nproc_per_node N`` starts N copies of the command with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in the environment. :func:`init_distributed` reads them
and joins the group: NCCL when the processes use CUDA, gloo on CPU. Without those variables (a plain
``python``/``certsr-rt`` run) everything here is a no-op and training runs in one process.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from certsr_rt.errors import InputError

__all__ = [
    "DistInfo",
    "all_reduce_grads",
    "all_reduce_mean",
    "any_true",
    "barrier",
    "cleanup_distributed",
    "init_distributed",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the group.

    Attributes:
        rank: global rank (0 writes checkpoints and logs).
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        initialized_here: whether :func:`init_distributed` created the process group (and so should
            destroy it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        """True with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"environment variable {name} must be an integer, got {raw!r}") from None


def init_distributed(use_cuda: bool, backend: str | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment variables, if any.

    Args:
        use_cuda: the processes run on CUDA (one GPU per local rank, made the current device).
        backend: the collectives' backend; default NCCL with ``use_cuda``, otherwise gloo. ``upscale``
            passes gloo on GPUs too: only a few integers travel, on the CPU.

    Returns:
        This process's :class:`DistInfo`. With ``WORLD_SIZE`` unset or 1, a single-process info.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size <= 1:
        return DistInfo()
    if not dist.is_available():  # pragma: no cover - every official torch build has it
        raise InputError(f"WORLD_SIZE={world_size} but this torch build has no torch.distributed")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise InputError(
                f"LOCAL_RANK={local_rank} needs at least {local_rank + 1} CUDA devices, "
                f"got {torch.cuda.device_count()}"
            )
        torch.cuda.set_device(local_rank)
    created = False
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend=backend, init_method="env://")
        created = True
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        initialized_here=created,
    )


def cleanup_distributed(info: DistInfo) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for all processes (no-op with one)."""
    if info.enabled:
        dist.barrier()


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``values`` over the processes (returns a new tensor; identity with one process)."""
    out = values.detach().clone()
    if info.enabled:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= info.world_size
    return out


def all_reduce_grads(params: Iterable[torch.nn.Parameter], info: DistInfo) -> None:
    """Average the ``.grad`` of ``params`` over the processes in one flat all-reduce.

    Used for the discriminator, which is not wrapped in DistributedDataParallel: it runs several forward
    passes (real, then each fake group) before one backward, which DDP's reducer does not allow.
    Parameters without a gradient are skipped (they are the same on every rank: all or none have one).
    """
    if not info.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= info.world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def any_true(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every process if ``flag`` is true on any of them (so that all stop together)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
