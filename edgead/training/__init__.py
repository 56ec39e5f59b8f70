"""PyTorch training (needs ``pip install "edgead[train]"``); never imported by the runtime.

Shared pieces live here (checkpoints, the optimisation loop, device-resident training images,
the ImageNet backbone); each method's networks and trainer live in a folder of their own.
"""

from __future__ import annotations

from pathlib import Path

from ..core.config import ExperimentConfig
from ..core.errors import ConfigError


def train(config: ExperimentConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
          stage: str = "all") -> dict:
    """Train ``config.method`` into ``run_dir`` through the method registry.

    ``stage``: one of the method's training stages (``MethodSpec.train_stages``), or all of them.
    """
    from ..methods import get_method

    if config.data.path is None:
        raise ConfigError("no training data: pass --data DIR or set data.path in the config")
    _check_run_folder(Path(run_dir))
    spec = get_method(config.method)
    trainer = spec.load("trainer")
    if stage == "all":
        return trainer(config, Path(run_dir), resume=resume, progress=progress)
    if stage not in spec.train_stages:
        valid = ", ".join(("all", *spec.train_stages))
        raise ConfigError(f"--stage must be one of {valid} for {spec.name}; got {stage!r}")
    return trainer(config, Path(run_dir), resume=resume, progress=progress, stage=stage)


def _check_run_folder(run_dir: Path) -> None:
    """A run goes into a new or empty folder, or one that holds a run: never among other files."""
    from .checkpoint import CONFIG_FILE

    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file; give a folder for the training run")
    others = [e.name for e in run_dir.iterdir() if e.name != "train_log.jsonl"] if run_dir.is_dir() else []
    if others and not (run_dir / CONFIG_FILE).is_file():  # a log alone: a start that failed early
        raise ConfigError(f"--out {run_dir} holds other files and no training run; train into a new or empty "
                          "folder (nothing was changed)")
