"""D3AD training in four stages, each resumable and runnable alone (``--stage``):

    autoencoder   KL autoencoder from scratch on the good images (shared with DiAD)
    denoiser      latent UNet, eps-MSE, linear beta 0.0015 -> 0.0195
    adapt         domain-adapted copy of the EfficientNet-Lite0 features (skipped with d3ad.adapt=false)
    prior         kNN memory of pooled features and the histogram of training distances
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ...config import ExperimentConfig, or_default
from ...data.datasets import load_dataset
from ...data.preprocess import Preprocess
from ...errors import EdgeadError
from ...schedulers.guided_ddim import GuidedDDIMScheduler
from ..backbone import load_backbone
from ..checkpoint import CONFIG_FILE, load_weights
from ..data import DeviceImages, load_images, pick_device
from ..latent.autoencoder import LatentDecoder, LatentEncoder, posterior_moments, train_autoencoder
from ..latent.denoiser import train_latent_denoiser
from ..latent.networks import build_autoencoder, build_latent_unet, resolve_latent_network, training_defaults
from ..staged import StagedRun
from .adapt import adapt_backbone
from .prior import fit_prior

log = logging.getLogger(__name__)
STAGES = ("autoencoder", "denoiser", "adapt", "prior")
PRIOR_FILE = "prior.safetensors"


def sampler(config: ExperimentConfig) -> GuidedDDIMScheduler:
    d = config.d3ad
    s = d.schedule
    return GuidedDDIMScheduler.from_schedule(s.num_train_timesteps, s.beta_start, s.beta_end, s.beta_schedule,
                                             d.guidance_w, d.num_steps)


def train(config: ExperimentConfig, run_dir: Path, resume: bool = False, progress: bool = True,
          stage: str = "all") -> dict:
    if stage not in ("all", *STAGES):
        raise EdgeadError(f"--stage must be one of all, {', '.join(STAGES)}; got {stage!r}")
    run_dir = Path(run_dir)
    if stage == "all" and (run_dir / CONFIG_FILE).is_file() and not resume:
        raise EdgeadError(f"{run_dir} already holds a training run; pass --resume to continue it "
                          "or choose another --out (nothing was overwritten)")
    d, tc = config.d3ad, config.train
    torch.manual_seed(tc.seed)
    device = pick_device(tc.device)
    size = config.data.image_size
    spec = Preprocess.for_size(size)
    net = resolve_latent_network(config.model, size)
    defaults = training_defaults(config.model.preset)
    run = StagedRun(run_dir, config, resume, STAGES)
    todo = STAGES if stage == "all" else (stage,)
    dataset = load_dataset(config.data.path, config.data.validation_fraction, config.data.split_seed)
    data = DeviceImages(load_images([s.path for s in dataset.train], spec), device)
    run.record("dataset", dataset.provenance())
    summary: dict = {}

    def done(name: str) -> bool:
        if name in todo and run.complete(name):
            log.warning("stage %s is already complete in %s", name, run_dir)
        return run.complete(name)

    # 1. autoencoder
    ae_settings = _autoencoder_settings(d.autoencoder, defaults)
    if "autoencoder" in todo and not done("autoencoder"):
        train_autoencoder(run, net, data, spec, ae_settings, device, progress, config.backbone.weights)
    if not any(s in todo for s in STAGES[1:]):
        return _summary(run)
    run.require("denoiser", "autoencoder")
    ae = load_weights(run_dir, "autoencoder", build_autoencoder(net, size)).to(device).eval()
    scale = float(run.progress["autoencoder"]["latent_scale"])
    encoder, decoder = LatentEncoder(ae, scale), LatentDecoder(ae, scale)
    # 2. latent denoiser
    unet = build_latent_unet(net, size)
    if "denoiser" in todo and not done("denoiser"):
        means, stds = posterior_moments(ae, data, spec)
        train_latent_denoiser(run, unet, means, stds, scale, d.schedule,
                              or_default(tc.steps, defaults["denoiser_steps"]),
                              or_default(tc.batch_size, defaults["denoiser_batch"]),
                              or_default(tc.learning_rate, defaults["denoiser_lr"]), progress)
    # 3. domain adaptation
    backbone = load_backbone(config.backbone.weights).to(device)
    if d.adapt and any(s in todo for s in STAGES[2:]):
        run.require("adapt", "autoencoder", "denoiser")
        if "adapt" in todo and not done("adapt"):
            load_weights(run_dir, "denoiser", unet)
            adapt_backbone(run, backbone, encoder, unet.to(device).eval(), decoder, sampler(config), data, spec, d,
                           or_default(tc.batch_size, defaults["adapt_batch"]), progress)
        if run.complete("adapt"):
            load_weights(run_dir, "feature_extractor", backbone)
    # 4. kNN prior
    if "prior" in todo and not done("prior"):
        run.require("prior", "autoencoder", "denoiser", *(["adapt"] if d.adapt else []))
        bank, edges, distances = fit_prior(backbone, data, spec, d.knn_k, d.bins, d.prior_pool)
        save_file({"memory_bank": torch.from_numpy(bank), "bin_edges": torch.from_numpy(edges),
                   "train_distances": torch.from_numpy(distances)}, str(run_dir / PRIOR_FILE))
        run.save("prior", {}, 1, 0.0, 1, extra={"memory_bank": list(bank.shape),
                                                "bin_counts": np.histogram(distances, edges)[0].tolist()})
    return _summary(run)


def _autoencoder_settings(cfg, defaults: dict):
    from dataclasses import replace

    return replace(cfg, steps=or_default(cfg.steps, defaults["autoencoder_steps"]),
                   batch_size=or_default(cfg.batch_size, defaults["autoencoder_batch"]),
                   crop=or_default(cfg.crop, defaults["autoencoder_crop"]))


def _summary(run: StagedRun) -> dict:
    return {"stages": {k: {kk: v[kk] for kk in ("steps_done", "steps", "complete", "seconds") if kk in v}
                       for k, v in run.progress.items()}}


def load_prior(run_dir: Path) -> dict[str, np.ndarray]:
    f = Path(run_dir) / PRIOR_FILE
    if not f.is_file():
        raise EdgeadError(f"{run_dir} has no kNN prior; train it with: edgead train --out {run_dir} --stage prior")
    return {k: v.numpy() for k, v in load_file(str(f)).items()}
