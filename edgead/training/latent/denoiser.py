"""The latent denoiser: a diffusers UNet2DModel predicting the noise of scaled latents (eps-MSE).

Latents are drawn from each training image's posterior (mean + std * noise, moments computed once:
the same distribution as encoding every step, as the reference code does, at a fraction of the
cost), with horizontal flips; t ~ U{0..T-1}; AdamW with weight decay 0.01 (the reference).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ...core.config import ScheduleConfig
from ...core.schedulers import alphas_cumprod
from .. import distributed, precision
from ..checkpoint import restore_progress
from ..loop import run_loop, step_seeding
from ..staged import StagedRun


def train_latent_denoiser(
    run: StagedRun,
    unet: nn.Module,
    means: torch.Tensor,
    stds: torch.Tensor,
    scale: float,
    schedule: ScheduleConfig,
    steps: int,
    batch: int,
    lr: float,
    progress: bool,
    indices: Callable[[int, torch.Generator], torch.Tensor],
    name: str = "denoiser",
) -> nn.Module:
    tc = run.config.train
    device = means.device
    unet.to(device)
    optimiser = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.01)
    state = run.start(name)
    step, elapsed = restore_progress(run.run_dir, state, {name: unet}, optimiser)
    ab = torch.tensor(
        alphas_cumprod(schedule.num_train_timesteps, schedule.beta_start, schedule.beta_end, schedule.beta_schedule),
        dtype=torch.float32,
        device=device,
    )
    gen, reseed = step_seeding(device, tc.seed, 2, step)
    batch = distributed.local_batch(batch, f"the {name}'s batch size")
    layout = precision.memory_format(tc, device)
    unet.to(memory_format=layout)
    unet.train()

    def losses(z_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> dict[str, torch.Tensor]:
        with precision.autocast(tc, device):
            eps = unet(z_t.contiguous(memory_format=layout), t.float()).sample
        return {"eps_mse": ((eps.float() - noise) ** 2).mean()}

    forward = distributed.data_parallel(losses, unet)

    def step_fn():
        reseed()
        idx = indices(batch, gen)
        eps0 = torch.randn(means[idx].shape, generator=gen, device=device)
        z0 = (means[idx] + stds[idx] * eps0) * scale
        flip = torch.rand(batch, 1, 1, 1, generator=gen, device=device) < 0.5
        z0 = torch.where(flip, z0.flip(-1), z0)
        t = torch.randint(0, schedule.num_train_timesteps, (batch,), generator=gen, device=device)
        noise = torch.randn(z0.shape, generator=gen, device=device)
        a = ab[t].view(-1, 1, 1, 1)
        loss = forward(a.sqrt() * z0 + (1 - a).sqrt() * noise, t, noise)["eps_mse"]
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return {"eps_mse": loss.detach()}

    def save_fn(at: int, seconds: float, total: int) -> None:
        run.save(name, {name: unet}, at, seconds, total, optimiser, planned=steps)

    run_loop(
        f"train {name}",
        step_fn,
        save_fn,
        step,
        steps,
        elapsed,
        run.run_dir / "train_log.jsonl",
        checkpoint_every=tc.checkpoint_every,
        log_every=tc.log_every,
        progress=progress,
        stage=name,
    )
    return unet.eval()
