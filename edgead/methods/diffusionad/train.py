"""DiffusionAD training (paper §IV-C): the denoiser and the segmentation network, jointly.

Each step takes batch_size/2 normal images N and the same number of synthetic anomalies S:

    t_s ~ U[0, tau), t_b ~ U[tau, T)            one pair per sample
    L_noise = (|e_s - eps(x_ts)|^2 + |e_b - eps(x_tb)|^2) / 2   on normal samples only, eq. (9)
    x0_hat  = norm-guided one-step reconstruction (detached), eqs. (6)-(8)
    L_mask  = SmoothL1(M, M^) + 5 focal(M, M^) on all samples, eq. (10)

The reconstruction is detached before the segmentation network so that the denoiser learns
only the distribution of normal images, as the paper requires. Batches, synthetic anomalies,
timesteps and noise are all drawn on the training device (no loader workers).

For small sets (``diffusionad.augment``, ``photometric``, ``segmenter_holdout``, ``select_every``):
the images are flipped, turned and re-lit; a held-out share of them trains only the segmentation
network (its normal and anomalous samples), so that it learns what the reconstruction of a good
image the denoiser never saw looks like; and snapshots are compared on synthetic anomalies made
from the validation images, export taking the best.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...core.config import ExperimentConfig, or_default
from ...core.errors import ConfigError
from ...core.preprocess import Preprocess
from ...core.schedulers import NormGuidedOneStepScheduler, alphas_cumprod
from ...data.datasets import load_dataset
from ...training import augment, distributed, precision
from ...training.checkpoint import (
    load_weights,
    open_run,
    read_checkpoint_meta,
    restore_progress,
    save_checkpoint,
    save_tensors,
)
from ...training.data import DeviceImages, from_unit, load_images, pick_device
from ...training.loop import run_loop, step_seeding
from ...training.synthesis import AnomalySynthesizer
from .losses import mask_loss
from .networks import (
    DiffusionADNetworkConfig,
    SegmentationUNet,
    build_denoiser,
    build_segmenter,
    resolve_network,
)

log = logging.getLogger(__name__)


@dataclass
class DiffusionADModel:
    """The trained networks plus everything needed to run them (used by export and benchmarks)."""

    denoiser: torch.nn.Module
    segmenter: SegmentationUNet
    network: DiffusionADNetworkConfig
    config: ExperimentConfig

    @property
    def scheduler(self) -> NormGuidedOneStepScheduler:
        d = self.config.diffusionad
        s = d.schedule
        return NormGuidedOneStepScheduler.from_schedule(
            d.t_s, d.t_b, d.guidance_w, s.num_train_timesteps, s.beta_start, s.beta_end, s.beta_schedule
        )

    def eval(self) -> DiffusionADModel:
        self.denoiser.eval()
        self.segmenter.eval()
        return self

    def to(self, device) -> DiffusionADModel:
        self.denoiser.to(device)
        self.segmenter.to(device)
        return self

    @torch.no_grad()
    def reconstruct(self, x0: torch.Tensor, noise_s: torch.Tensor, noise_b: torch.Tensor) -> torch.Tensor:
        """Norm-guided reconstruction at the inference levels t_s, t_b with fixed noise."""
        d = self.config.diffusionad
        sch = self.scheduler
        x_ts, x_tb = sch.noised_inputs(x0, noise_s, noise_b)
        b = x0.shape[0]
        t = torch.tensor([float(d.t_s)] * b + [float(d.t_b)] * b, device=x0.device)
        eps = self.denoiser(torch.cat([x_ts, x_tb]), t).sample
        return sch.step(x_ts, x_tb, eps[:b], eps[b:])

    @torch.no_grad()
    def predict_mask(self, x0: torch.Tensor, noise_s: torch.Tensor, noise_b: torch.Tensor):
        x0_hat = self.reconstruct(x0, noise_s, noise_b)
        return self.segmenter(x0, x0_hat), x0_hat


SELECTED = "selected_"
"""Prefix of the snapshot chosen on synthetic anomalies (``diffusionad.select_every``)."""


def load_model(run_dir: str | Path) -> DiffusionADModel:
    """The run's networks: the selected snapshot when the run chose one, else the last step."""
    meta, config = read_checkpoint_meta(run_dir, "diffusionad")
    net = resolve_network(config.model, config.data.image_size)
    prefix = SELECTED if meta.get("selected") else ""
    denoiser = load_weights(Path(run_dir), f"{prefix}denoiser", build_denoiser(net, config.data.image_size))
    segmenter = load_weights(Path(run_dir), f"{prefix}segmenter", build_segmenter(net))
    return DiffusionADModel(denoiser, segmenter, net, config).eval()


def fixed_noise(config: ExperimentConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The inference noise e1, e2, seeded as the bundle's (export writes the same arrays)."""
    size = config.data.image_size
    rng = np.random.default_rng(config.diffusionad.noise_seed)
    return (
        torch.from_numpy(rng.standard_normal((1, 3, size, size)).astype(np.float32)),
        torch.from_numpy(rng.standard_normal((1, 3, size, size)).astype(np.float32)),
    )


def split_for_segmenter(n: int, share: float, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Indices of the images the denoiser learns from, and of those only the segmentation network sees."""
    if share <= 0:
        return torch.arange(n), None
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = max(1, int(round(n * share)))
    if n - k < 1:
        raise ConfigError(f"diffusionad.segmenter_holdout={share} leaves the denoiser no training image of {n}")
    return order[k:].sort().values, order[:k].sort().values


def train(config: ExperimentConfig, run_dir: Path, resume: bool = False, progress: bool = True) -> dict:
    return DiffusionADTrainer(config, run_dir, resume).fit(progress)


class DiffusionADTrainer:
    def __init__(self, config: ExperimentConfig, run_dir: str | Path, resume: bool = False):
        self.config = config
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.net = resolve_network(config.model, config.data.image_size)
        self.device = pick_device(config.train.device)

    def fit(self, progress: bool = True) -> dict:
        cfg, tc = self.config, self.config.train
        torch.manual_seed(tc.seed)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True
        state = open_run(self.run_dir, cfg, self.resume)
        dataset = load_dataset(cfg.data.path, cfg.data.validation_fraction, cfg.data.split_seed)
        log.info("training data: %s", dataset.describe())
        size = cfg.data.image_size
        spec = Preprocess.for_size(size)
        data = DeviceImages(load_images([s.path for s in dataset.train], spec), self.device, cfg.data.foreground)
        synth = AnomalySynthesizer.from_folder(size, cfg.data.textures, self.device)
        d = cfg.diffusionad
        for_denoiser, for_segmenter = (
            None if i is None else i.to(self.device)  # once, not every step
            for i in split_for_segmenter(len(data), d.segmenter_holdout, tc.seed)
        )
        selector = Selector(self, dataset, spec, state) if d.select_every else None

        denoiser = build_denoiser(self.net, size).to(self.device)
        segmenter = build_segmenter(self.net).to(self.device)
        params = list(denoiser.parameters()) + list(segmenter.parameters())
        steps, batch, lr = (
            or_default(tc.steps, 20000),
            or_default(tc.batch_size, 16),
            or_default(tc.learning_rate, 1e-4),
        )
        optimiser = torch.optim.Adam(params, lr=lr, fused=cuda)
        step, elapsed = restore_progress(self.run_dir, state, {"denoiser": denoiser, "segmenter": segmenter}, optimiser)
        if state is not None:
            log.info("resuming %s at step %d", self.run_dir, step)
        layout = precision.memory_format(tc, self.device)
        denoiser.to(memory_format=layout)
        segmenter.to(memory_format=layout)
        run_denoiser, run_segmenter = denoiser, segmenter
        if tc.compile and cuda:
            run_denoiser, run_segmenter = torch.compile(denoiser), torch.compile(segmenter)
        s = cfg.diffusionad.schedule
        ab = torch.tensor(
            alphas_cumprod(s.num_train_timesteps, s.beta_start, s.beta_end, s.beta_schedule),
            dtype=torch.float32,
            device=self.device,
        )
        # one generator for batches, synthesis, timesteps and noise, re-seeded at every step
        gen, reseed = step_seeding(self.device, tc.seed, 0, step)
        amp = precision.bf16(tc, self.device)
        half = distributed.local_batch(batch, "train.batch_size") // 2  # this process's normal and anomalous halves
        if half < 1:
            raise ConfigError(
                f"train.batch_size {batch} gives each of the {distributed.world_size()} training "
                "processes less than one normal and one anomalous image; give at least 2 per process"
            )
        extra = {"dataset": dataset.provenance()}
        denoiser.train()
        segmenter.train()

        def sample(n: int, among: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
            x, fg = data.draw(n, gen, among)
            x, fg = augment.geometric(x, fg, d.augment, gen)
            return augment.photometric(x, d.photometric, gen), fg

        forward = distributed.data_parallel(
            functools.partial(self._step, run_denoiser, run_segmenter), denoiser, segmenter
        )

        def step_fn() -> dict[str, torch.Tensor]:
            reseed()
            normal, _ = sample(half, for_denoiser if for_segmenter is not None else None)
            base, fg = sample(half, for_segmenter)
            anomalous, mask = synth(base, gen, fg)
            x_n = from_unit(normal, spec).contiguous(memory_format=layout)
            x_a = from_unit(anomalous, spec).contiguous(memory_format=layout)
            x_sn = None
            if for_segmenter is not None:  # the segmentation network's good samples: images the denoiser never saw
                x_sn = from_unit(sample(half, for_segmenter)[0], spec).contiguous(memory_format=layout)
            losses = forward(x_n, x_a, mask, ab, gen, amp, x_sn)
            optimiser.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimiser.step()
            return losses

        def save_fn(at: int, seconds: float, total: int) -> None:
            if selector is not None and (at % d.select_every == 0 or at == total):
                selector.consider(at, denoiser, segmenter, (run_denoiser, run_segmenter))
            save_checkpoint(
                self.run_dir,
                cfg,
                self.net,
                {"denoiser": denoiser, "segmenter": segmenter},
                {"optimiser": optimiser.state_dict(), "step": at, "elapsed_s": seconds},
                {
                    **extra,
                    "steps_done": at,
                    "steps": total,
                    "planned_steps": steps,
                    "train_seconds": round(seconds, 1),
                    **({"selected": selector.best} if selector is not None and selector.best else {}),
                },
            )

        every = tc.checkpoint_every if not d.select_every else math.gcd(tc.checkpoint_every, d.select_every)
        result = run_loop(
            "train diffusionad",
            step_fn,
            save_fn,
            step,
            steps,
            elapsed,
            self.run_dir / "train_log.jsonl",
            checkpoint_every=every,
            log_every=tc.log_every,
            progress=progress,
            stage="diffusionad",
        )
        summary = result.summary()
        if selector is not None and selector.best:
            summary["selected"] = selector.best
        return summary

    def _step(self, denoiser, segmenter, x_n, x_a, mask, ab, gen, amp, x_seg_normal=None):
        d = self.config.diffusionad
        T = d.schedule.num_train_timesteps
        n = x_n.shape[0]
        dev = x_n.device

        def draw(x):
            b = x.shape[0]
            t_s = torch.randint(0, d.tau, (b,), device=dev, generator=gen)
            t_b = torch.randint(d.tau, T, (b,), device=dev, generator=gen)
            e_s = torch.randn(x.shape, device=dev, generator=gen)
            e_b = torch.randn(x.shape, device=dev, generator=gen)
            a_s, a_b = ab[t_s].view(-1, 1, 1, 1), ab[t_b].view(-1, 1, 1, 1)
            add = NormGuidedOneStepScheduler.add_noise
            return add(x, e_s, a_s), add(x, e_b, a_b), e_s, e_b, t_s, t_b, a_s, a_b

        def eps(x_ts, x_tb, t_s, t_b):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                out = denoiser(torch.cat([x_ts, x_tb]), torch.cat([t_s, t_b]).float()).sample
            out = out.float()
            return out[: x_ts.shape[0]], out[x_ts.shape[0] :]

        step = NormGuidedOneStepScheduler.guided_step
        # normal half: noise loss (eq. 9) and a detached reconstruction
        x_ts, x_tb, e_s, e_b, t_s, t_b, a_s, a_b = draw(x_n)
        eps_s, eps_b = eps(x_ts, x_tb, t_s, t_b)
        noise = 0.5 * (torch.mean((e_s - eps_s) ** 2) + torch.mean((e_b - eps_b) ** 2))

        @torch.no_grad()
        def reconstruct(x):
            x_ts, x_tb, _, _, t_s, t_b, a_s, a_b = draw(x)
            return step(x_ts, x_tb, *eps(x_ts, x_tb, t_s, t_b), a_s, a_b, d.guidance_w)

        if x_seg_normal is None:
            rec_n = step(x_ts, x_tb, eps_s.detach(), eps_b.detach(), a_s, a_b, d.guidance_w)
        else:  # good images the denoiser never learned from: their reconstruction error is normal too
            x_n, rec_n = x_seg_normal, reconstruct(x_seg_normal)
        # anomalous half: reconstruction only; the denoiser never learns from anomalies
        rec_a = reconstruct(x_a)
        images = torch.cat([x_n, x_a])
        recons = torch.cat([rec_n, rec_a])
        target = torch.cat([torch.zeros_like(mask[:n]), mask])
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            logits = segmenter.logits(images, recons)
        seg = mask_loss(logits.float(), target, d.focal_gamma, d.focal_weight)
        return {"total": noise + seg, "noise": noise.detach(), "mask": seg.detach()}


class Selector:
    """``diffusionad.select_every``: keeps the snapshot with the best image AUROC on the validation images and
    one synthetic anomaly made from each, scored as the runtime scores (fixed noise, top-k mean of the mask)."""

    def __init__(self, trainer: DiffusionADTrainer, dataset, spec: Preprocess, state: dict | None):
        from ...training.selection import MIN_SELECTION_IMAGES, synthetic_set

        held_out = [s.path for s in dataset.validation]
        if not held_out:
            raise ConfigError(
                "diffusionad.select_every needs validation images (validation/good, or data.validation_fraction > 0)"
            )
        if len(held_out) < MIN_SELECTION_IMAGES:
            log.warning(
                "diffusionad.select_every: only %d held-out good images (%d or more recommended); the "
                "snapshot it keeps is close to a guess",
                len(held_out),
                MIN_SELECTION_IMAGES,
            )
        self.trainer, self.run_dir = trainer, trainer.run_dir
        cfg = trainer.config
        data = DeviceImages(load_images(held_out, spec), torch.device("cpu"), cfg.data.foreground)
        self.x, self.labels = synthetic_set(data, spec)
        self.noise = fixed_noise(cfg)
        self.best: dict | None = None
        if state is not None:  # resumed: the best so far is in the run's metadata
            self.best = read_checkpoint_meta(self.run_dir)[0].get("selected")

    @torch.no_grad()
    def consider(self, step: int, denoiser, segmenter, running) -> None:
        from ...core.metrics import auroc
        from ...core.scoring import top_k_mean

        model = DiffusionADModel(*running, self.trainer.net, self.trainer.config)
        device = next(denoiser.parameters()).device
        was_training = denoiser.training
        model.eval()
        scores = []
        for i in range(0, len(self.x), 8):
            mask, _ = model.predict_mask(self.x[i : i + 8].to(device), *(n.to(device) for n in self.noise))
            scores.append(top_k_mean(mask[:, 0].float().cpu().numpy(), self.trainer.config.diffusionad.top_k))
        if was_training:
            denoiser.train()
            segmenter.train()
        value = round(auroc(self.labels, np.concatenate(scores)), 4)
        log.info("step %d: synthetic AUROC %.4f on %d held-out images", step, value, len(self.labels) // 2)
        if self.best is None or value > self.best["synthetic_auroc"]:
            self.best = {"step": step, "synthetic_auroc": value}
            for name, module in (("denoiser", denoiser), ("segmenter", segmenter)):
                save_tensors(self.run_dir / f"{SELECTED}{name}.safetensors", module.state_dict())
