"""D3AD training in five stages, each resumable and runnable alone (``--stage``):

autoencoder   KL autoencoder on the good images (shared with DiAD)
denoiser      latent UNet, eps-MSE, linear beta 0.0015 -> 0.0195
adapt         domain-adapted copy of the EfficientNet-Lite0 features (skipped with d3ad.adapt=false)
prior         kNN memory of pooled features and the histogram of training distances
patches       memory bank of patch descriptors for the kNN map fused with the reconstruction map
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ...core.config import ExperimentConfig
from ...core.errors import EdgeadError
from ...core.preprocess import Preprocess
from ...data.datasets import load_dataset
from ...training.backbone import PATCH_LAYERS, FeatureStages, load_backbone
from ...training.checkpoint import load_weights, save_tensors
from ...training.data import DeviceImages, load_images
from ...training.latent.run import open_latent_run
from ...training.patch_bank import bank_image_names, fit_patch_bank, load_patch_bank, train_patch_bank
from . import SPEC, sampler
from .adapt import adapt_backbone
from .features import MAP_STAGES
from .prior import fit_prior

log = logging.getLogger(__name__)
STAGES = SPEC.train_stages
PRIOR_FILE = "prior.safetensors"
IMAGENET_PRIOR_FILE = "prior_imagenet.safetensors"
"""The prior on the frozen ImageNet features, for exports with d3ad.adapt=false (the ablation)."""


def train(
    config: ExperimentConfig, run_dir: Path, resume: bool = False, progress: bool = True, stage: str = "all"
) -> dict:
    d = config.d3ad
    lr = open_latent_run(config, run_dir, resume, stage, STAGES)
    run, data, spec = lr.run, lr.data, lr.spec
    codec = lr.autoencoder(d.autoencoder, progress)
    if codec is None or not lr.wants(*STAGES[1:]):
        return lr.summary()
    ae, scale, encoder, decoder = codec
    unet = lr.denoiser(ae, scale, d.schedule, progress)
    backbone = load_backbone(config.backbone.weights).to(lr.device)
    if d.adapt and lr.wants("adapt", "prior", "patches"):
        run.require("adapt", "autoencoder", "denoiser")
        if lr.pending("adapt"):
            adapt_backbone(
                run,
                backbone,
                encoder,
                unet,
                decoder,
                sampler(config.d3ad),
                data,
                spec,
                d,
                lr.batch("adapt_batch"),
                progress,
            )
        if run.complete("adapt"):
            load_weights(lr.run_dir, "feature_extractor", backbone)
    if lr.pending("prior"):
        run.require("prior", "autoencoder", "denoiser", *(["adapt"] if d.adapt else []))
        bank, edges, distances = fit_prior(backbone, data, spec, d.knn_k, d.bins, d.prior_pool)
        save_prior(lr.run_dir / PRIOR_FILE, bank, edges, distances)
        if d.adapt:
            save_prior(
                lr.run_dir / IMAGENET_PRIOR_FILE,
                *fit_prior(
                    load_backbone(config.backbone.weights).to(lr.device), data, spec, d.knn_k, d.bins, d.prior_pool
                ),
            )
        run.save(
            "prior",
            {},
            1,
            0.0,
            1,
            extra={"memory_bank": list(bank.shape), "bin_counts": np.histogram(distances, edges)[0].tolist()},
        )
    if lr.pending("patches"):
        run.require("patches", *(["adapt"] if d.adapt else []))
        train_patch_bank(
            run,
            FeatureStages(backbone, MAP_STAGES, PATCH_LAYERS, d.knn.aggregation),
            data.images,
            spec,
            d.knn.coreset_fraction,
            progress,
            {"adapted": d.adapt},
            names=bank_image_names(lr.datasets),
        )
    return lr.summary()


def save_prior(path: Path, bank: np.ndarray, edges: np.ndarray, distances: np.ndarray) -> None:
    save_tensors(
        path,
        {
            "memory_bank": torch.from_numpy(bank),
            "bin_edges": torch.from_numpy(edges),
            "train_distances": torch.from_numpy(distances),
        },
    )


def load_prior(run_dir: Path, adapted: bool = True) -> dict[str, np.ndarray] | None:
    """The kNN prior of the adapted features (or, ``adapted=False``, of the ImageNet ones; None if absent)."""
    f = Path(run_dir) / (PRIOR_FILE if adapted else IMAGENET_PRIOR_FILE)
    if not f.is_file():
        if adapted:
            raise EdgeadError(f"{run_dir} has no kNN prior; train it with: edgead train --out {run_dir} --stage prior")
        return None
    return {k: v.numpy() for k, v in load_file(str(f)).items()}


def _training_images(config: ExperimentConfig) -> np.ndarray:
    spec = Preprocess.for_size(config.data.image_size)
    dataset = load_dataset(config.data.path, config.data.validation_fraction, config.data.split_seed)
    return load_images([s.path for s in dataset.train], spec)


def imagenet_prior(config: ExperimentConfig) -> dict[str, np.ndarray]:
    """Fit the prior on ImageNet features now (runs whose prior stage predates prior_imagenet.safetensors)."""
    d = config.d3ad
    spec = Preprocess.for_size(config.data.image_size)
    data = DeviceImages(_training_images(config), torch.device("cpu"))
    bank, edges, distances = fit_prior(
        load_backbone(config.backbone.weights), data, spec, d.knn_k, d.bins, d.prior_pool
    )
    return {"memory_bank": bank, "bin_edges": edges, "train_distances": distances}


def patch_bank_for(run_dir: Path, config: ExperimentConfig, stages: dict, features: FeatureStages) -> np.ndarray:
    """The run's patch bank when it was fitted on the features exported now; else (an export with
    d3ad.adapt=false of a run trained with adaptation) one fitted on those features now."""
    if bool(stages["patches"].get("adapted", True)) == config.d3ad.adapt:
        return load_patch_bank(run_dir)
    spec = Preprocess.for_size(config.data.image_size)
    return fit_patch_bank(
        features, _training_images(config), spec, config.d3ad.knn.coreset_fraction, config.train.seed
    )[0].numpy()
