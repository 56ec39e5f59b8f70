"""D3AD (Tebbe et al., 2024): latent diffusion with dynamic noise from a kNN prior, noiseless start,
a domain-adapted feature extractor. The declaration (torch-free); this folder holds the rest (``train.py`` with
``adapt.py``, ``prior.py``, ``features.py``; ``export.py``; ``pipeline.py``) and a README with the reference
code's choices and edgead's departures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...core.config import ScheduleConfig
from ...core.errors import ConfigError
from ...core.fusion import FusionParams, PatchKnnConfig
from ...core.latent import AutoencoderTraining
from ...core.methods import MethodSpec
from ...core.schedulers.guided_ddim import GuidedDDIMScheduler


def d3ad_schedule() -> ScheduleConfig:
    return ScheduleConfig(beta_start=0.0015, beta_end=0.0195)


@dataclass
class D3ADConfig:
    schedule: ScheduleConfig = field(default_factory=d3ad_schedule)
    """linear 0.0015 -> 0.0195, T = 1000 (the reference)."""
    autoencoder: AutoencoderTraining = field(default_factory=AutoencoderTraining)
    guidance_w: float = 4.0
    """DDAD guidance of every reconstruction step towards the input latent."""
    num_steps: int = 10
    max_t: int = 80
    """Largest start step (bin 10); the smallest is max_t / 4 (bins 1-2)."""
    dynamic: bool = True
    """Start step from the kNN prior; false: always max_t (the ablation)."""
    start: Literal["noiseless", "noised"] = "noiseless"
    """noiseless: sqrt(a) z0 (the paper); noised: the forward process with noise fixed per bundle."""
    noise_seed: int = 0
    knn_k: int = 20
    bins: int = 10
    prior_pool: int = 16
    """Stride-8 features are average-pooled to prior_pool x prior_pool before the kNN."""
    latent_weight: float = 0.85
    """The reconstruction map = latent_weight * latent distance + (1 - latent_weight) * feature distance."""
    knn: PatchKnnConfig = field(default_factory=PatchKnnConfig)
    """The patch kNN map mixed into the reconstruction map (edgead/core/fusion.py)."""
    smoothing_sigma: float = 4.0
    adapt: bool = True
    """Domain-adapt the feature extractor (false: ImageNet features, the ablation)."""
    adapt_epochs: int = 1
    adapt_learning_rate: float = 1e-4
    adapt_regulariser: float = 1.0
    """Weight of the term keeping adapted features of real images close to the frozen backbone's."""

    def check(self, config, where: str) -> None:
        self.schedule.check(f"{where}.schedule")
        self.autoencoder.check(f"{where}.autoencoder")
        self.knn.check(f"{where}.knn")
        if not 1 <= self.num_steps <= self.max_t < self.schedule.num_train_timesteps:
            raise ConfigError(
                f"{where} needs 1 <= num_steps <= max_t < num_train_timesteps, got "
                f"{self.num_steps}, {self.max_t}, {self.schedule.num_train_timesteps}"
            )
        if self.knn_k < 1 or self.bins < 2 or self.prior_pool < 1:
            raise ConfigError(f"{where} needs knn_k >= 1, bins >= 2, prior_pool >= 1")
        if not 0 <= self.latent_weight <= 1:
            raise ConfigError(f"{where}.latent_weight must be in [0, 1], got {self.latent_weight}")


@dataclass
class D3ADParams:
    schedule: ScheduleConfig
    guidance_w: float
    num_steps: int
    max_t: int
    dynamic: bool
    start: Literal["noiseless", "noised"]
    knn_k: int
    bins: int
    prior_pool: int
    latent_weight: float
    latent_range: list[float] = field(default_factory=lambda: [0.0, 1.0])
    """[min, max] of the latent distance map over the anomaly-free calibration images."""
    feature_range: list[float] = field(default_factory=lambda: [0.0, 1.0])
    fusion: FusionParams = field(default_factory=FusionParams)
    knn_probes: int = 0
    """Cells of the patch bank searched per patch (0: exact search; bundles before edgead 0.11)."""


def sampler(settings: D3ADConfig | D3ADParams) -> GuidedDDIMScheduler:
    """The guided DDIM of training's model selection and of the runtime, from the config or the manifest."""
    s = settings.schedule
    return GuidedDDIMScheduler.from_schedule(
        s.num_train_timesteps, s.beta_start, s.beta_end, s.beta_schedule, settings.guidance_w, settings.num_steps
    )


SPEC = MethodSpec(
    name="d3ad",
    summary="D3AD: latent diffusion, start step from a kNN prior, noiseless start, adapted features",
    config=D3ADConfig,
    params=D3ADParams,
    stages=("encoder", "denoiser_step", "decoder", "feature_extractor"),
    extras=("memory_bank", "bin_edges", "patch_bank"),
    trainer="edgead.methods.d3ad.train:train",
    exporter="edgead.methods.d3ad.export:D3ADExport",
    pipeline="edgead.methods.d3ad.pipeline:D3ADPipeline",
    tiny=("model.preset=tiny", "d3ad.knn_k=5", "train.batch_size=4"),
    train_stages=("autoencoder", "denoiser", "adapt", "prior", "patches"),
    budget=(("autoencoder", 0.35), ("denoiser", 0.5), ("adapt", 0.15)),
    budget_reserve=0.2,
    # the paper adapts for one epoch; a longer adaptation does worse (docs/studies.md §9.1)
    budget_fixed=("adapt",),
    # the half-resolution decoder keeps D3AD's quality at a fraction of the decoder's cost (docs/studies.md §14);
    # DiAD keeps the full one: its map compares the reconstruction's stride-4 features
    half_resolution_decoder=("tiny", "s"),
)
