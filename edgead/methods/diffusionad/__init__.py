"""DiffusionAD (Zhang et al.): norm-guided one-step denoising in pixel space + a segmentation network.

Declarations only (torch-free): the configuration section, the manifest parameters and the
table entry. This folder holds the whole method: ``train.py`` (with ``networks.py``, ``losses.py``), ``export.py``
and the torch-free ``pipeline.py``; README.md says how it relates to the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...core.config import ScheduleConfig
from ...core.errors import ConfigError
from ...core.methods import MethodSpec


@dataclass
class DiffusionADConfig:
    """Paper §IV: the two noise levels, the guidance weight and the segmentation loss."""

    t_s: int = 200
    """Small noise level used at inference (paper: 200)."""
    t_b: int = 400
    """Big noise level used at inference (paper: 400)."""
    tau: int = 300
    """Training splits t into S = [0, tau) and B = [tau, T) (paper: 300)."""
    guidance_w: float = 1.0
    top_k: int = 50
    """Image score = mean of the top_k pixels of the predicted mask."""
    focal_gamma: float = 4.0
    focal_weight: float = 5.0
    noise_seed: int = 0
    """Seed of the fixed noise tensors written into the bundle at export."""
    smoothing_sigma: float = 0.0
    """Gaussian smoothing of the mask before scoring (pixels; 0 = off, as the paper)."""
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # small training sets (docs/studies.md §2: the denoiser memorises 22 grid images, and the
    # segmentation network, trained only on their near-perfect reconstructions, reads any reconstruction
    # error of an unseen good image as an anomaly)
    augment: Literal["none", "flip", "flip_rotate"] = "none"
    """Geometric augmentation of every training image, for both networks: random horizontal and vertical flips,
    and with flip_rotate also 90-degree rotations (for textures such as grid; not for an oriented product)."""
    photometric: float = 0.0
    """Random brightness (+- photometric / 2) and contrast (x 1 +- photometric) of every training image (0: off)."""
    segmenter_holdout: float = 0.0
    """Share of the training images the denoiser never learns from; the segmentation network learns only from
    them (good and with synthetic anomalies), so an unseen good image's reconstruction error counts as normal."""
    select_every: int | None = None
    """Every this many steps, score the held-out good images and one synthetic anomaly made from each; export
    takes the snapshot with the best synthetic AUROC instead of the last step (None: the last step)."""

    def check(self, config, where: str) -> None:
        self.schedule.check(f"{where}.schedule")
        T = self.schedule.num_train_timesteps
        if not 0 <= self.t_s < self.t_b < T:
            raise ConfigError(
                f"{where} needs 0 <= t_s < t_b < num_train_timesteps ({T}), got t_s={self.t_s}, t_b={self.t_b}"
            )
        if not 0 < self.tau < T:
            raise ConfigError(f"{where}.tau must be in (0, {T}), got {self.tau}")
        if self.top_k < 1:
            raise ConfigError(f"{where}.top_k must be >= 1, got {self.top_k}")
        if self.smoothing_sigma < 0:
            raise ConfigError(f"{where}.smoothing_sigma must be >= 0, got {self.smoothing_sigma}")
        if not 0 <= self.photometric < 1:
            raise ConfigError(f"{where}.photometric must be in [0, 1), got {self.photometric}")
        if not 0 <= self.segmenter_holdout <= 0.5:
            raise ConfigError(f"{where}.segmenter_holdout must be in [0, 0.5], got {self.segmenter_holdout}")
        if self.select_every is not None and self.select_every < 1:
            raise ConfigError(f"{where}.select_every must be >= 1, got {self.select_every}")


@dataclass
class DiffusionADParams:
    """What the runtime needs besides the graphs: the two levels and their alpha-bars."""

    t_s: int
    t_b: int
    alpha_bar_s: float
    alpha_bar_b: float
    guidance_w: float
    schedule: ScheduleConfig


SPEC = MethodSpec(
    name="diffusionad",
    summary="DiffusionAD: norm-guided one-step pixel diffusion + segmentation network",
    config=DiffusionADConfig,
    params=DiffusionADParams,
    stages=("denoiser_step", "segmenter"),
    extras=("noise_s", "noise_b"),
    trainer="edgead.methods.diffusionad.train:train",
    exporter="edgead.methods.diffusionad.export:DiffusionADExport",
    pipeline="edgead.methods.diffusionad.pipeline:DiffusionADPipeline",
    tiny=("model.preset=tiny", "train.batch_size=4", "train.learning_rate=1e-3"),
    budget=(("diffusionad", 1.0),),
    budget_reserve=0.05,
)
