"""Training checkpoints: weights as safetensors, the full configuration as YAML.

    <run>/config.yaml            ExperimentConfig + resolved network + edgead version
    <run>/<module>.safetensors   one file per network
    <run>/trainer_state.pt       optimiser state and step, for --resume
    <run>/train_log.jsonl        one line of losses per logged step

Files are written to a temporary name and renamed, so an interrupted save never leaves a
half-written checkpoint behind.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from .. import __version__
from ..config import ExperimentConfig, from_dict, to_dict
from ..errors import ConfigError, EdgeadError

CONFIG_FILE = "config.yaml"
STATE_FILE = "trainer_state.pt"


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(
    run_dir: Path,
    config: ExperimentConfig,
    network: Any,
    modules: dict[str, torch.nn.Module],
    state: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "edgead_version": __version__,
        "method": config.method,
        "network": to_dict(asdict(network)) if network is not None else None,
        "config": to_dict(config),
        **(extra or {}),
    }
    for name, module in modules.items():
        tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        _atomic(run_dir / f"{name}.safetensors", lambda p, t=tensors: save_file(t, str(p)))
    if state is not None:
        _atomic(run_dir / STATE_FILE, lambda p: torch.save(state, p))
    _atomic(run_dir / CONFIG_FILE, lambda p: p.write_text(yaml.safe_dump(meta, sort_keys=False)))


def read_checkpoint_meta(run_dir: str | Path) -> tuple[dict[str, Any], ExperimentConfig]:
    d = Path(run_dir)
    f = d / CONFIG_FILE
    if not f.is_file():
        raise EdgeadError(f"{d} is not a training run: {CONFIG_FILE} is missing (train with 'edgead train')")
    try:
        meta = yaml.safe_load(f.read_text())
        config = from_dict(ExperimentConfig, meta["config"]).validate()
    except (yaml.YAMLError, KeyError, TypeError, ConfigError) as exc:
        raise EdgeadError(f"{f} is corrupt: {exc}") from None
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


def load_trainer_state(run_dir: Path) -> dict[str, Any] | None:
    f = Path(run_dir) / STATE_FILE
    return torch.load(f, map_location="cpu", weights_only=True) if f.is_file() else None
