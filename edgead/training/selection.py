"""Choosing among a model's snapshots without test images: held-out good images and one synthetic
anomaly made from each (the training synthesis), scored as the runtime scores them. DiAD picks its
stage-B snapshot and start step with it, DiffusionAD its snapshot (``diffusionad.select_every``)."""

from __future__ import annotations

import numpy as np
import torch

from ..core.preprocess import Preprocess
from .data import DeviceImages, from_unit
from .synthesis import AnomalySynthesizer

MIN_SELECTION_IMAGES = 10
"""Below this many held-out good images the synthetic AUROC that picks a snapshot is too coarse to trust."""


def synthetic_set(data: DeviceImages, spec: Preprocess, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """The held-out good images plus one synthetic anomaly made from each, in the model's input space; labels 0/1."""
    g = torch.Generator().manual_seed(seed)  # the images are on the CPU
    good = data.images.float() / 255.0
    bad, _ = AnomalySynthesizer(spec.image_size[0])(good, g, data.foreground)
    x = from_unit(torch.cat([good, bad]), spec)
    return x, np.r_[np.zeros(len(good)), np.ones(len(bad))]
