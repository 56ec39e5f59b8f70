"""DiffusionAD training (paper §IV-C): the denoiser and the segmentation network, jointly.

Each step takes batch_size/2 normal images N and the same number of synthetic anomalies S:

    t_s ~ U[0, tau), t_b ~ U[tau, T)            one pair per sample
    L_noise = (|e_s - eps(x_ts)|^2 + |e_b - eps(x_tb)|^2) / 2   on normal samples only, eq. (9)
    x0_hat  = norm-guided one-step reconstruction (detached), eqs. (6)-(8)
    L_mask  = SmoothL1(M, M^) + 5 focal(M, M^) on all samples, eq. (10)

The reconstruction is detached before the segmentation network so that the denoiser learns
only the distribution of normal images, as the paper requires.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..config import ExperimentConfig
from ..data.datasets import load_dataset
from ..data.io import read_image, resize
from ..data.synthesis import AnomalySynthesizer
from ..errors import ConfigError, EdgeadError
from ..schedulers import NormGuidedOneStepScheduler, alphas_cumprod
from .checkpoint import (
    load_trainer_state,
    load_weights,
    read_checkpoint_meta,
    save_checkpoint,
)
from .losses import mask_loss
from .networks import (
    DiffusionADNetworkConfig,
    SegmentationUNet,
    build_denoiser,
    build_segmenter,
    resolve_network,
)

log = logging.getLogger(__name__)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [B,H,W,3] (or [H,W,3]) RGB -> float32 [B,3,H,W] in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(images)).float()
    if t.ndim == 3:
        t = t[None]
    return t.permute(0, 3, 1, 2) / 127.5 - 1.0


class SyntheticAnomalyDataset(Dataset):
    """Item k: a random normal image and a synthetic anomaly made from it (seeded by k)."""

    def __init__(self, images: np.ndarray, synthesizer: AnomalySynthesizer, seed: int, length: int):
        self.images, self.synthesizer, self.seed, self.length = images, synthesizer, seed, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int):
        rng = np.random.default_rng([self.seed, k])
        normal = self.images[int(rng.integers(len(self.images)))]
        anomalous, mask = self.synthesizer(normal, rng)
        return normal, anomalous, mask[None]


def load_images(paths: list[Path], size: int) -> np.ndarray:
    return np.stack([resize(read_image(p), size) for p in paths])


@dataclass
class DiffusionADModel:
    """The trained networks plus everything needed to run them (used by export and benchmarks)."""

    denoiser: torch.nn.Module
    segmenter: SegmentationUNet
    network: DiffusionADNetworkConfig
    config: ExperimentConfig

    @property
    def scheduler(self) -> NormGuidedOneStepScheduler:
        s, d = self.config.schedule, self.config.diffusionad
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


def load_diffusionad(run_dir: str | Path) -> DiffusionADModel:
    meta, config = read_checkpoint_meta(run_dir)
    if config.method != "diffusionad":
        raise EdgeadError(f"{run_dir} holds a {config.method} model, not diffusionad")
    net = resolve_network(config.model, config.data.image_size)
    denoiser = load_weights(Path(run_dir), "denoiser", build_denoiser(net, config.data.image_size))
    segmenter = load_weights(Path(run_dir), "segmenter", build_segmenter(net))
    return DiffusionADModel(denoiser, segmenter, net, config).eval()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA GPU is visible to PyTorch")
    return torch.device(name)


class DiffusionADTrainer:
    def __init__(self, config: ExperimentConfig, run_dir: str | Path, resume: bool = False):
        if config.data.path is None:
            raise ConfigError("no training data: pass --data DIR or set data.path in the config")
        self.config = config
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.net = resolve_network(config.model, config.data.image_size)
        self.device = pick_device(config.train.device)

    def fit(self, progress: bool = True) -> dict:
        from tqdm.auto import tqdm

        cfg, tc, d = self.config, self.config.train, self.config.diffusionad
        torch.manual_seed(tc.seed)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        state = self._check_run_dir()
        dataset = load_dataset(cfg.data.path, cfg.data.validation_fraction, cfg.data.split_seed)
        log.info("training data: %s", dataset.describe())
        size = cfg.data.image_size
        images = load_images([s.path for s in dataset.train], size)
        synth = AnomalySynthesizer.from_folder(size, cfg.data.textures, cfg.data.foreground)

        denoiser = build_denoiser(self.net, size).to(self.device)
        segmenter = build_segmenter(self.net).to(self.device)
        params = list(denoiser.parameters()) + list(segmenter.parameters())
        optimiser = torch.optim.Adam(params, lr=tc.learning_rate)
        step, elapsed = 0, 0.0
        if state is not None:
            load_weights(self.run_dir, "denoiser", denoiser)
            load_weights(self.run_dir, "segmenter", segmenter)
            optimiser.load_state_dict(state["optimiser"])
            step, elapsed = int(state["step"]), float(state["elapsed_s"])
            log.info("resuming %s at step %d", self.run_dir, step)
        if step >= tc.steps:
            log.info("run already has %d/%d steps; nothing to do", step, tc.steps)
            return {"steps": step, "elapsed_s": elapsed}

        half = tc.batch_size // 2
        ds = SyntheticAnomalyDataset(images, synth, tc.seed, tc.steps * half)
        sub = torch.utils.data.Subset(ds, range(step * half, tc.steps * half))
        loader = DataLoader(
            sub, batch_size=half, shuffle=False, num_workers=tc.num_workers,
            persistent_workers=tc.num_workers > 0, drop_last=True,
            pin_memory=self.device.type == "cuda",
        )
        ab = torch.tensor(
            alphas_cumprod(cfg.schedule.num_train_timesteps, cfg.schedule.beta_start,
                           cfg.schedule.beta_end, cfg.schedule.beta_schedule),
            dtype=torch.float32, device=self.device,
        )
        gen = torch.Generator(device=self.device).manual_seed(tc.seed * 1_000_003 + step)
        amp = tc.mixed_precision and self.device.type == "cuda"
        extra = {"dataset": dataset.provenance()}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log_file = (self.run_dir / "train_log.jsonl").open("a")
        denoiser.train()
        segmenter.train()
        bar = tqdm(total=tc.steps, initial=step, disable=not progress, desc="train diffusionad",
                   unit="step", dynamic_ncols=True)
        t_start = time.perf_counter() - elapsed
        t_session = time.perf_counter()  # max_minutes limits this invocation, not the whole run
        stopped_early = False
        last = {}
        try:
            for normal, anomalous, mask in loader:
                x_n = to_tensor(normal.numpy()).to(self.device, non_blocking=True)
                x_a = to_tensor(anomalous.numpy()).to(self.device, non_blocking=True)
                m = mask.to(self.device, dtype=torch.float32)
                losses = self._step(denoiser, segmenter, x_n, x_a, m, ab, gen, amp)
                optimiser.zero_grad(set_to_none=True)
                losses["total"].backward()
                optimiser.step()
                step += 1
                last = {k: float(v.detach()) for k, v in losses.items()}
                if not all(math.isfinite(v) for v in last.values()):
                    raise EdgeadError(f"training diverged at step {step}: losses {last}")
                bar.update(1)
                bar.set_postfix(noise=f"{last['noise']:.4f}", mask=f"{last['mask']:.4f}")
                elapsed = time.perf_counter() - t_start
                if step % 50 == 0 or step == tc.steps:
                    log_file.write(json.dumps({"step": step, "elapsed_s": round(elapsed, 2), **last}) + "\n")
                    log_file.flush()
                over_time = tc.max_minutes is not None and time.perf_counter() - t_session > tc.max_minutes * 60
                if step % tc.checkpoint_every == 0 or step == tc.steps or over_time:
                    self._save(denoiser, segmenter, optimiser, step, elapsed, extra)
                if over_time:
                    stopped_early = step < tc.steps
                    break
        except KeyboardInterrupt:
            log.warning("interrupted at step %d; saving checkpoint", step)
            self._save(denoiser, segmenter, optimiser, step, time.perf_counter() - t_start, extra)
            raise
        finally:
            bar.close()
            log_file.close()
        return {"steps": step, "elapsed_s": elapsed, "stopped_by_time_limit": stopped_early, **last}

    def _check_run_dir(self):
        state = load_trainer_state(self.run_dir) if self.run_dir.exists() else None
        has_ckpt = (self.run_dir / "config.yaml").is_file()
        if has_ckpt and not self.resume:
            raise EdgeadError(
                f"{self.run_dir} already holds a training run; pass --resume to continue it "
                "or choose another --out (nothing was overwritten)"
            )
        if self.resume and state is None:
            raise EdgeadError(f"--resume: no trainer state in {self.run_dir}")
        if self.resume:
            _, old = read_checkpoint_meta(self.run_dir)
            if (old.model, old.data.image_size, old.method) != (
                self.config.model, self.config.data.image_size, self.config.method
            ):
                raise EdgeadError(
                    f"--resume: {self.run_dir} was trained with another model or image size; "
                    "resume with the same configuration"
                )
        return state

    def _step(self, denoiser, segmenter, x_n, x_a, mask, ab, gen, amp):
        d, T = self.config.diffusionad, self.config.schedule.num_train_timesteps
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

    def _save(self, denoiser, segmenter, optimiser, step, elapsed, extra):
        save_checkpoint(
            self.run_dir, self.config, self.net,
            {"denoiser": denoiser, "segmenter": segmenter},
            {"optimiser": optimiser.state_dict(), "step": step, "elapsed_s": elapsed},
            {**extra, "steps_done": step, "train_seconds": round(elapsed, 1)},
        )
