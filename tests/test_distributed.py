"""Several training processes with PyTorch DistributedDataParallel (torchrun, gloo on the CPU): the same
samples per step as one process, one writer, a run that exports like any other."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

pytestmark = pytest.mark.slow  # the inner loop, pytest -m "not slow", leaves these out

COMMON = [
    "--preset",
    "tiny",
    "--image-size",
    "64",
    "--batch-size",
    "4",
    "--device",
    "cpu",
    "--set",
    "train.learning_rate=1e-3",
    "--set",
    "train.checkpoint_every=1000",
]
"""The one-process reference is conftest's ``tiny_run``: the same settings, 30 steps."""


def _train(*args):
    return subprocess.run(
        [sys.executable, "-m", "edgead.cli", "train", *map(str, args)], capture_output=True, text=True, timeout=600
    )


def _log(run):
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_see_the_samples_of_one_and_learn_alike(tiny_run, demo_data, tmp_path):
    from edgead.export.flow import export_run

    two = _train(
        "--method", "diffusionad", "--data", demo_data, "--out", tmp_path / "two", "--steps", 30, *COMMON, "--nproc", 2
    )
    assert two.returncode == 0, two.stderr[-2000:]
    summary = json.loads(two.stdout)  # one summary: process 0's
    assert summary["processes"] == 2 and summary["steps"] == 30
    for run in (tiny_run, tmp_path / "two"):  # 30 steps of 4 images: each of the two processes drew 2 of every 4
        meta = yaml.safe_load((run / "config.yaml").read_text())
        assert meta["steps_done"] == 30 and meta["config"]["train"]["batch_size"] == 4
    log_one, log_two = _log(tiny_run), _log(tmp_path / "two")
    assert [r["step"] for r in log_two] == [r["step"] for r in log_one] == [1, 30]  # one writer, no doubles
    assert log_two[-1]["total"] < log_two[0]["total"]
    assert 0.5 < log_two[-1]["total"] / log_one[-1]["total"] < 2.0
    bundle, parity = export_run(tmp_path / "two", tmp_path / "two.edgead", parity_images=2, progress=False)
    assert parity["passed"]


@pytest.mark.slow
def test_a_latent_method_trains_every_stage_on_two_processes(demo_data, tmp_path):
    from edgead.export.flow import export_run

    r = _train(
        "--method",
        "d3ad",
        "--data",
        demo_data,
        "--out",
        tmp_path / "run",
        "--steps",
        3,
        *COMMON,
        "--set",
        "d3ad.knn_k=5",
        "--set",
        "d3ad.autoencoder.steps=4",
        "--nproc",
        2,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    stages = json.loads(r.stdout)["stages"]
    assert all(stages[s]["complete"] for s in ("autoencoder", "denoiser", "adapt", "prior", "patches"))
    bundle, parity = export_run(tmp_path / "run", tmp_path / "b.edgead", parity_images=2, progress=False)
    assert parity["passed"]


@pytest.mark.slow
def test_two_processes_fill_a_budget_with_one_plan(demo_data, tmp_path):
    """Each process times its own warm-up; they must plan the same steps at the same step, or DDP hangs."""
    r = _train(
        "--method",
        "diffusionad",
        "--data",
        demo_data,
        "--out",
        tmp_path / "run",
        "--steps",
        3,
        *COMMON,
        "--max-minutes",
        0.2,
        "--fill-budget",
        "--nproc",
        2,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    assert summary["processes"] == 2 and summary["budget_filled"] and summary["steps"] > 3
    meta = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert meta["steps_done"] == meta["steps"] == summary["steps"] and meta["planned_steps"] == 3


def test_a_batch_the_processes_cannot_share_is_refused(monkeypatch):
    from edgead.core.errors import ConfigError
    from edgead.training import distributed

    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    assert distributed.local_batch(12) == 4
    with pytest.raises(ConfigError, match="^train.batch_size 16 must be a multiple of the 3 training processes$"):
        distributed.local_batch(16)


@pytest.mark.slow
def test_a_failing_training_process_is_one_error_line(demo_data, tmp_path):
    """torchrun's own traceback and failure report are left out: one line with the process's reason."""
    r = _train("--data", tmp_path / "missing", "--out", tmp_path / "r", "--steps", 3, *COMMON, "--nproc", 2)
    assert r.returncode != 0 and "Traceback" not in r.stderr and "ChildFailedError" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: a training process failed: dataset folder not found: {tmp_path / 'missing'}"]


def test_a_killed_training_process_is_named():
    from edgead.cli.train import _why

    report = (
        "Traceback (most recent call last):\n...\nRoot Cause (first observed failure):\n[0]:\n"
        "  rank      : 1 (local_rank: 1)\n  exitcode  : -9 (pid: 4242)\n"
    )
    assert _why([], report, 1) == "process 1 was killed by signal 9 (run without --nproc to see why)"
    assert _why(["error: out of memory\n", "error: other\n"], report, 1) == "out of memory"
