"""Training on several GPUs (or CPU processes) with PyTorch DistributedDataParallel, launched by torchrun.

``torchrun --nproc-per-node N -m edgead.cli train ...`` (or ``edgead train --nproc N``, which runs that)
starts N processes. Each draws its own 1/N of every batch with its own seed, DistributedDataParallel
averages the gradients, so the run sees as many samples per step as a one-process run with the same
``train.batch_size``. Process 0 alone writes checkpoints, logs and progress; the others wait for its
files at the end of every loop. Without torchrun nothing here does anything.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..core.errors import ConfigError


def enabled() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if enabled() else 0


def world_size() -> int:
    return dist.get_world_size() if enabled() else 1


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """Started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str) -> bool:
    """Join the process group that torchrun describes in the environment; False when there is none."""
    if not launched() or dist.is_initialized():
        return False
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return True


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def local_batch(batch: int, what: str = "train.batch_size") -> int:
    """This process's part of a batch."""
    n = world_size()
    if batch % n or batch // n < 1:
        raise ConfigError(f"{what} {batch} must be a multiple of the {n} training processes")
    return batch // n


class _Losses(nn.Module):
    """A step's loss computation as one module, so that DDP sees every parameter it trains in one forward."""

    def __init__(self, compute: Callable[..., dict[str, torch.Tensor]], modules: tuple[nn.Module, ...]):
        super().__init__()
        self.parts = nn.ModuleList(modules)
        self.compute = compute

    def forward(self, *args, **kwargs):
        return self.compute(*args, **kwargs)


def data_parallel(compute: Callable[..., dict[str, torch.Tensor]], *modules: nn.Module, unused: bool = False):
    """``compute(...) -> losses`` whose backward averages the gradients of ``modules`` over the processes
    (one process: ``compute`` itself). ``unused``: some trained parameters get no gradient (layers of a
    backbone past the features used)."""
    if not enabled():
        return compute
    device = next(p.device for m in modules for p in m.parameters())
    return DistributedDataParallel(
        _Losses(compute, modules),
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=unused,
    )


def _reduced(value: int, op) -> int:
    """``value`` reduced over every process with ``op`` (NCCL reduces on the GPU, gloo on the CPU)."""
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=op)
    return int(t.item())


def any_process(flag: bool) -> bool:
    """True on every process when it is true on one (a time limit must stop them all at the same step)."""
    return bool(_reduced(int(flag), dist.ReduceOp.MAX)) if enabled() else flag


def fewest(value: int) -> int:
    """The smallest of every process's ``value`` (a plan made from each process's own clock must agree)."""
    return _reduced(value, dist.ReduceOp.MIN) if enabled() else value


def barrier() -> None:
    if enabled():
        dist.barrier()
