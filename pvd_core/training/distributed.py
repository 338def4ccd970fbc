"""Multi-process training with DistributedDataParallel, started by torchrun.

torchrun announces itself through the environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT); a plain ``pvd train`` has none of them and runs as a single
process with no process group at all, so the single-process path never depends on
torch.distributed. gloo is the backend on CPU and nccl on CUDA (docs/method.md section 5).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from pvd_core.errors import UsageError


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in the job; rank 0 alone writes logs and checkpoints."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_from_environment() -> DistEnv:
    """Read torchrun's variables; a partial or inconsistent set is an error, not a guess."""
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    present = [n for n in names if n in os.environ]
    if not present:
        return DistEnv()
    if len(present) != len(names):
        missing = [n for n in names if n not in os.environ]
        raise UsageError(f"distributed launch: environment has {present} but not {missing}; start with torchrun")
    try:
        rank, world, local = (int(os.environ[n]) for n in names)
    except ValueError as exc:
        raise UsageError(f"distributed launch: RANK/WORLD_SIZE/LOCAL_RANK must be integers ({exc})") from exc
    if not (0 <= rank < world) or local < 0:
        raise UsageError(f"distributed launch: RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local} are inconsistent")
    return DistEnv(rank=rank, world_size=world, local_rank=local)


def setup(env: DistEnv, device: torch.device) -> torch.device:
    """Initialise the process group (when launched by torchrun) and pick this rank's device.

    Returns the device this rank trains on: ``cuda:LOCAL_RANK`` on GPU machines.
    """
    if not env.enabled:
        return device
    if device.type == "cuda":
        if env.local_rank >= torch.cuda.device_count():
            raise UsageError(f"LOCAL_RANK {env.local_rank} but only {torch.cuda.device_count()} CUDA device(s)")
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size)
    return device


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average scalar metrics over all ranks (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()) or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.cpu().tolist()))


def broadcast_object(obj: object, src: int = 0) -> object:
    """Send a picklable object from rank ``src`` to every rank (identity without a group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device() if dist.get_backend() == "nccl" else None)
    return box[0]


def sync_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last step each rank
    still holds its own running statistics; this makes the final state identical everywhere.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src=src)


def wrap_ddp(model: torch.nn.Module, device: torch.device, sync_batchnorm: bool) -> torch.nn.Module:
    """DDP around ``model`` (SyncBatchNorm first when asked and on CUDA)."""
    if sync_batchnorm:
        if device.type != "cuda":
            print("train.sync_batchnorm is ignored on CPU (SyncBatchNorm needs CUDA)")
        else:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids: Optional[list[int]] = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def gather_objects(obj: object) -> list:
    """Every rank's ``obj`` as a list indexed by rank (``[obj]`` without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def state_digest(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer (key order), to show that ranks agree."""
    import hashlib

    h = hashlib.sha256()
    for key, value in module.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
