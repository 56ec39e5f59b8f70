"""Training checkpoints: weights as safetensors, the full configuration as YAML.

    <run>/config.yaml            ExperimentConfig + resolved network + edgead version
    <run>/<module>.safetensors   one file per network
    <run>/trainer_state.pt       optimiser state and step, for --resume
    <run>/train_log.jsonl        one line of losses per logged step

Files are written to a temporary name and renamed, so an interrupted save never leaves a
half-written checkpoint behind.
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from ..core.codec import from_dict, read_yaml_text, to_dict, to_yaml
from ..core.config import ExperimentConfig
from ..core.errors import ConfigError, EdgeadError
from ..core.outputs import atomic_write, atomic_write_with
from ..core.version import __version__
from . import distributed

CONFIG_FILE = "config.yaml"
PATCH_SECTION = "patchcore"
"""The baseline's configuration section, whose patch descriptor migrate_config keeps as it was trained."""
STATE_FILE = "trainer_state.pt"


def migrate_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Configurations written by edgead 0.1 in today's layout (keys that moved or were retired)."""
    raw = dict(raw)
    if "schedule" in raw:  # 0.1: one top-level schedule, DiffusionAD's
        raw.setdefault("diffusionad", {})["schedule"] = raw.pop("schedule")
    weights = raw.get("patchcore", {}).pop("weights", None)
    if weights is not None:
        raw.setdefault("backbone", {})["weights"] = weights
    sigma = raw.get("calibration", {}).pop("smoothing_sigma", None)
    if sigma:  # 0.1 kept the map smoothing with the calibration
        raw.setdefault(raw.get("method", "diffusionad"), {})["smoothing_sigma"] = sigma
    raw.get("train", {}).pop("num_workers", None)  # 0.1's loader workers (synthesis now runs on the device)
    model = raw.get("model")
    if isinstance(model, dict) and "autoencoder_encoder" not in model:  # 0.2: the from-scratch autoencoder
        raw["model"] = model = {**model, "autoencoder_encoder": "scratch", "autoencoder_colour_skip": False}
    if isinstance(model, dict) and "autoencoder_decoder_stride" not in model:  # before 0.6: every pixel decoded
        raw["model"] = {**model, "autoencoder_decoder_stride": 1}
    for name, section in list(raw.items()):  # before 0.9: patch maps pooled at their own stride, then upsampled
        if isinstance(section, dict):
            if name == PATCH_SECTION and "aggregation" not in section:
                raw[name] = section = {**section, "aggregation": "pool_first"}
            knn = section.get("knn")
            if isinstance(knn, dict) and "aggregation" not in knn:
                raw[name] = {**section, "knn": {**knn, "aggregation": "pool_first"}}
    return raw


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """A safetensors file written atomically, readable like any file the user's umask allows (by training
    process 0 alone: the others hold the same weights)."""
    if not distributed.is_main():
        return
    atomic_write_with(path, lambda p: save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(p)))


def save_trainer_state(path: Path, state: dict[str, Any]) -> None:
    """Optimiser and position for ``--resume``, written atomically (by training process 0)."""
    if not distributed.is_main():
        return
    atomic_write_with(path, lambda p: torch.save(state, p))


def save_checkpoint(
    run_dir: Path,
    config: ExperimentConfig,
    network: Any,
    modules: dict[str, torch.nn.Module],
    state: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Weights, trainer state, then config.yaml (written last and atomically: a run is what it says). Returns
    what config.yaml now holds."""
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "edgead_version": __version__,
        "method": config.method,
        "network": to_dict(asdict(network) if is_dataclass(network) else network) if network is not None else None,
        "config": to_dict(config),
        **(extra or {}),
    }
    for name, module in modules.items():
        save_tensors(run_dir / f"{name}.safetensors", module.state_dict())
    if state is not None:
        save_trainer_state(run_dir / STATE_FILE, state)
    if "history" not in meta and (run_dir / CONFIG_FILE).is_file():  # a run's record keeps its past
        previous = read_yaml_text((run_dir / CONFIG_FILE).read_text(), str(run_dir / CONFIG_FILE))
        if previous.get("history"):
            meta["history"] = previous["history"]
    text = to_yaml(meta)
    if distributed.is_main():
        atomic_write(run_dir / CONFIG_FILE, text)
    return read_yaml_text(text, str(run_dir / CONFIG_FILE))


def read_checkpoint_meta(run_dir: str | Path, method: str | None = None) -> tuple[dict[str, Any], ExperimentConfig]:
    """The run's metadata and configuration; ``method`` (if given) must be the run's method."""
    d = Path(run_dir)
    f = d / CONFIG_FILE
    if not f.is_file():
        raise EdgeadError(f"{d} is not a training run: {CONFIG_FILE} is missing (train with 'edgead train')")
    try:
        meta = yaml.safe_load(f.read_bytes().decode("utf-8"))
        config = from_dict(ExperimentConfig, migrate_config(meta["config"])).validate()
    except (yaml.YAMLError, UnicodeDecodeError, KeyError, TypeError, AttributeError, ConfigError) as exc:
        raise EdgeadError(f"{f} is corrupt: {exc}") from None
    if method is not None and config.method != method:
        raise EdgeadError(f"{d} holds a {config.method} model, not {method}")
    return meta, config


def load_weights(run_dir: Path, name: str, module: torch.nn.Module) -> torch.nn.Module:
    f = Path(run_dir) / f"{name}.safetensors"
    if not f.is_file():
        raise EdgeadError(f"checkpoint file missing: {f}")
    try:
        module.load_state_dict(load_file(str(f)), strict=True)
    except Exception as exc:  # safetensors/torch raise several types for corrupt files
        raise EdgeadError(f"cannot load {f}: {exc}") from None
    return module


def restore_progress(
    run_dir: Path, state: dict[str, Any] | None, modules: dict[str, torch.nn.Module], optimiser: torch.optim.Optimizer
) -> tuple[int, float]:
    """Weights, optimiser and position of an interrupted training; (0, 0.0) when starting fresh."""
    if state is None:
        return 0, 0.0
    for name, module in modules.items():
        load_weights(run_dir, name, module)
    optimiser.load_state_dict(state["optimiser"])
    return int(state["step"]), float(state["elapsed_s"])


def load_trainer_state(run_dir: Path) -> dict[str, Any] | None:
    f = Path(run_dir) / STATE_FILE
    if not f.is_file():
        return None
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EdgeadError(f"cannot load {f}: {exc} (the run cannot be resumed; train into a new --out)") from None


def check_run_dir(run_dir: Path, resume: bool, resumable: bool = True) -> bool:
    """Whether ``run_dir`` holds a run. A run is never trained over, only continued (``--resume``); the one
    check every trainer makes (``training._check_run_folder`` refuses folders of other files before it)."""
    has_run = (Path(run_dir) / CONFIG_FILE).is_file()
    if has_run and not resume:
        how = "pass --resume to continue it or choose another --out" if resumable else "choose another --out"
        raise EdgeadError(f"{run_dir} already holds a training run; {how} (nothing was overwritten)")
    if resume and not has_run:
        raise EdgeadError(f"--resume: {run_dir} holds no training run to continue")
    return has_run


def check_same_model(run_dir: Path, stored: ExperimentConfig, config: ExperimentConfig) -> None:
    """A run is continued by the method, network and image size that started it."""
    if (stored.method, stored.model, stored.data.image_size) != (config.method, config.model, config.data.image_size):
        raise EdgeadError(
            f"{run_dir} holds a run with another method, model or image size; continue it with "
            "its own configuration (edgead train --out RUN --resume)"
        )


def open_run(run_dir: Path, config: ExperimentConfig, resume: bool) -> dict[str, Any] | None:
    """Refuse to overwrite a run; on resume, its trainer state (the configuration is the run's own)."""
    if not check_run_dir(run_dir, resume):
        return None
    _, stored = read_checkpoint_meta(run_dir)
    check_same_model(run_dir, stored, config)
    state = load_trainer_state(run_dir)
    if state is None:
        raise EdgeadError(f"--resume: {run_dir} has no {STATE_FILE} (optimiser state); it cannot be continued")
    return state


RESUMABLE = (
    "train.steps",
    "train.max_minutes",
    "train.fill_budget",
    "train.device",
    "train.checkpoint_every",
    "train.log_every",
    "train.mixed_precision",
    "train.channels_last",
    "train.compile",
)
"""Options a resumed run may change: how long and where it trains, not what it learns. Everything else is the
run's own and may differ only when asked (``--allow-changes``); method, network and image size never."""
NEVER = ("method", "model.", "data.image_size")
"""What makes the run's networks: a run with other values is another run."""


def _leaf(tree: dict[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _fingerprints(recorded: Any) -> list[str | None]:
    sets = recorded if isinstance(recorded, list) else [recorded]
    return [d.get("fingerprint") if isinstance(d, dict) else None for d in sets]


def _same_data(meta: dict[str, Any], config: ExperimentConfig) -> bool:
    """Whether ``config``'s data holds the images the run was trained on (moved or not): by content."""
    from ..data.datasets import load_dataset

    stored = _fingerprints(meta.get("dataset"))
    given = [
        load_dataset(p, config.data.validation_fraction, config.data.split_seed).fingerprint()
        for p in config.data_paths
    ]
    return None not in stored and sorted(stored) == sorted(given)


def resume_config(run_dir: str | Path, overrides: list[str], allow_changes: bool = False) -> ExperimentConfig:
    """The run's saved configuration with the options a resumed run may change.

    An option that differs from what the run was trained with is an error naming the stored value (edgead
    0.1 silently continued with defaults), unless ``allow_changes``: then everything but the method, the
    network and the image size may change, and ``training.train`` records the change in the run's history.
    Data given again counts as a change only when its images differ (a moved data set is the same data).
    """
    from ..core.codec import apply_overrides

    meta, stored = read_checkpoint_meta(run_dir)
    base = to_dict(stored)
    merged = to_dict(stored)
    for item in overrides:
        key = item.partition("=")[0]
        given = to_dict(from_dict(ExperimentConfig, apply_overrides(to_dict(stored), [item])))
        old, new = _leaf(base, key), _leaf(given, key)
        if key in RESUMABLE or new == old:
            apply_overrides(merged, [item])
            continue
        if key == "data.path":
            candidate = from_dict(ExperimentConfig, apply_overrides(to_dict(stored), [item]))
            if _same_data(meta, candidate):
                apply_overrides(merged, [item])  # the same images elsewhere
                continue
            if not allow_changes:
                raise ConfigError(
                    f"--resume: {run_dir} was trained on {old!r}; {new!r} holds other images. Continue "
                    "with the run's own data, train into another --out, or pass --allow-changes to "
                    "train on with this data (the run's history keeps what it was trained on)"
                )
        if key.startswith(NEVER) or key in NEVER:
            raise ConfigError(
                f"--resume: {run_dir} was trained with {key}={old!r}, the option gives {new!r}, which "
                "would make another model: leave it out, or train into another --out"
            )
        if not allow_changes:
            raise ConfigError(
                f"--resume: {run_dir} was trained with {key}={old!r}, the option gives {new!r}; "
                "leave it out to continue the run as it was trained, pass --allow-changes to change it "
                "(recorded in the run's history), or train into another --out"
            )
        apply_overrides(merged, [item])
    return from_dict(ExperimentConfig, merged).validate()


def _differences(a: Any, b: Any, prefix: str = "") -> dict[str, list[Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: dict[str, list[Any]] = {}
        for k in sorted(set(a) | set(b)):
            out.update(_differences(a.get(k), b.get(k), f"{prefix}{k}."))
        return out
    return {} if a == b else {prefix.rstrip("."): [a, b]}


def record_continuation(run_dir: Path, config: ExperimentConfig, how: str) -> None:
    """Append to the run's history what this invocation continues it with (every option that differs from the
    record, and the data it was trained on until now when that changes), before it trains: the record of a run
    names everything it was trained with, not only the latest."""
    import datetime as dt

    meta, stored = read_checkpoint_meta(run_dir)
    changed = _differences(to_dict(stored), to_dict(config))
    entry: dict[str, Any] = {
        "at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "edgead_version": __version__,
        "how": how,
        "changed": changed,
    }
    if "data.path" in changed:
        entry["trained_on_before"] = meta.get("dataset")
    meta = {**meta, "history": [*(meta.get("history") or []), entry]}
    if distributed.is_main():
        atomic_write(Path(run_dir) / CONFIG_FILE, to_yaml(meta))


def record_budget_cuts(run_dir: Path, cuts: dict[str, dict[str, int]]) -> None:
    """Keep in the run's record which stages the time budget cut below their plan (export copies it into the
    bundle and says so): a stage cut to 2 of 450 steps is complete, but barely trained."""
    meta, _ = read_checkpoint_meta(run_dir)
    meta = {**meta, "cut_by_budget": {**(meta.get("cut_by_budget") or {}), **cuts}}
    if distributed.is_main():
        atomic_write(Path(run_dir) / CONFIG_FILE, to_yaml(meta))
