"""torch.distributed helpers: init from the ``torchrun`` environment, rank-aware printing, stat
reduction. NCCL on CUDA, gloo on CPU; no communication of our own."""
from __future__ import annotations

import datetime
import os
from typing import Optional

import torch
import torch.distributed as dist


def init_from_env(device_type: str = "cpu", timeout_s: float = 1800) -> None:
    """Join the process group that ``torchrun`` describes in RANK/WORLD_SIZE/MASTER_ADDR/...;
    a no-op when WORLD_SIZE is absent or 1 (a plain single process)."""
    if dist.is_available() and dist.is_initialized():
        return
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(get_local_rank())
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def print0(*args, **kwargs) -> None:
    """Print on rank 0 only."""
    if get_rank() == 0:
        print(*args, **kwargs)


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place and returned); identity on one process. CPU tensors are moved to
    the backend's device and back when needed (NCCL needs CUDA tensors)."""
    if not is_initialized():
        return tensor
    if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
        tmp = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(tmp)
        tensor.copy_(tmp.to(tensor.device))
    else:
        dist.all_reduce(tensor)
    return tensor


def broadcast_module(module: Optional[torch.nn.Module], src: int = 0) -> None:
    """Copy parameters and buffers of rank ``src`` to every rank."""
    if module is None or not is_initialized():
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=src)


def broadcast_flag(flag: bool, src: int = 0) -> bool:
    """Rank ``src``'s boolean on every rank (one small broadcast); the flag itself on one process."""
    if not is_initialized():
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        t = t.to(torch.device("cuda", torch.cuda.current_device()))
    dist.broadcast(t, src=src)
    return bool(int(t.item()))


def gather_objects(obj) -> list:
    """Every rank's picklable ``obj``, in rank order, on every rank; ``[obj]`` on one process."""
    if not is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def destroy() -> None:
    if is_initialized():
        dist.destroy_process_group()


def check_consistent(module: torch.nn.Module, ignore_suffix: str = "_avg") -> bool:
    """True when every rank holds the same parameters and buffers (compares a float64 checksum
    of each tensor via MIN/MAX all_reduce); always True on one process. Buffers whose name ends
    in ``ignore_suffix`` (running averages of each rank's own batches, e.g. ``w_avg``) are skipped."""
    if not is_initialized():
        return True
    tensors = list(module.parameters()) + [b for n, b in module.named_buffers() if not n.endswith(ignore_suffix)]
    if not tensors:
        return True
    sums = torch.stack([t.detach().double().sum() + t.detach().double().square().sum() for t in tensors])
    if dist.get_backend() == "nccl":
        sums = sums.to(torch.device("cuda", torch.cuda.current_device()))
    lo, hi = sums.clone(), sums.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return bool(torch.equal(lo, hi))
