"""Deterministic DDIM reconstruction guided towards the input (DDAD's conditioning), per-sample timesteps.

D3AD (Tebbe et al., 2024; the authors' ``my_generalized_steps``, eta = 0) and DiAD's DDIM sampler
(He et al., 2024; guidance w = 0) are this one update. Notation (code -> papers):

    y        z_0        the input's latent (the target the reconstruction is guided towards)
    x_t      x_t        the current sample
    eps      eps_theta(x_t, t)
    y_t      sqrt(a_t) y + sqrt(1 - a_t) eps                      the target noised like x_t
    eps_hat  eps - sqrt(1 - a_t) w (y_t - x_t)                    guided noise (DDAD, w = 4 in D3AD)
    x0       (x_t - sqrt(1 - a_t) eps_hat) / sqrt(a_t)             predicted clean sample
    x_next   sqrt(a_next) x0 + sqrt(1 - a_next) eps_hat           DDIM, eta = 0; a_next = 1 after t = 0

Start (``start``): D3AD's noiseless input scaling x = sqrt(a_tmax) y, or the usual forward process
x = sqrt(a_tmax) y + sqrt(1 - a_tmax) noise (DiAD, D3AD's ablation) with noise fixed per bundle.
Timesteps: ``num_steps`` steps t_max - s, ..., s, 0 with s = t_max // num_steps (D3AD: 10 steps,
t_max in 20..80), each plus ``offset``; the start sample sits at t_max + ``start_offset``. DiAD's
reference (LDM's uniform DDIM discretisation) noises to T_start - 1 = 999 and steps 901, 801, ..., 1:
offset 1, start_offset -1. Every sample of a batch may have its own t_max. Works on numpy arrays and torch
tensors alike (operators only): training-time evaluation and the runtime call the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .noise_schedule import alphas_cumprod


@dataclass(frozen=True)
class GuidedDDIMScheduler:
    alphas_cumprod: tuple[float, ...]
    """alpha-bar_t for t = 0 .. T-1."""
    guidance_w: float = 4.0
    num_steps: int = 10
    offset: int = 0
    start_offset: int = 0

    @classmethod
    def from_schedule(
        cls,
        num_train_timesteps: int,
        beta_start: float,
        beta_end: float,
        beta_schedule: str,
        guidance_w: float = 4.0,
        num_steps: int = 10,
        offset: int = 0,
        start_offset: int = 0,
    ) -> GuidedDDIMScheduler:
        ab = alphas_cumprod(num_train_timesteps, beta_start, beta_end, beta_schedule)
        return cls(tuple(float(a) for a in ab), float(guidance_w), int(num_steps), offset, start_offset)

    def timesteps(self, t_max: np.ndarray) -> np.ndarray:
        """[num_steps, B] int64: for each sample, t_max - s, ..., s, 0 (plus offset), s = max(t_max // num_steps, 1)."""
        t_max = np.asarray(t_max, np.int64).reshape(-1)
        skip = np.maximum(t_max // self.num_steps, 1)
        k = np.arange(self.num_steps - 1, -1, -1, dtype=np.int64)[:, None]
        return k * skip[None, :] + self.offset

    def alpha_bar(self, t: np.ndarray) -> np.ndarray:
        """alpha-bar at integer timesteps; t = -1 (after the last step) is 1."""
        ab = np.concatenate([[1.0], np.asarray(self.alphas_cumprod, np.float64)])
        return ab[np.asarray(t, np.int64) + 1]

    def start(self, y: Any, t_max: np.ndarray, noise: Any = None) -> Any:
        """The sample at t_max: sqrt(a) y (noiseless) or sqrt(a) y + sqrt(1 - a) noise."""
        a = self._per_sample(self.alpha_bar(np.asarray(t_max) + self.start_offset), y)
        x = a**0.5 * y
        return x if noise is None else x + (1.0 - a) ** 0.5 * noise

    def step(self, eps: Any, t: np.ndarray, t_next: np.ndarray, x_t: Any, y: Any) -> Any:
        """One guided DDIM update for a batch whose samples may sit at different timesteps."""
        a = self._per_sample(self.alpha_bar(t), x_t)
        a_next = self._per_sample(self.alpha_bar(t_next), x_t)
        y_t = a**0.5 * y + (1.0 - a) ** 0.5 * eps
        eps_hat = eps - (1.0 - a) ** 0.5 * self.guidance_w * (y_t - x_t)
        x0 = (x_t - (1.0 - a) ** 0.5 * eps_hat) / a**0.5
        return a_next**0.5 * x0 + (1.0 - a_next) ** 0.5 * eps_hat

    def reconstruct(self, denoise, y: Any, t_max: np.ndarray, noise: Any = None) -> Any:
        """The whole loop; ``denoise(x_t, t)`` returns eps for a batch with per-sample ``t`` (float32)."""
        steps = self.timesteps(t_max)
        x = self.start(y, t_max, noise)
        for i in range(self.num_steps):
            t = steps[i]
            t_next = steps[i + 1] if i + 1 < self.num_steps else np.full_like(t, -1)
            x = self.step(denoise(x, t.astype(np.float32)), t, t_next, x, y)
        return x

    @staticmethod
    def _per_sample(values: np.ndarray, like: Any) -> Any:
        """[B] float64 -> broadcastable [B, 1, 1, 1] of ``like``'s type (numpy array or torch tensor)."""
        v = np.asarray(values, np.float64).reshape(-1, *([1] * (like.ndim - 1)))
        if isinstance(like, np.ndarray):
            return v.astype(like.dtype)
        return like.new_tensor(v)
