"""What every latent method's trainer starts with: the staged run, the training images on the device,
and the two shared stages (autoencoder, latent denoiser), trained when due and loaded otherwise."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ...core.config import ExperimentConfig, ScheduleConfig, or_default
from ...core.errors import EdgeadError
from ...core.preprocess import Preprocess
from ...data.datasets import AnomalyDataset, load_dataset
from ..checkpoint import check_run_dir, load_weights
from ..data import DeviceImages, load_images, pick_device
from ..staged import StagedRun
from .autoencoder import (
    LatentDecoder,
    LatentEncoder,
    posterior_moments,
    reconstruction_error,
    reconstruction_gap,
    train_autoencoder,
)
from .denoiser import train_latent_denoiser
from .networks import (
    LatentNetworkConfig,
    build_autoencoder,
    build_latent_unet,
    resolve_latent_network,
    training_defaults,
)

log = logging.getLogger(__name__)


@dataclass
class LatentRun:
    config: ExperimentConfig
    run: StagedRun
    todo: tuple[str, ...]
    device: torch.device
    spec: Preprocess
    net: LatentNetworkConfig
    defaults: dict
    datasets: list[AnomalyDataset]
    data: DeviceImages

    @property
    def run_dir(self) -> Path:
        return self.run.run_dir

    def pending(self, name: str) -> bool:
        """The stage is asked for and not yet complete (a complete one is skipped with a warning)."""
        if name in self.todo and self.run.complete(name):
            log.warning("stage %s is already complete in %s", name, self.run_dir)
        return name in self.todo and not self.run.complete(name)

    def wants(self, *names: str) -> bool:
        return any(n in self.todo for n in names)

    def autoencoder(self, settings, progress: bool) -> tuple[nn.Module, float, LatentEncoder, LatentDecoder] | None:
        """Trained when due; None while it is unfinished (a later stage asked for is then an error)."""
        trained_now = self.pending("autoencoder")
        if trained_now:
            settings = replace(
                settings,
                steps=or_default(settings.steps, self.defaults["autoencoder_steps"]),
                batch_size=or_default(settings.batch_size, self.defaults["autoencoder_batch"]),
                crop=or_default(settings.crop, self.defaults["autoencoder_crop"]),
            )
            train_autoencoder(
                self.run, self.net, self.data, self.spec, settings, self.device, progress, self.config.backbone.weights
            )
        if not self.run.complete("autoencoder"):
            later = [s for s in self.todo if s != "autoencoder"]
            if later:
                self.run.require(later[0], "autoencoder")
            return None
        size = self.spec.image_size[0]
        ae = (
            load_weights(self.run_dir, "autoencoder", build_autoencoder(self.net, size, self.config.backbone.weights))
            .to(self.device)
            .eval()
        )
        scale = float(self.run.progress["autoencoder"]["latent_scale"])
        encoder, decoder = LatentEncoder(ae, scale), LatentDecoder(ae, scale)
        if trained_now and len(self.datasets) > 1:
            self._check_products(encoder, decoder)
        return ae, scale, encoder, decoder

    def _check_products(self, encoder: LatentEncoder, decoder: LatentDecoder) -> None:
        """One model for several products: say so when its autoencoder cannot reproduce some of them."""
        errors = {
            ds.name: reconstruction_error(
                encoder, decoder, load_images([s.path for s in ds.validation], self.spec), self.spec
            )
            for ds in self.datasets
            if ds.validation
        }
        log.info(
            "autoencoder reconstruction error per product (held-out good images): %s",
            {k: round(v, 4) for k, v in errors.items()},
        )
        warning = reconstruction_gap(errors) if len(errors) > 1 else None
        if warning:
            log.warning(warning)

    def denoiser(self, ae: nn.Module, scale: float, schedule: ScheduleConfig, progress: bool) -> nn.Module:
        """The latent UNet, trained now if the stage is due, else loaded when it is complete."""
        unet = build_latent_unet(self.net, self.spec.image_size[0])
        if self.pending("denoiser"):
            means, stds = posterior_moments(ae, self.data, self.spec)
            train_latent_denoiser(
                self.run,
                unet,
                means,
                stds,
                scale,
                schedule,
                self.steps("denoiser_steps"),
                self.batch("denoiser_batch"),
                self.learning_rate(),
                progress,
                self.data.indices,
            )
        elif self.run.complete("denoiser"):
            load_weights(self.run_dir, "denoiser", unet)
        return unet.to(self.device).eval()

    def steps(self, key: str) -> int:
        return or_default(self.config.train.steps, self.defaults[key])

    def batch(self, key: str) -> int:
        return or_default(self.config.train.batch_size, self.defaults[key])

    def learning_rate(self) -> float:
        return or_default(self.config.train.learning_rate, self.defaults["denoiser_lr"])

    def summary(self) -> dict:
        keys = ("steps_done", "steps", "planned_steps", "complete", "seconds")
        return {"stages": {k: {kk: v[kk] for kk in keys if kk in v} for k, v in self.run.progress.items()}}


def open_latent_run(
    config: ExperimentConfig, run_dir: Path, resume: bool, stage: str, stages: tuple[str, ...], foreground: bool = False
) -> LatentRun:
    """Check the run folder, load every product's training images onto the device, record provenance."""
    if stage not in ("all", *stages):
        raise EdgeadError(f"--stage must be one of all, {', '.join(stages)}; got {stage!r}")
    run_dir = Path(run_dir)
    if stage == "all":  # a single stage may go into a run that holds the stages before it
        check_run_dir(run_dir, resume)
    torch.manual_seed(config.train.seed)
    size = config.data.image_size
    net = resolve_latent_network(config.model, size, config.method)
    # stored explicitly: a later default cannot move it
    for key in ("autoencoder_encoder", "autoencoder_colour_skip", "autoencoder_decoder_stride"):
        if getattr(config.model, key) is None:
            setattr(config.model, key, getattr(net, key))
    spec = Preprocess.for_size(size)
    sets = [load_dataset(p, config.data.validation_fraction, config.data.split_seed) for p in config.data_paths]
    device = pick_device(config.train.device)
    products = [len(ds.train) for ds in sets] if len(sets) > 1 and config.data.balance_products else None
    data = DeviceImages(load_images([s.path for ds in sets for s in ds.train], spec), device, foreground, products)
    run = StagedRun(run_dir, config, resume, stages, network=net)
    run.record("dataset", [ds.provenance() for ds in sets] if len(sets) > 1 else sets[0].provenance())
    return LatentRun(
        config,
        run,
        stages if stage == "all" else (stage,),
        device,
        spec,
        net,
        training_defaults(config.model.preset),
        sets,
        data,
    )
