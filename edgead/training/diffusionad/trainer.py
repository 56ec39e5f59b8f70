"""DiffusionAD training (paper §IV-C): the denoiser and the segmentation network, jointly.

Each step takes batch_size/2 normal images N and the same number of synthetic anomalies S:

    t_s ~ U[0, tau), t_b ~ U[tau, T)            one pair per sample
    L_noise = (|e_s - eps(x_ts)|^2 + |e_b - eps(x_tb)|^2) / 2   on normal samples only, eq. (9)
    x0_hat  = norm-guided one-step reconstruction (detached), eqs. (6)-(8)
    L_mask  = SmoothL1(M, M^) + 5 focal(M, M^) on all samples, eq. (10)

The reconstruction is detached before the segmentation network so that the denoiser learns
only the distribution of normal images, as the paper requires. Batches, synthetic anomalies,
timesteps and noise are all drawn on the training device (no loader workers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ...config import ExperimentConfig, or_default
from ...data.datasets import load_dataset
from ...data.preprocess import Preprocess
from ...data.synthesis import AnomalySynthesizer
from ...schedulers import NormGuidedOneStepScheduler, alphas_cumprod
from ..checkpoint import load_weights, open_run, restore_progress, read_checkpoint_meta, save_checkpoint
from ..data import DeviceImages, from_unit, load_images, pick_device
from ..loop import run_loop
from .losses import mask_loss
from .networks import DiffusionADNetworkConfig, SegmentationUNet, build_denoiser, build_segmenter, resolve_network

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


def load_model(run_dir: str | Path) -> DiffusionADModel:
    _, config = read_checkpoint_meta(run_dir, "diffusionad")
    net = resolve_network(config.model, config.data.image_size)
    denoiser = load_weights(Path(run_dir), "denoiser", build_denoiser(net, config.data.image_size))
    segmenter = load_weights(Path(run_dir), "segmenter", build_segmenter(net))
    return DiffusionADModel(denoiser, segmenter, net, config).eval()


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

        denoiser = build_denoiser(self.net, size).to(self.device)
        segmenter = build_segmenter(self.net).to(self.device)
        params = list(denoiser.parameters()) + list(segmenter.parameters())
        steps, batch, lr = or_default(tc.steps, 20000), or_default(tc.batch_size, 16), or_default(tc.learning_rate, 1e-4)
        optimiser = torch.optim.Adam(params, lr=lr, fused=cuda)
        step, elapsed = restore_progress(self.run_dir, state, {"denoiser": denoiser, "segmenter": segmenter}, optimiser)
        if state is not None:
            log.info("resuming %s at step %d", self.run_dir, step)
        layout = torch.channels_last if cuda and tc.channels_last else torch.contiguous_format
        denoiser.to(memory_format=layout)
        segmenter.to(memory_format=layout)
        run_denoiser, run_segmenter = denoiser, segmenter
        if tc.compile and cuda:
            run_denoiser, run_segmenter = torch.compile(denoiser), torch.compile(segmenter)
        s = cfg.diffusionad.schedule
        ab = torch.tensor(alphas_cumprod(s.num_train_timesteps, s.beta_start, s.beta_end, s.beta_schedule),
                          dtype=torch.float32, device=self.device)
        # one generator for batches, synthesis, timesteps and noise, re-seeded by step on resume
        gen = torch.Generator(device=self.device).manual_seed(tc.seed * 1_000_003 + step)
        amp = tc.mixed_precision and cuda
        half = batch // 2
        extra = {"dataset": dataset.provenance()}
        denoiser.train()
        segmenter.train()

        def step_fn() -> dict[str, torch.Tensor]:
            normal, _ = data.draw(half, gen)
            base, fg = data.draw(half, gen)
            anomalous, mask = synth(base, gen, fg)
            x_n = from_unit(normal, spec).contiguous(memory_format=layout)
            x_a = from_unit(anomalous, spec).contiguous(memory_format=layout)
            losses = self._step(run_denoiser, run_segmenter, x_n, x_a, mask, ab, gen, amp)
            optimiser.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimiser.step()
            return losses

        def save_fn(at: int, seconds: float) -> None:
            save_checkpoint(
                self.run_dir, cfg, self.net, {"denoiser": denoiser, "segmenter": segmenter},
                {"optimiser": optimiser.state_dict(), "step": at, "elapsed_s": seconds},
                {**extra, "steps_done": at, "train_seconds": round(seconds, 1)},
            )

        result = run_loop(
            "train diffusionad", step_fn, save_fn, step, steps, elapsed, self.run_dir / "train_log.jsonl",
            max_minutes=tc.max_minutes, checkpoint_every=tc.checkpoint_every, log_every=tc.log_every,
            progress=progress,
        )
        return result.summary()

    def _step(self, denoiser, segmenter, x_n, x_a, mask, ab, gen, amp):
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
            return out[: x_ts.shape[0]], out[x_ts.shape[0]:]

        step = NormGuidedOneStepScheduler.guided_step
        # normal half: noise loss (eq. 9) and a detached reconstruction
        x_ts, x_tb, e_s, e_b, t_s, t_b, a_s, a_b = draw(x_n)
        eps_s, eps_b = eps(x_ts, x_tb, t_s, t_b)
        noise = 0.5 * (torch.mean((e_s - eps_s) ** 2) + torch.mean((e_b - eps_b) ** 2))
        rec_n = step(x_ts, x_tb, eps_s.detach(), eps_b.detach(), a_s, a_b, d.guidance_w)
        # anomalous half: reconstruction only; the denoiser never learns from anomalies
        with torch.no_grad():
            ax_ts, ax_tb, _, _, at_s, at_b, aa_s, aa_b = draw(x_a)
            aeps_s, aeps_b = eps(ax_ts, ax_tb, at_s, at_b)
            rec_a = step(ax_ts, ax_tb, aeps_s, aeps_b, aa_s, aa_b, d.guidance_w)
        images = torch.cat([x_n, x_a])
        recons = torch.cat([rec_n, rec_a])
        target = torch.cat([torch.zeros_like(mask[:n]), mask])
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            logits = segmenter.logits(images, recons)
        seg = mask_loss(logits.float(), target, d.focal_gamma, d.focal_weight)
        return {"total": noise + seg, "noise": noise.detach(), "mask": seg.detach()}
