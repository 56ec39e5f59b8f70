"""Norm-guided one-step denoising of DiffusionAD (Zhang et al., paper §IV-B, eqs. 1, 6-8).

Notation (code -> paper):
    x0        x_0            input image in [-1, 1]
    x_ts      x_{t_s}        input noised at the small level t_s          eq. (1)
    x_tb      x_{t_b}        input noised at the big level t_b            eq. (1)
    eps_s     eps_theta(x_{t_s})
    eps_b     eps_theta(x_{t_b})
    n         x^_{0_b}       one-step prediction from t_b                 eq. (6)
    n_ts      n_{t_s}        x^_{0_b} re-noised to t_s with eps_s
    eps_g     eps_theta(x_{t_s}, n_{t_s})   norm-guided noise             eq. (7)
    x0_hat    x^_{0_g}       norm-guided reconstruction                    eq. (8)

The functions work on numpy arrays and torch tensors alike (operators and ``.clip`` only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .noise_schedule import alphas_cumprod


@dataclass(frozen=True)
class NormGuidedOneStepScheduler:
    """Holds sqrt(alpha-bar) at t_s and t_b and performs the norm-guided step."""

    alpha_bar_s: float
    alpha_bar_b: float
    guidance_w: float = 1.0
    clip_sample: bool = True

    @classmethod
    def from_schedule(
        cls,
        t_s: int,
        t_b: int,
        guidance_w: float = 1.0,
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
    ) -> NormGuidedOneStepScheduler:
        ab = alphas_cumprod(num_train_timesteps, beta_start, beta_end, beta_schedule)
        return cls(float(ab[t_s]), float(ab[t_b]), float(guidance_w))

    @staticmethod
    def add_noise(x0: Any, noise: Any, alpha_bar: Any) -> Any:
        """Forward process, eq. (1): x_t = sqrt(a) x_0 + sqrt(1 - a) eps.

        ``alpha_bar`` is a float or an array broadcastable to ``x0`` (one value per sample).
        """
        return alpha_bar**0.5 * x0 + (1.0 - alpha_bar) ** 0.5 * noise

    @staticmethod
    def predict_x0(x_t: Any, eps: Any, alpha_bar: Any) -> Any:
        """One-step denoising, eq. (6): x^_0 = (x_t - sqrt(1 - a) eps) / sqrt(a)."""
        return (x_t - (1.0 - alpha_bar) ** 0.5 * eps) / alpha_bar**0.5

    def noised_inputs(self, x0: Any, noise_s: Any, noise_b: Any) -> tuple[Any, Any]:
        return self.add_noise(x0, noise_s, self.alpha_bar_s), self.add_noise(x0, noise_b, self.alpha_bar_b)

    def step(self, x_ts: Any, x_tb: Any, eps_s: Any, eps_b: Any) -> Any:
        """Norm-guided reconstruction x^_{0_g} from both noised inputs and predicted noises."""
        return self.guided_step(
            x_ts, x_tb, eps_s, eps_b, self.alpha_bar_s, self.alpha_bar_b, self.guidance_w, self.clip_sample
        )

    @classmethod
    def guided_step(
        cls,
        x_ts: Any,
        x_tb: Any,
        eps_s: Any,
        eps_b: Any,
        ab_s: Any,
        ab_b: Any,
        guidance_w: float = 1.0,
        clip_sample: bool = True,
    ) -> Any:
        """The step with per-sample alpha-bars (training draws t_s and t_b per sample)."""
        n = cls.predict_x0(x_tb, eps_b, ab_b)  # eq. (6) from t_b
        if clip_sample:
            n = n.clip(-1.0, 1.0)
        n_ts = ab_s**0.5 * n + (1.0 - ab_s) ** 0.5 * eps_s  # re-noise x^_{0_b} to t_s
        eps_g = eps_s - (1.0 - ab_s) ** 0.5 * guidance_w * (n_ts - x_ts)  # eq. (7)
        x0_hat = cls.predict_x0(x_ts, eps_g, ab_s)  # eq. (8)
        return x0_hat.clip(-1.0, 1.0) if clip_sample else x0_hat
