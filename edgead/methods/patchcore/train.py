"""PatchCore (Roth et al. 2022) on EfficientNet-Lite0 features: the patch descriptor and the memory bank fit.

Patch descriptor: backbone features at the chosen scales, upsampled to the finest chosen stride,
concatenated and averaged over a 3x3 neighbourhood (local aggregation; ``training.backbone.
aggregate_patches``). The memory bank is the greedy k-center coreset of 10% of all training patches
(PatchCore's and anomalib's setting); at run time the anomaly map is the distance of each patch to
its nearest bank entry (edgead.core.knn), blurred, image score = max.
The same bank and scorer give D3AD its kNN prior.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from ...core.config import ExperimentConfig
from ...core.preprocess import Preprocess
from ...data.datasets import load_dataset
from ...training.backbone import (
    FEATURE_CHANNELS,
    FEATURE_STRIDES,
    aggregate_patches,
    load_backbone,
)
from ...training.budget import now
from ...training.checkpoint import check_run_dir, save_checkpoint, save_tensors
from ...training.data import load_images
from ...training.patch_bank import bank_image_names, extract, fit_memory_bank

log = logging.getLogger(__name__)
BANK_FILE, BANK_SOURCE, BANK_IMAGES = "memory_bank.safetensors", "memory_bank_source", "memory_bank_images.json"
"""The run's memory bank, each row's training image in it, and the images' names (export's cross-fit reads them)."""


class PatchFeatures(nn.Module):
    """Images in [-1, 1] -> patch descriptors [B, C, H/s, W/s] (s = finest chosen stride)."""

    def __init__(
        self, backbone: nn.Module, layers: tuple[int, ...], neighbourhood: int = 3, aggregation: str = "upsample_first"
    ):
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


def build_patch_features(config: ExperimentConfig) -> PatchFeatures:
    p = config.patchcore
    return PatchFeatures(load_backbone(config.backbone.weights), p.layers, p.neighbourhood, p.aggregation).eval()


def train(config: ExperimentConfig, run_dir: Path, resume: bool = False, progress: bool = True) -> dict:
    """Fit the memory bank (no optimisation, so nothing to resume)."""
    run = Path(run_dir)
    check_run_dir(run, resume=False, resumable=False)  # nothing to resume: no optimisation
    t0 = now()
    ds = load_dataset(config.data.path, config.data.validation_fraction, config.data.split_seed)
    model = build_patch_features(config)
    spec = Preprocess.for_size(config.data.image_size)
    images = load_images([s.path for s in ds.train], spec)
    feats = extract(model, images, spec)  # [N, C, h, w]
    bank, sources = fit_memory_bank(feats, config.patchcore.coreset_fraction, config.train.seed, progress)
    seconds = now() - t0
    save_checkpoint(
        run,
        config,
        None,
        {},
        extra={"dataset": ds.provenance(), "train_seconds": round(seconds, 1), "steps_done": 0},
    )
    # which training image each row came from: export leaves each image out of the bank in turn to score it as
    # unseen (cross-fitted calibration), the paths in the same order as the images
    save_tensors(run / BANK_FILE, {"memory_bank": bank, BANK_SOURCE: sources})
    (run / BANK_IMAGES).write_text(json.dumps(bank_image_names([ds])))
    patches = feats.shape[0] * feats.shape[2] * feats.shape[3]
    log.info("memory bank %s from %d patches in %.1f s", tuple(bank.shape), patches, seconds)
    return {"memory_bank": list(bank.shape), "patches": int(patches), "seconds": round(seconds, 1)}
