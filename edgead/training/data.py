"""Training images: read and pre-processed exactly as the runtime does, then kept on the device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..core.errors import ConfigError
from ..core.preprocess import UNIT, Preprocess, normalise, resize
from ..data.io import read_image
from .synthesis import foreground_mask


def load_images(paths: list[Path], spec: Preprocess) -> np.ndarray:
    """uint8 RGB [N, H, W, 3] at the model size, resized as the runtime resizes."""
    return np.stack([resize(read_image(p), spec) for p in paths])


def to_model_input(images_u8: torch.Tensor, spec: Preprocess) -> torch.Tensor:
    """uint8 [B, 3, H, W] (any device) -> the graphs' input space, as ``preprocess.to_input``."""
    return normalise(images_u8.float() * float(UNIT), spec, channel_axis=1)


def from_unit(x01: torch.Tensor, spec: Preprocess) -> torch.Tensor:
    """float [B, 3, H, W] in [0, 1] -> the graphs' input space."""
    return normalise(x01, spec, channel_axis=1)


def numpy_batch(images: np.ndarray, spec: Preprocess) -> torch.Tensor:
    """uint8 [B, H, W, 3] numpy -> model input on the CPU."""
    return to_model_input(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2), spec)


class DeviceImages:
    """Training images (uint8) and their object foregrounds, resident on the training device.

    Batches are drawn and anomalies synthesised on the device itself: no loader workers, no
    host-to-device copies per step. ``products`` (image counts of consecutive products) makes every
    product equally likely in a batch, however many images each has.
    """

    def __init__(
        self, images: np.ndarray, device: torch.device, foreground: bool = False, products: list[int] | None = None
    ):
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
        self._counts = self._starts = None
        if products is not None:
            if sum(products) != len(images) or min(products) < 1:
                raise ValueError(f"product counts {products} do not split {len(images)} images")
            self._counts = torch.tensor(products, device=device)
            self._starts = torch.cumsum(self._counts, 0) - self._counts
        self.foreground = None
        if foreground:
            fg = np.stack([foreground_mask(im) for im in images])[:, None]
            self.foreground = torch.from_numpy(fg).to(device=device, dtype=torch.uint8)

    def __len__(self) -> int:
        return self.images.shape[0]

    def indices(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` random image indices: uniform over images, or over products first when they are given."""
        device = self.images.device
        if self._counts is None:
            return torch.randint(0, len(self), (n,), generator=generator, device=device)
        p = torch.randint(0, len(self._counts), (n,), generator=generator, device=device)
        within = (torch.rand(n, generator=generator, device=device) * self._counts[p]).long()
        return self._starts[p] + torch.minimum(within, self._counts[p] - 1)

    def draw(
        self, n: int, generator: torch.Generator, among: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``n`` random images as float [n, 3, H, W] in [0, 1], with their foregrounds; ``among``: only these
        (indices on the images' device)."""
        if among is None:
            idx = self.indices(n, generator)
        else:
            idx = among[torch.randint(0, len(among), (n,), generator=generator, device=self.images.device)]
        fg = self.foreground[idx] if self.foreground is not None else None
        return self.images[idx].float() * float(UNIT), fg


def pick_device(name: str) -> torch.device:
    """cuda means this process's GPU: the current one (torchrun gives each training process its own)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA GPU is visible to PyTorch")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
