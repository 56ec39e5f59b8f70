"""Stage ``patches`` of the latent methods: the memory bank of the training images' patch descriptors.

The runtime's patch kNN map (edgead/runtime/fusion.py) measures how far each patch of a frame lies
from its nearest neighbour in this bank; it is fitted like the baseline's (greedy k-center coreset,
edgead.training.patchcore) from the patch output of the method's own feature_extractor stage.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ...core.errors import EdgeadError
from ...core.preprocess import Preprocess
from ..backbone import FeatureStages
from ..budget import budget_deadline
from ..checkpoint import save_tensors
from ..patchcore import extract, fit_memory_bank

PATCH_BANK_FILE = "patch_bank.safetensors"


def fit_patch_bank(features: FeatureStages, images: np.ndarray, spec: Preprocess, fraction: float, seed: int = 0,
                   device: torch.device | None = None, progress: bool = False,
                   deadline: float | None = None) -> torch.Tensor:
    """uint8 [N, H, W, 3] training images -> the coreset of their patch descriptors [M, C]."""
    if not features.patches:
        raise ValueError("the feature stages compute no patch descriptors")
    patches = extract(lambda x: features(x)[-1], images, spec, device=device)
    return fit_memory_bank(patches, fraction, seed, progress, deadline, device)


def train_patch_bank(run, features: FeatureStages, images: torch.Tensor, spec: Preprocess, fraction: float,
                     progress: bool, record: dict | None = None) -> torch.Tensor:
    """Fit the bank on the run's training images (uint8 [N, 3, H, W] on the device) and record the stage."""
    t0 = time.perf_counter()
    device = images.device
    bank = fit_patch_bank(features.to(device), images.permute(0, 2, 3, 1).cpu().numpy(), spec, fraction,
                          run.config.train.seed, device, progress, deadline=budget_deadline())
    save_tensors(run.run_dir / PATCH_BANK_FILE, {"patch_bank": bank})
    run.save("patches", {}, 1, time.perf_counter() - t0, 1, extra={"patch_bank": list(bank.shape), **(record or {})})
    return bank


def load_patch_bank(run_dir: Path) -> np.ndarray:
    f = Path(run_dir) / PATCH_BANK_FILE
    if not f.is_file():
        raise EdgeadError(f"{run_dir} has no patch memory bank; fit it with: edgead train --out {run_dir} "
                          "--stage patches")
    return load_file(str(f))["patch_bank"].numpy().astype(np.float32)
