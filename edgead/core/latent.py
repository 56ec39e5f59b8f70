"""What the latent-diffusion methods (D3AD, DiAD) share in their configuration sections (torch-free); their
shared networks and training stages live in ``edgead/training/latent``."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError


@dataclass
class AutoencoderTraining:
    """The KL autoencoder stage (no Stable Diffusion weights here; model.autoencoder_encoder picks the encoder)."""

    steps: int | None = None
    """None: the preset's (tiny 30, s 450 on a CPU, m 20000, paper 50000)."""
    batch_size: int | None = None
    crop: int | None = None
    """Random square crops (pixels); None: the preset's (s: 128)."""
    learning_rate: float = 2e-4
    kl_weight: float = 1e-6
    perceptual_weight: float = 1.0

    def check(self, where: str) -> None:
        for name in ("steps", "batch_size", "crop"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name} must be >= 1, got {getattr(self, name)}")
