"""Multi-process training with `torch.distributed`: joining the process group that torchrun describes, and the
few questions a script asks about it (which rank am I, am I the one that writes files).

torchrun starts one process per GPU (or per CPU share) and tells each its place through environment variables
(RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT). `init_from_env` reads them and joins the group, with
NCCL when the process has a GPU and gloo otherwise; the Trainer calls it, so the same script and config run in
one process (no variables set: nothing happens) or under `torchrun --nproc_per_node N` unchanged.
"""

from __future__ import annotations

import datetime
import os
import socket

import torch
import torch.distributed as dist


def env_world_size() -> int:
    """The number of processes torchrun started (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(backend: str | None = None, timeout_s: float = 1800.0) -> bool:
    """Join the process group described by torchrun's environment; True when training is distributed.

    backend: 'gloo' or 'nccl'; by default NCCL when CUDA is available, else gloo. Does nothing (and returns
    False) when WORLD_SIZE is unset or 1; returns True at once when the group is already initialised."""
    if not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    if env_world_size() <= 1:
        return False
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise RuntimeError(f"WORLD_SIZE={env_world_size()} but {name} is not set; launch with torchrun")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def local_device(device: torch.device) -> torch.device:
    """The device of this process: cuda:LOCAL_RANK for a CUDA device without an index, else `device`."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one that writes files and logs."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (call at the end of a torchrun script)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], device: torch.device | None = None) -> list[float]:
    """The element-wise sum of `values` over all ranks (the values themselves in a single process). NCCL reduces
    CUDA tensors only, so under NCCL the sum runs on `device`, this rank's GPU."""
    if world_size() == 1:
        return [float(v) for v in values]
    on = device if dist.get_backend() == "nccl" and device is not None else torch.device("cpu")
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=on)
    dist.all_reduce(t)
    return t.cpu().tolist()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` now (for MASTER_PORT of a local run)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
