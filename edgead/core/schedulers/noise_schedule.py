"""DDPM noise schedules (Ho et al. 2020): beta_t and alpha-bar_t = prod_{s<=t} (1 - beta_s)."""

from __future__ import annotations

import numpy as np


def alphas_cumprod(
    num_train_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    beta_schedule: str = "linear",
) -> np.ndarray:
    """alpha-bar for t = 0 .. T-1 (float64), identical to diffusers' DDPMScheduler.

    ``scaled_linear`` is Stable Diffusion's (linear in sqrt(beta)), which DiAD trains with.
    """
    if beta_schedule == "linear":
        betas = np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float32)
    elif beta_schedule == "scaled_linear":
        betas = np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float32) ** 2
    else:
        raise ValueError(f"beta_schedule must be one of 'linear', 'scaled_linear'; got {beta_schedule!r}")
    return np.cumprod(1.0 - betas.astype(np.float64))
