"""Process group, device and FSDP2 sharding for the one loop — nothing here runs at import time.

One process: rank 0 of 1, no process group. Under `torchrun --nproc_per_node N` (the launcher sets
RANK / WORLD_SIZE / LOCAL_RANK), `init_runtime` joins the group (NCCL on CUDA, gloo on CPU) and
`shard_model` wraps each transformer block, then the root, with `fully_shard` (FSDP2), so each rank
holds 1/N of the weights, gradients and AdamW state.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from llama2.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    """Where this process trains: its rank among `world_size` and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launcher_world_size() -> int:
    """WORLD_SIZE as set by torchrun, 1 when started as a plain process (read at call time)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def pick_device(name: str, local_rank: int) -> torch.device:
    """`auto`: this rank's CUDA device when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device is cuda but no CUDA device is visible; set device=cpu or device=auto")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


def init_runtime(device: str = "auto") -> Runtime:
    """Join the process group when launched by torchrun; otherwise a single-process runtime."""
    world_size = launcher_world_size()
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    runtime_device = pick_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if runtime_device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return Runtime(rank=rank, world_size=world_size, local_rank=local_rank, device=runtime_device)


def shutdown(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def shard_model(model: nn.Module, blocks: Iterable[nn.Module], runtime: Runtime, *, param_dtype: torch.dtype | None) -> None:
    """FSDP2 in place: each block is one all-gather unit, the root holds the rest (embeddings, head).

    `param_dtype` (bf16 on GPU) makes the all-gathers and block compute low precision while the
    sharded fp32 weights and the gradient reduction stay fp32.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(runtime.device.type, (runtime.world_size,))
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def all_reduce_sum(values: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Sum of `values` over ranks (a no-op in one process)."""
    if runtime.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()


def broadcast_object(value: object, runtime: Runtime) -> object:
    """Rank 0's `value` on every rank."""
    if not runtime.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
