"""DiAD (He et al., 2024): latent diffusion steered by a Semantic-Guided network; one model for several
products. The declaration (torch-free); this folder holds the rest (``train.py``, ``export.py``, ``pipeline.py``)
and a README with the reference code's choices and edgead's departures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...core.config import ScheduleConfig
from ...core.errors import ConfigError
from ...core.fusion import FusionParams, PatchKnnConfig
from ...core.latent import AutoencoderTraining
from ...core.methods import MethodSpec
from ...core.schedulers.guided_ddim import GuidedDDIMScheduler


def diad_schedule() -> ScheduleConfig:
    return ScheduleConfig(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


@dataclass
class DiADConfig:
    schedule: ScheduleConfig = field(default_factory=diad_schedule)
    """Stable Diffusion's scaled-linear 0.00085 -> 0.012, T = 1000 (the reference)."""
    autoencoder: AutoencoderTraining = field(default_factory=AutoencoderTraining)
    sg: bool = True
    """Steer the UNet with the Semantic-Guided network (false: the plain latent UNet, the ablation)."""
    sff: bool = True
    """The Spatial-aware Feature Fusion block in the SG network (false: the ablation)."""
    guidance_steps: int | None = None
    """Steps of stage B (SG network + UNet decoder); None: --steps, else the preset's (s: 600)."""
    guidance_learning_rate: float | None = None
    num_steps: int = 10
    """DDIM steps (eta 0)."""
    start_step: int | None = None
    """T_start; None: chosen at training among start_candidates with synthetic anomalies."""
    start_candidates: tuple[int, ...] = (600, 800, 1000)
    snapshots: int = 2
    """Stage-B checkpoints compared on synthetic anomalies (never on test images); the best is kept."""
    noise_seed: int = 0
    smoothing_sigma: float = 5.0
    pool: int = 8
    """Image score = max of the map after a pool x pool average pool (stride 1)."""
    knn: PatchKnnConfig = field(default_factory=PatchKnnConfig)
    """The patch kNN map mixed into the reconstruction map (edgead/core/fusion.py)."""

    def check(self, config, where: str) -> None:
        self.schedule.check(f"{where}.schedule")
        self.autoencoder.check(f"{where}.autoencoder")
        self.knn.check(f"{where}.knn")
        T = self.schedule.num_train_timesteps
        starts = [self.start_step] if self.start_step is not None else list(self.start_candidates)
        if not starts or any(not self.num_steps <= s <= T for s in starts):
            raise ConfigError(f"{where}: start steps must lie in [num_steps, {T}], got {starts}")
        if self.snapshots < 1 or self.pool < 1 or self.num_steps < 1:
            raise ConfigError(f"{where} needs snapshots, pool and num_steps >= 1")


@dataclass
class DiADParams:
    schedule: ScheduleConfig
    num_steps: int
    start_step: int
    sg: bool
    sff: bool
    fusion: FusionParams = field(default_factory=FusionParams)
    knn_probes: int = 0
    """Cells of the patch bank searched per patch (0: exact search; bundles before edgead 0.11)."""


def sampler(settings: DiADConfig | DiADParams) -> GuidedDDIMScheduler:
    """DDIM, eta 0, no guidance, LDM's uniform discretisation (start at T_start - 1, steps 901 ... 1),
    for training's model selection and the runtime alike."""
    s = settings.schedule
    return GuidedDDIMScheduler.from_schedule(
        s.num_train_timesteps,
        s.beta_start,
        s.beta_end,
        s.beta_schedule,
        guidance_w=0.0,
        num_steps=settings.num_steps,
        offset=1,
        start_offset=-1,
    )


SPEC = MethodSpec(
    name="diad",
    summary="DiAD: latent diffusion steered by a Semantic-Guided network, one model for several products",
    config=DiADConfig,
    params=DiADParams,
    stages=("encoder", "hint_encoder", "denoiser_step", "decoder", "feature_extractor"),
    extras=("noise", "patch_bank"),
    trainer="edgead.methods.diad.train:train",
    exporter="edgead.methods.diad.export:DiADExport",
    pipeline="edgead.methods.diad.pipeline:DiADPipeline",
    tiny=("model.preset=tiny", "train.batch_size=4", "diad.start_candidates=[40, 80]"),
    multi_product=True,
    # the patch bank before the selection: under a budget the selection can score fewer candidates, while a
    # coreset cut short costs the kNN map much more (docs/studies.md §9.2)
    train_stages=("autoencoder", "denoiser", "guidance", "patches", "select"),
    budget=(("autoencoder", 0.3), ("denoiser", 0.3), ("guidance", 0.4)),
    budget_reserve=0.25,
)
