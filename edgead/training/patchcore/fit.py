"""PatchCore-style baseline (Roth et al. 2022) on EfficientNet-Lite0 features.

Patch descriptor: backbone features at the chosen scales, upsampled to the finest chosen stride,
concatenated and averaged over a 3x3 neighbourhood (local aggregation; ``training.backbone.
aggregate_patches``). The memory bank is the greedy k-center coreset of 10% of all training patches
(PatchCore's and anomalib's setting); at run time the anomaly map is the distance of each patch to
its nearest bank entry (edgead.core.knn), blurred, image score = max.
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

    def __init__(self, backbone: nn.Module, layers: tuple[int, ...], neighbourhood: int = 3,
                 aggregation: str = "upsample_first"):
        super().__init__()
        self.backbone, self.layers, self.k = backbone, tuple(sorted(layers)), neighbourhood
        self.aggregation = aggregation

    @property
    def stride(self) -> int:
        return FEATURE_STRIDES[self.layers[0]]

    @property
    def channels(self) -> int:
        return sum(FEATURE_CHANNELS[i] for i in self.layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(image)
        return aggregate_patches([feats[i] for i in self.layers], self.k, self.aggregation)


def greedy_coreset(x: torch.Tensor, n: int, seed: int = 0, projection_dim: int = 128, progress: bool = False,
                   deadline: float | None = None, batch: int = 128, pool: int = 8) -> torch.Tensor:
    """Indices of the greedy k-center coreset (PatchCore §3.2) on a random projection, computed on ``x``'s device.

    Exactly the greedy selection (each centre the point farthest from those chosen so far), in rounds that
    cost one matrix product each instead of one pass over every patch per centre: a round takes the
    ``batch * pool`` farthest points as candidates and picks centres among them greedily, updating only the
    candidates' distances, for as long as the farthest candidate is still farther than every point outside
    the pool (distances only shrink, so the greedy choice is then among the candidates); all distances are
    then updated at once with the round's centres. ``deadline`` (``time.perf_counter()`` seconds): the
    centres chosen by then (the ones that cover most) and a random sample of the other patches for the rest,
    so the bank always holds ``n`` patches (a bank cut to a handful would make the kNN map meaningless)."""
    from tqdm.auto import tqdm

    total = x.shape[0]
    if n >= total:
        return torch.arange(total)
    g = torch.Generator().manual_seed(seed)
    if x.shape[1] > projection_dim:
        proj = torch.randn(x.shape[1], projection_dim, generator=g) / projection_dim**0.5
        x = x @ proj.to(x.device)
    sq = (x * x).sum(1)
    chosen = [int(torch.randint(total, (1,), generator=g))]
    dist = (sq - 2 * x @ x[chosen[0]] + sq[chosen[0]]).clamp_min_(0)
    bar = tqdm(total=n, initial=1, disable=not progress, desc="coreset", unit="patch")
    while len(chosen) < n:
        if deadline is not None and time.perf_counter() > deadline:
            bar.close()
            log.warning("the time budget ended the greedy coreset at %d of %d patches; the other %d are a random "
                        "sample (a run with a larger --max-minutes chooses them all)", len(chosen), n, n - len(chosen))
            rest = torch.ones(total, dtype=torch.bool)
            rest[chosen] = False
            others = torch.nonzero(rest).flatten()
            return torch.cat([torch.tensor(chosen), others[torch.randperm(len(others), generator=g)[:n - len(chosen)]]])
        size = min(total, batch * pool + 1)
        top = torch.topk(dist, size)
        if size == total:  # every point is a candidate
            candidates, far, beyond = top.indices, top.values.clone(), -1.0
        else:
            candidates, far, beyond = top.indices[:-1], top.values[:-1].clone(), float(top.values[-1])
        cx, csq = x[candidates], sq[candidates]
        picked: list[int] = []
        while len(picked) < batch and len(chosen) + len(picked) < n:
            j = int(torch.argmax(far))
            if float(far[j]) <= beyond:  # a point outside the pool may be as far now: next round
                break
            picked.append(j)
            far = torch.minimum(far, (csq - 2 * cx @ cx[j] + csq[j]).clamp_min_(0))
        new = candidates[torch.tensor(picked)] if picked else torch.argmax(dist)[None]
        chosen += new.tolist()
        centres = x[new]
        dist = torch.minimum(dist, (sq[:, None] - 2 * x @ centres.T + sq[new][None]).min(1).values.clamp_min_(0))
        bar.update(len(new))
    bar.close()
    return torch.tensor(chosen[:n])


def build_patch_features(config: ExperimentConfig) -> PatchFeatures:
    p = config.patchcore
    return PatchFeatures(load_backbone(config.backbone.weights), p.layers, p.neighbourhood, p.aggregation).eval()


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
