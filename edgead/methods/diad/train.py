"""DiAD training in five stages, each resumable and runnable alone (``--stage``):

    autoencoder   KL autoencoder from scratch on the good images of every product (shared with D3AD)
    denoiser      stage A: the latent UNet, eps-MSE, scaled-linear beta 0.00085 -> 0.012
    guidance      stage B: the Semantic-Guided network and the UNet's decoder (encoder, middle block and
                  time embedding frozen), eps-MSE with C(x0) from the clean image; snapshots kept
    patches       memory bank of patch descriptors for the kNN map fused with the reconstruction map
                  (before the selection: under a budget the selection can shrink, a cut bank cannot)
    select        the snapshot and start step with the best AUROC on synthetic anomalies made from the
                  held-out good images (never test images)

One model serves several products: ``--data`` once per product; their training images are pooled and
each product keeps its held-out images for calibration.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from ...core.config import ExperimentConfig, or_default
from ...core.contracts import latent_noise, latent_size
from ...core.errors import EdgeadError
from ...core.preprocess import Preprocess
from ...training import distributed, precision
from ...training.backbone import PATCH_LAYERS, FeatureStages, load_backbone
from ...training.budget import budget_deadline, now
from ...training.checkpoint import load_weights, restore_progress
from ...training.data import DeviceImages, from_unit, load_images
from ...training.latent.autoencoder import LatentDecoder, LatentEncoder, posterior_moments
from ...training.latent.networks import (
    LatentNetworkConfig,
    build_latent_unet,
    run_network,
)
from ...training.latent.run import open_latent_run
from ...training.loop import run_loop, step_seeding
from ...training.patch_bank import bank_image_names, train_patch_bank
from ...training.selection import MIN_SELECTION_IMAGES, synthetic_set
from ...training.staged import StagedRun
from . import SPEC, sampler
from .networks import GuidedDenoiser, HintEncoder, SemanticGuidedNetwork, freeze_encoder
from .select import best, score_candidates

log = logging.getLogger(__name__)
STAGES = SPEC.train_stages
MAP_STAGES = (0, 1, 2)  # EfficientNet-Lite0 at strides 4, 8, 16 (the paper: ResNet50 stages 1-3)


def fixed_noise(config: ExperimentConfig) -> torch.Tensor:
    """The start noise, seeded: the same as the bundle's extra (export writes the same array)."""
    return torch.from_numpy(latent_noise(config.data.image_size, config.diad.noise_seed))


def train(
    config: ExperimentConfig, run_dir: Path, resume: bool = False, progress: bool = True, stage: str = "all"
) -> dict:
    d = config.diad
    lr = open_latent_run(config, run_dir, resume, stage, STAGES, foreground=config.data.foreground)
    run = lr.run
    codec = lr.autoencoder(d.autoencoder, progress)
    if codec is None or not lr.wants(*STAGES[1:]):
        return _summary(lr)
    ae, scale, _, _ = codec
    if lr.wants("denoiser", "guidance"):  # selection loads its snapshots itself; the patch bank needs no UNet
        unet = lr.denoiser(ae, scale, d.schedule, progress)
    if d.sg and lr.pending("guidance"):
        run.require("guidance", "autoencoder", "denoiser")
        _train_guidance(
            run,
            unet,
            ae,
            scale,
            lr.data,
            lr.spec,
            or_default(d.guidance_steps, lr.steps("guidance_steps")),
            lr.batch("denoiser_batch"),
            or_default(d.guidance_learning_rate, lr.learning_rate()),
            progress,
        )
    if lr.pending("patches"):
        train_patch_bank(
            run,
            map_features(config, patches=True),
            lr.data.images,
            lr.spec,
            d.knn.coreset_fraction,
            progress,
            names=bank_image_names(lr.datasets),
        )
    if lr.pending("select"):
        run.require("select", "autoencoder", "denoiser", *(["guidance"] if d.sg else []))
        _select(run, ae, scale, lr.datasets, lr.spec)
    return _summary(lr)


def map_features(config: ExperimentConfig, patches: bool = False) -> FeatureStages:
    """The frozen ImageNet features of the map (strides 4, 8, 16), with the patch descriptors if asked."""
    return FeatureStages(
        load_backbone(config.backbone.weights), MAP_STAGES, PATCH_LAYERS if patches else (), config.diad.knn.aggregation
    )


def _train_guidance(
    run: StagedRun,
    unet,
    ae,
    scale: float,
    data: DeviceImages,
    spec: Preprocess,
    steps: int,
    batch: int,
    lr: float,
    progress: bool,
) -> None:
    """Stage B: SG network + UNet decoder, eps-MSE; ``snapshots`` evenly spaced checkpoints kept."""
    tc, d = run.config.train, run.config.diad
    device = data.images.device
    sg = SemanticGuidedNetwork(unet, d.sff).to(device)
    guided = GuidedDenoiser(unet, sg)
    params = list(sg.parameters()) + freeze_encoder(unet)
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    state = run.start("guidance")
    step, elapsed = restore_progress(run.run_dir, state, {"sg": sg, "denoiser_guided": unet}, optimiser)
    means, stds = posterior_moments(ae, data, spec)
    from ...core.schedulers import alphas_cumprod

    s = d.schedule
    ab = torch.tensor(
        alphas_cumprod(s.num_train_timesteps, s.beta_start, s.beta_end, s.beta_schedule),
        dtype=torch.float32,
        device=device,
    )
    gen, reseed = step_seeding(device, tc.seed, 4, step)
    batch = distributed.local_batch(batch, "the guidance stage's batch size")
    layout = precision.memory_format(tc, device)
    sg.to(memory_format=layout)
    unet.to(memory_format=layout)

    def losses(z_t: torch.Tensor, t: torch.Tensor, x: torch.Tensor, noise: torch.Tensor) -> dict[str, torch.Tensor]:
        with precision.autocast(tc, device):
            eps = guided(z_t.contiguous(memory_format=layout), t.float(), sg.hint(x.contiguous(memory_format=layout)))
        return {"eps_mse": ((eps.float() - noise) ** 2).mean()}

    forward = distributed.data_parallel(losses, sg, unet)

    def snapshot(at: int, total: int) -> bool:
        """``d.snapshots`` evenly spaced over the stage's final steps (a filled budget plans them in the loop)."""
        return at == total or any(at == round(total * (k + 1) / d.snapshots) for k in range(d.snapshots))

    sg.train()
    unet.train()

    def step_fn():
        reseed()
        idx = data.indices(batch, gen)
        flip = torch.rand(batch, 1, 1, 1, generator=gen, device=device) < 0.5
        x = from_unit(data.images[idx].float() / 255.0, spec)
        x = torch.where(flip, x.flip(-1), x)
        z0 = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=gen, device=device)) * scale
        z0 = torch.where(flip, z0.flip(-1), z0)
        t = torch.randint(0, s.num_train_timesteps, (batch,), generator=gen, device=device)
        noise = torch.randn(z0.shape, generator=gen, device=device)
        a = ab[t].view(-1, 1, 1, 1)
        loss = forward(a.sqrt() * z0 + (1 - a).sqrt() * noise, t, x, noise)["eps_mse"]
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return {"eps_mse": loss.detach()}

    def save_fn(at: int, seconds: float, total: int) -> None:
        run.save("guidance", {"sg": sg, "denoiser_guided": unet}, at, seconds, total, optimiser, planned=steps)
        # a snapshot the select stage compares (the last one too: a budget may end the stage early)
        if snapshot(at, total) and distributed.is_main():
            for name in ("sg", "denoiser_guided"):
                shutil.copy(run.run_dir / f"{name}.safetensors", run.run_dir / f"snapshot{at}_{name}.safetensors")

    run_loop(
        "train guidance",
        step_fn,
        save_fn,
        step,
        steps,
        elapsed,
        run.run_dir / "train_log.jsonl",
        checkpoint_every=tc.checkpoint_every,
        log_every=tc.log_every,
        progress=progress,
        stage="guidance",
        save_when=snapshot,
    )


def load_guided(
    run_dir: Path, config: ExperimentConfig, net: LatentNetworkConfig, prefix: str = ""
) -> tuple[GuidedDenoiser, HintEncoder]:
    unet = build_latent_unet(net, config.data.image_size)
    if not config.diad.sg:
        load_weights(run_dir, "denoiser", unet)
        return GuidedDenoiser(unet.eval(), None), None
    sg = SemanticGuidedNetwork(unet, config.diad.sff)
    load_weights(run_dir, f"{prefix}denoiser_guided", unet)
    load_weights(run_dir, f"{prefix}sg", sg)
    return GuidedDenoiser(unet.eval(), sg.eval()), HintEncoder(sg.eval())


def _select(run: StagedRun, ae, scale: float, sets, spec: Preprocess) -> None:
    config, d = run.config, run.config.diad
    started = now()
    held_out = [s.path for ds in sets for s in ds.validation]
    if not held_out:
        raise EdgeadError("DiAD's selection needs held-out good images (validation/good or data.validation_fraction)")
    if len(held_out) < MIN_SELECTION_IMAGES:
        n = len(held_out)
        log.warning(
            "DiAD's selection has only %d held-out good images (%d or more recommended): it ranks the "
            "candidates on %d good/synthetic pairs, so the snapshot and start step it keeps are close to a "
            "guess; put more anomaly-free images in validation/good",
            n,
            MIN_SELECTION_IMAGES,
            n * n,
        )
    device = next(ae.parameters()).device  # the training device: on a GPU this stage takes seconds, not minutes
    data = DeviceImages(load_images(held_out, spec), torch.device("cpu"), config.data.foreground)
    x, labels = synthetic_set(data, spec)
    encoder, decoder = LatentEncoder(ae, scale), LatentDecoder(ae, scale)
    features = map_features(config).to(device)
    net = run_network(run.meta, config)
    if d.sg:
        steps = sorted(
            int(p.name.split("_")[0][len("snapshot") :]) for p in run.run_dir.glob("snapshot*_sg.safetensors")
        )
        loaded = {s: load_guided(run.run_dir, config, net, f"snapshot{s}_") for s in steps}
    else:
        loaded = {0: load_guided(run.run_dir, config, net)}
    candidates = {s: g.to(device) for s, (g, _) in loaded.items()}
    hints = {s: (h if h is not None else _zero_hint(net)).to(device) for s, (_, h) in loaded.items()}
    starts = [d.start_step] if d.start_step is not None else list(d.start_candidates)
    rows = score_candidates(
        candidates,
        starts,
        x.to(device),
        labels,
        encoder,
        hints,
        decoder,
        features,
        sampler(config.diad),
        fixed_noise(config).to(device),
        d.smoothing_sigma,
        d.pool,
        deadline=budget_deadline(),
    )
    unscored = {"snapshot": max(candidates), "start_step": starts[0]}  # when the budget left time for none
    if len(rows) < len(candidates) * len(starts):
        log.warning(
            "DiAD's selection: the time budget left time to score %d of its %d candidates (the latest "
            "snapshot first)%s; a larger --max-minutes scores them all",
            len(rows),
            len(candidates) * len(starts),
            "" if rows else ", so it keeps snapshot {snapshot} and start step {start_step} unscored".format(**unscored),
        )
    chosen = best(rows) if rows else unscored
    if d.sg and distributed.is_main():
        for name in ("sg", "denoiser_guided"):
            shutil.copy(
                run.run_dir / f"snapshot{chosen['snapshot']}_{name}.safetensors", run.run_dir / f"{name}.safetensors"
            )
    log.info("DiAD selection on %d held-out good images and their synthetic anomalies: %s", len(held_out), rows)
    run.save(
        "select",
        {},
        1,
        now() - started,
        1,
        extra={"start_step": chosen["start_step"], "snapshot": chosen["snapshot"], "candidates": rows},
    )


def _zero_hint(net: LatentNetworkConfig):
    """The plain UNet ignores the hint: a module returning a zero tensor of the hint's shape."""
    widths = net.block_out_channels

    class Zero(torch.nn.Module):
        def forward(self, image):
            return image.new_zeros(image.shape[0], widths[0], latent_size(image.shape[2]), latent_size(image.shape[3]))

    return Zero()


def _summary(lr) -> dict:
    out = lr.summary()
    if "select" in lr.run.progress:
        out["selected"] = {k: lr.run.progress["select"][k] for k in ("start_step", "snapshot")}
    return out
