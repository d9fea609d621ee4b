"""Data-parallel context under ``torchrun``: rank, world size, and the few collectives lth needs.

Without torchrun (no WORLD_SIZE in the environment) everything is a no-op for one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup(device: str) -> Context:
    """Join the process group torchrun prepared (gloo on CPU, nccl on CUDA); one process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
    else:
        # N processes on a few cores: split the cores instead of oversubscribing them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    return Context(dist.get_rank(), dist.get_world_size(), local)


def all_reduce_sum(t: torch.Tensor, ctx: Context) -> torch.Tensor:
    if ctx.active:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor, ctx: Context) -> torch.Tensor:
    if ctx.active:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def broadcast(t: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Rank 0's value everywhere (masks must be identical on every rank)."""
    if ctx.active:
        if t.dtype == torch.bool:
            u = t.to(torch.uint8)
            dist.broadcast(u, src=0)
            t.copy_(u.bool())
        else:
            dist.broadcast(t, src=0)
    return t


def barrier(ctx: Context) -> None:
    if ctx.active:
        dist.barrier()


def teardown(ctx: Context) -> None:
    if ctx.active and dist.is_initialized():
        dist.destroy_process_group()
