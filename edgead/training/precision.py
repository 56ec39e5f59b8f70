"""The speed options of ``train`` (bf16 autocast, channels-last), with one meaning for every method.

Both are CUDA-only: on the CPU bf16 autocast is slower than fp32 for these convolutions and
channels-last changes nothing, so they are ignored there (the run stays bitwise what it was).
"""

from __future__ import annotations

import torch

from ..core.config import TrainConfig


def bf16(tc: TrainConfig, device: torch.device) -> bool:
    """``train.mixed_precision`` on a CUDA device."""
    return bool(tc.mixed_precision) and device.type == "cuda"


def autocast(tc: TrainConfig, device: torch.device) -> torch.autocast:
    """The forward passes' context: bf16 autocast when asked for on CUDA, else a no-op."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16(tc, device))


def memory_format(tc: TrainConfig, device: torch.device) -> torch.memory_format:
    """``train.channels_last`` on a CUDA device: NHWC for the convolutions (Tensor Cores prefer it)."""
    return torch.channels_last if tc.channels_last and device.type == "cuda" else torch.contiguous_format
