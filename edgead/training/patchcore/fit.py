"""PatchCore-style baseline (Roth et al. 2022) on EfficientNet-Lite0 features.

Patch descriptor: backbone features at the chosen scales, each averaged over a 3x3 neighbourhood
(local aggregation), upsampled to the finest chosen stride and concatenated. The memory bank is
a greedy k-center coreset of all training patches; at run time the anomaly map is the distance
of each patch to its nearest bank entry (edgead.core.knn), blurred, image score = max.
The same bank and scorer give D3AD its kNN prior.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...core.config import ExperimentConfig
from ...core.preprocess import Preprocess
from ...data.datasets import load_dataset
from ..backbone import (
    FEATURE_CHANNELS,
    FEATURE_STRIDES,
    aggregate_patches,
    load_backbone,
)
from ..checkpoint import check_run_dir, save_checkpoint, save_tensors
from ..data import load_images, numpy_batch

log = logging.getLogger(__name__)


class PatchFeatures(nn.Module):
    """Images in [-1, 1] -> patch descriptors [B, C, H/s, W/s] (s = finest chosen stride)."""

    def __init__(self, backbone: nn.Module, layers: tuple[int, ...], neighbourhood: int = 3):
        super().__init__()
        self.backbone, self.layers, self.k = backbone, tuple(sorted(layers)), neighbourhood

    @property
    def stride(self) -> int:
        return FEATURE_STRIDES[self.layers[0]]

    @property
    def channels(self) -> int:
        return sum(FEATURE_CHANNELS[i] for i in self.layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(image)
        return aggregate_patches([feats[i] for i in self.layers], self.k)


def greedy_coreset(x: torch.Tensor, n: int, seed: int = 0, projection_dim: int = 128,
                   progress: bool = False, deadline: float | None = None) -> torch.Tensor:
    """Indices of an approximate k-center coreset (PatchCore §3.2) on a random projection, computed on ``x``'s
    device. ``deadline`` (``time.perf_counter()`` seconds): the centres chosen by then (the ones that cover
    most) and a random sample of the other patches for the rest, so the bank always holds ``n`` patches (a
    bank cut to a handful would make the kNN map meaningless)."""
    from tqdm.auto import tqdm

    if n >= x.shape[0]:
        return torch.arange(x.shape[0])
    g = torch.Generator().manual_seed(seed)
    if x.shape[1] > projection_dim:
        proj = torch.randn(x.shape[1], projection_dim, generator=g) / projection_dim**0.5
        x = x @ proj.to(x.device)
    sq = (x * x).sum(1)
    chosen = [int(torch.randint(x.shape[0], (1,), generator=g))]
    dist = sq - 2 * x @ x[chosen[0]] + sq[chosen[0]]
    for _ in tqdm(range(n - 1), disable=not progress, desc="coreset", unit="patch"):
        if deadline is not None and time.perf_counter() > deadline:
            log.warning("the time budget ended the greedy coreset at %d of %d patches; the other %d are a random "
                        "sample (a run with a larger --max-minutes chooses them all)", len(chosen), n, n - len(chosen))
            rest = torch.ones(x.shape[0], dtype=torch.bool)
            rest[chosen] = False
            pool = torch.nonzero(rest).flatten()
            return torch.cat([torch.tensor(chosen), pool[torch.randperm(len(pool), generator=g)[:n - len(chosen)]]])
        i = int(torch.argmax(dist))
        chosen.append(i)
        dist = torch.minimum(dist, sq - 2 * x @ x[i] + sq[i])
    return torch.tensor(chosen)


def build_patch_features(config: ExperimentConfig) -> PatchFeatures:
    p = config.patchcore
    return PatchFeatures(load_backbone(config.backbone.weights), p.layers, p.neighbourhood).eval()


@torch.no_grad()
def extract(model: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray, spec: Preprocess,
            batch: int = 8, device: torch.device | None = None) -> torch.Tensor:
    """uint8 [N, H, W, 3] images -> the model's output for each (run on ``device``), concatenated on the CPU."""
    out = [model(numpy_batch(images[i:i + batch], spec).to(device or "cpu")).cpu()
           for i in range(0, len(images), batch)]
    return torch.cat(out)


def fit_memory_bank(patches: torch.Tensor, fraction: float, seed: int = 0, progress: bool = False,
                    deadline: float | None = None, device: torch.device | None = None) -> torch.Tensor:
    """[N, C, h, w] patch descriptors -> the coreset memory bank [M, C] on the CPU (M = fraction of all patches);
    the coreset is searched on ``device`` (a GPU does it in seconds)."""
    flat = patches.permute(0, 2, 3, 1).reshape(-1, patches.shape[1])
    n = max(1, int(round(flat.shape[0] * fraction)))
    picked = greedy_coreset(flat.to(device or "cpu"), n, seed=seed, progress=progress, deadline=deadline)
    return flat[picked].contiguous()


def train(config: ExperimentConfig, run_dir: Path, resume: bool = False, progress: bool = True) -> dict:
    """Fit the memory bank (no optimisation, so nothing to resume)."""
    run = Path(run_dir)
    check_run_dir(run, resume=False, resumable=False)  # nothing to resume: no optimisation
    t0 = time.perf_counter()
    ds = load_dataset(config.data.path, config.data.validation_fraction, config.data.split_seed)
    model = build_patch_features(config)
    spec = Preprocess.for_size(config.data.image_size)
    images = load_images([s.path for s in ds.train], spec)
    feats = extract(model, images, spec)  # [N, C, h, w]
    bank = fit_memory_bank(feats, config.patchcore.coreset_fraction, config.train.seed, progress)
    seconds = time.perf_counter() - t0
    save_checkpoint(
        run, config, None, {},
        extra={"dataset": ds.provenance(), "train_seconds": round(seconds, 1), "steps_done": 0},
    )
    save_tensors(run / "memory_bank.safetensors", {"memory_bank": bank})
    patches = feats.shape[0] * feats.shape[2] * feats.shape[3]
    log.info("memory bank %s from %d patches in %.1f s", tuple(bank.shape), patches, seconds)
    return {"memory_bank": list(bank.shape), "patches": int(patches), "seconds": round(seconds, 1)}
