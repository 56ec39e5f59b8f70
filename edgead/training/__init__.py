"""PyTorch training (needs ``pip install "edgead[train]"``); never imported by the runtime.

Shared pieces live here (checkpoints, the optimisation loop, device-resident training images,
the ImageNet backbone); each method's networks and trainer live in a folder of their own.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from ..core.config import ExperimentConfig
from ..core.errors import ConfigError
from .budget import plan

log = logging.getLogger(__name__)


def train(
    config: ExperimentConfig, run_dir: str | Path, resume: bool = False, progress: bool = True, stage: str = "all"
) -> dict:
    """Train ``config.method`` into ``run_dir`` through the method registry.

    ``stage``: one of the method's training stages (``MethodSpec.train_stages``), or all of them.
    """
    from ..methods import get_method

    if config.data.path is None:
        raise ConfigError("no training data: pass --data DIR or set data.path in the config")
    _check_run_folder(Path(run_dir))
    spec = get_method(config.method)
    if stage != "all" and stage not in spec.train_stages:
        valid = ", ".join(("all", *spec.train_stages))
        raise ConfigError(f"--stage must be one of {valid} for {spec.name}; got {stage!r}")
    trainer = spec.load("trainer")
    from ..core.progress import report
    from . import distributed

    report("train", 0, None, _plan_line(config, spec, stage))  # after the checks above and the data's

    joined = distributed.setup(config.train.device)  # under torchrun: one of several training processes
    progress = progress and distributed.is_main()
    budget = plan(
        config.train.max_minutes,
        spec.budget,
        spec.budget_reserve,
        stage,
        _complete_stages(Path(run_dir)),
        fill=config.train.fill_budget,
        fixed=spec.budget_fixed,
    )
    from .checkpoint import CONFIG_FILE, record_continuation

    if (Path(run_dir) / CONFIG_FILE).is_file() and (resume or stage != "all"):
        record_continuation(Path(run_dir), config, "resume" if stage == "all" else f"stage {stage}")
    try:
        with budget.active() if budget is not None else contextlib.nullcontext():
            if stage == "all":
                summary = trainer(config, Path(run_dir), resume=resume, progress=progress)
            else:
                summary = trainer(config, Path(run_dir), resume=resume, progress=progress, stage=stage)
    finally:
        if joined:
            distributed.teardown()
    if joined:
        summary = {**summary, "processes": int(os.environ["WORLD_SIZE"])}
    if budget is not None:
        summary = {
            **summary,
            "budget_minutes": config.train.max_minutes,
            "budget_filled": budget.fill,
            "budget_used_minutes": round((budget.seconds - budget.left()) / 60.0, 2),
        }
        if budget.cuts:
            from .checkpoint import record_budget_cuts

            record_budget_cuts(Path(run_dir), budget.cuts)
            summary["cut_by_budget"] = budget.cuts
            warn_cuts(budget.cuts, "this run")
    return summary


BARELY_TRAINED = 0.5
"""A stage the budget cut below this share of its planned steps is said to be barely trained."""


def warn_cuts(cuts: dict[str, dict[str, int]], what: str) -> list[str]:
    """One loud line per stage the budget cut far below its plan (training's summary and export say it)."""
    lines = [
        f"{what}: the time budget cut stage {stage} to {c['steps']} of its {c['planned']} planned steps "
        f"({c['steps'] / max(c['planned'], 1):.0%}): its network is barely trained and its maps may be noise; "
        "train with a larger --max-minutes (or without one)"
        for stage, c in cuts.items()
        if c["steps"] < BARELY_TRAINED * c["planned"]
    ]
    for line in lines:
        log.warning(line)
    return lines


def _plan_line(config: ExperimentConfig, spec, stage: str) -> str:
    """What is about to happen, said before the first step (which can take minutes on a CPU); reading the data's
    layout first, a missing folder is one error line, not a plan and then an error."""
    from ..data.datasets import load_dataset
    from .data import pick_device

    roots = config.data.path if isinstance(config.data.path, list) else [config.data.path]
    images = sum(len(load_dataset(r, config.data.validation_fraction, config.data.split_seed).train) for r in roots)
    t = config.train
    budget = f"a {t.max_minutes:g}-minute budget" if t.max_minutes else "no time budget"
    stages = ", ".join(spec.train_stages) if stage == "all" else stage
    return (
        f"training {spec.name} (preset {config.model.preset}, {config.data.image_size} px, batch "
        f"{t.batch_size or 'of the preset'}) "
        f"on {pick_device(t.device)} from {images} training images, {budget}; stages: {stages or 'one'}. Each stage "
        "shows its progress and time "
        "left once it has run a few steps; Ctrl-C stops after the step in hand and keeps a checkpoint"
    )


def _complete_stages(run_dir: Path) -> set[str]:
    """The stages a run folder already holds complete (resume skips them; the budget leaves them out)."""
    from .checkpoint import CONFIG_FILE, read_checkpoint_meta

    if not (run_dir / CONFIG_FILE).is_file():
        return set()
    meta, _ = read_checkpoint_meta(run_dir)
    stages = meta.get("stages") or {}
    return {name for name, record in stages.items() if isinstance(record, dict) and record.get("complete")}


def _check_run_folder(run_dir: Path) -> None:
    """A run goes into a new or empty folder, or one that holds a run: never among other files."""
    from .checkpoint import CONFIG_FILE

    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file; give a folder for the training run")
    others = [e.name for e in run_dir.iterdir() if e.name != "train_log.jsonl"] if run_dir.is_dir() else []
    if others and not (run_dir / CONFIG_FILE).is_file():  # a log alone: a start that failed early
        raise ConfigError(
            f"--out {run_dir} holds other files and no training run; train into a new or empty "
            "folder (nothing was changed)"
        )
