"""Runs trained in stages (latent methods: autoencoder -> denoiser -> ...), each one resumable.

The run's config.yaml records, per stage, the steps done and whether it is complete; each stage
keeps its optimiser in ``trainer_state_<stage>.pt``. A complete stage is skipped; a started one
continues only with ``--resume``; a stage whose prerequisites are missing is a clear error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..core.config import ExperimentConfig
from ..core.errors import EdgeadError
from .checkpoint import (
    CONFIG_FILE,
    check_same_model,
    read_checkpoint_meta,
    save_checkpoint,
    save_trainer_state,
)

log = logging.getLogger(__name__)


class StagedRun:
    def __init__(
        self, run_dir: Path, config: ExperimentConfig, resume: bool, stages: tuple[str, ...], network: Any = None
    ):
        self.run_dir, self.config, self.resume, self.order = Path(run_dir), config, resume, stages
        self.network = network
        """Recorded in config.yaml, so that export builds the networks the run trained."""
        self.meta: dict[str, Any] = {}
        if (self.run_dir / CONFIG_FILE).is_file():
            self.meta, stored = read_checkpoint_meta(self.run_dir)
            check_same_model(self.run_dir, stored, config)
        self.progress: dict[str, dict[str, Any]] = dict(self.meta.get("stages", {}))

    def complete(self, stage: str) -> bool:
        return bool(self.progress.get(stage, {}).get("complete"))

    def require(self, stage: str, *before: str) -> None:
        missing = [s for s in before if not self.complete(s)]
        if missing:
            raise EdgeadError(
                f"stage {stage} needs the stages {', '.join(missing)} first "
                f"(edgead train --out {self.run_dir} --stage {missing[0]})"
            )

    def start(self, stage: str) -> dict[str, Any] | None:
        """The stage's trainer state to continue from (None: start fresh)."""
        started = stage in self.progress
        if started and not self.resume:
            raise EdgeadError(
                f"{self.run_dir}: stage {stage} was started before; pass --resume to continue it "
                "(nothing was overwritten)"
            )
        f = self.run_dir / f"trainer_state_{stage}.pt"
        if started and f.is_file():
            return torch.load(f, map_location="cpu", weights_only=True)
        return None

    def save(
        self,
        stage: str,
        modules: dict[str, torch.nn.Module],
        step: int,
        seconds: float,
        total: int,
        optimiser: torch.optim.Optimizer | None = None,
        extra: dict[str, Any] | None = None,
        planned: int | None = None,
    ) -> None:
        """``total``: the steps this stage runs; ``planned``: what the configuration asked (more, when a budget
        cut the stage short)."""
        self.progress[stage] = {
            "steps_done": step,
            "steps": total,
            "complete": step >= total,
            "seconds": round(seconds, 1),
            **({"planned_steps": planned} if planned is not None and planned != total else {}),
            **(extra or {}),
        }
        state = {"optimiser": optimiser.state_dict(), "step": step, "elapsed_s": seconds} if optimiser else None
        keep = {k: v for k, v in self.meta.items() if k not in ("edgead_version", "method", "network", "config")}
        if state is not None:  # before the config that says the stage has reached this step
            save_trainer_state(self.run_dir / f"trainer_state_{stage}.pt", state)
        self.meta = save_checkpoint(
            self.run_dir,
            self.config,
            self.network,
            modules,
            None,
            {**keep, "stages": self.progress, "steps_done": step},
        )

    def record(self, key: str, value: Any) -> None:
        """Keep a value in the run's metadata (e.g. the latent scale)."""
        self.meta[key] = value


def require_complete(meta: dict[str, Any], needed: list[str], run_dir: Path) -> dict[str, dict[str, Any]]:
    """The run's stage records; EdgeadError naming the first stage of ``needed`` that is unfinished."""
    stages = meta.get("stages", {})
    missing = [s for s in needed if not stages.get(s, {}).get("complete")]
    if missing:
        raise EdgeadError(
            f"{run_dir} is not fully trained: stage {missing[0]} is missing or unfinished "
            f"(edgead train --out {run_dir} --resume)"
        )
    return stages
