"""One time budget for a whole run (--max-minutes): split over the stages, always ending exportable;
a run stopped early resumes to the result of an uninterrupted one."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file

from edgead.core.config import load_config
from edgead.training import train
from edgead.training.budget import Budget, plan, using_clock
from edgead.training.loop import run_loop

from .conftest import TINY, edgead_cli

pytestmark = pytest.mark.slow  # the inner loop, pytest -m "not slow", leaves these out


class Ticking:
    """A clock that advances by ``tick`` seconds each time it is read: budgets, loops and deadlines then see the
    same durations on a quiet machine and a loaded one (the code reads it a fixed number of times a step)."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _slow_step(clock: Ticking, seconds: float):
    def step():
        clock.advance(seconds)  # a step that takes ``seconds`` on the run's clock
        return {"loss": torch.tensor(1.0)}

    return step


def test_a_stage_takes_its_share_and_the_next_gets_what_is_left(tmp_path):
    clock = Ticking(1e-4)
    saves = []
    with using_clock(clock):
        budget = Budget(0.8, {"a": 1.0, "b": 1.0})
        with budget.active():
            a = run_loop(
                "a",
                _slow_step(clock, 0.02),
                lambda s, e, t: saves.append((s, t)),
                0,
                10_000,
                0.0,
                tmp_path / "l",
                progress=False,
                stage="a",
            )
            left_for_b = budget.stage_seconds("b")
            b = run_loop(
                "b",
                _slow_step(clock, 0.02),
                lambda s, e, t: None,
                0,
                10_000,
                0.0,
                tmp_path / "l",
                progress=False,
                stage="b",
            )
    assert a.stopped_by_time_limit and 5 < a.steps < 10_000
    assert saves[-1] == (a.steps, a.steps)  # the steps done became the plan: the stage is complete
    assert budget.done == {"a", "b"}
    assert left_for_b == pytest.approx(0.8 - a.elapsed_s, abs=0.1)  # b's share: all that a left
    assert b.steps > 5


def test_a_budget_counts_only_the_stages_this_invocation_runs():
    shares = (("autoencoder", 0.35), ("denoiser", 0.5), ("adapt", 0.15))
    assert plan(None, shares, 0.1, "all", set()) is None
    filled = plan(10, shares, 0.1, "all", set(), fill=True, fixed=("adapt",))
    assert filled.fills("denoiser") and not filled.fills("adapt") and not filled.fills("prior")
    whole = plan(10, shares, 0.1, "all", {"autoencoder"})  # a resumed run: the autoencoder is done
    assert set(whole.shares) == {"denoiser", "adapt"} and whole.reserve == 0.1
    assert whole.stage_seconds("denoiser") == pytest.approx(600 * 0.9 * 0.5 / 0.65, rel=1e-3)
    one = plan(2, shares, 0.1, "denoiser", set())  # --stage denoiser: all of it
    assert one.shares == {"denoiser": 0.5} and one.stage_seconds("denoiser") == pytest.approx(120, rel=1e-3)


def test_the_lost_run_ends_exportable_inside_its_budget(demo_data, tmp_path, caplog):
    """The issue's case: steps far beyond the budget used to stop the autoencoder unfinished and lose the run. The
    run's clock ticks each time it is read, so the steps a share holds do not depend on the machine's load."""
    from edgead.export.flow import export_run

    budget_s = 12.0
    cfg = load_config(
        None,
        [
            "method=d3ad",
            f"data.path={demo_data}",
            *TINY,
            "d3ad.knn_k=5",
            "train.steps=100000",
            "d3ad.autoencoder.steps=100000",
            f"train.max_minutes={budget_s / 60}",
        ],
    )
    with using_clock(Ticking(0.1)):
        summary = train(cfg, tmp_path / "run", progress=False)
    stages = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["stages"]
    assert all(stages[s]["complete"] for s in ("autoencoder", "denoiser", "adapt", "prior", "patches"))
    for s in ("autoencoder", "denoiser"):
        assert stages[s]["planned_steps"] == 100000 and 0 < stages[s]["steps"] == stages[s]["steps_done"] < 100000
    assert sum(stages[s]["seconds"] for s in ("autoencoder", "denoiser", "adapt")) <= budget_s * 0.8 + 3.0
    assert summary["budget_minutes"] == budget_s / 60
    cuts = summary["cut_by_budget"]  # said loudly: complete, but far below the plan
    assert {s: cuts[s]["planned"] for s in ("autoencoder", "denoiser")} == {"autoencoder": 100000, "denoiser": 100000}
    barely = [r.message for r in caplog.records if "barely trained" in r.message]
    assert any("stage autoencoder to" in m and "of its 100000 planned steps" in m for m in barely)
    caplog.clear()
    bundle, parity = export_run(tmp_path / "run", tmp_path / "b.edgead", parity_images=2, progress=False)
    assert parity["passed"] and bundle.manifest.calibration is not None
    assert bundle.manifest.provenance["training"]["cut_by_budget"] == cuts  # the bundle keeps it
    assert any("barely trained" in r.message for r in caplog.records)  # and export says it again


def test_a_run_stopped_early_resumes_to_the_uninterrupted_result(demo_data, tmp_path, monkeypatch):
    import edgead.methods.diffusionad.train as trainer
    from edgead.training.checkpoint import resume_config

    overrides = [f"data.path={demo_data}", "train.steps=8", *TINY]
    train(load_config(None, overrides), tmp_path / "whole", progress=False)

    real = trainer.run_loop

    def stopped_after_five(name, step_fn, *args, **kwargs):
        calls = []

        def step():
            if len(calls) == 5:
                raise KeyboardInterrupt  # Ctrl-C, SIGTERM or a lost machine after 5 steps
            calls.append(1)
            return step_fn()

        return real(name, step, *args, **kwargs)

    monkeypatch.setattr(trainer, "run_loop", stopped_after_five)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(None, overrides), tmp_path / "stopped", progress=False)
    monkeypatch.setattr(trainer, "run_loop", real)
    assert yaml.safe_load((tmp_path / "stopped" / "config.yaml").read_text())["steps_done"] == 5
    summary = train(
        resume_config(tmp_path / "stopped", ["train.max_minutes=5"]), tmp_path / "stopped", resume=True, progress=False
    )
    assert summary["steps"] == 8 and summary["budget_minutes"] == 5
    for name in ("denoiser", "segmenter"):
        whole, resumed = (load_file(str(tmp_path / r / f"{name}.safetensors")) for r in ("whole", "stopped"))
        assert all(torch.equal(whole[k], resumed[k]) for k in whole), name


def test_a_filled_budget_plans_the_steps_its_share_holds(tmp_path):
    """--fill-budget: the stage runs past the preset's 3 steps for its whole share, planned once from the rate."""
    from edgead.training.loop import filled_steps

    assert filled_steps(10, 4.0, 2.5) == 19 and filled_steps(10, 4.0, -1.0) == 10
    clock = Ticking(1e-4)
    saves, snapshots = [], []
    with using_clock(clock):
        budget = Budget(1.2, {"a": 1.0}, fill=True)
        with budget.active():
            a = run_loop(
                "a",
                _slow_step(clock, 0.01),
                lambda s, e, t: saves.append((s, t)),
                0,
                3,
                0.0,
                tmp_path / "l",
                progress=False,
                stage="a",
                save_when=lambda s, t: s == t // 2 and not snapshots.append(s),
            )
    assert a.steps > 30  # far past the 3 steps asked
    assert a.elapsed_s == pytest.approx(1.2, abs=0.35)  # the whole share used
    assert saves[-1] == (a.steps, a.steps) and budget.done == {"a"}
    assert snapshots == [a.steps // 2]  # placed by the final total


def test_a_filled_stage_stopped_before_its_plan_stays_unfinished(tmp_path):
    """Ctrl-C in the warm-up: the record must not call the stage complete at the preset's 2 steps."""
    calls, saves = [], []

    def step():
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        return {"loss": torch.tensor(1.0)}

    with Budget(60.0, {"a": 1.0}, fill=True).active(), pytest.raises(KeyboardInterrupt):
        run_loop("a", step, lambda s, e, t: saves.append((s, t)), 0, 2, 0.0, tmp_path / "l", progress=False, stage="a")
    assert saves == [(3, 4)]  # 3 steps done of a plan not made yet: unfinished, resumable


def test_a_filled_budget_trains_longer_and_ends_exportable(demo_data, tmp_path):
    from edgead.export.flow import export_run

    budget_s = 15.0
    cfg = load_config(
        None,
        [
            "method=d3ad",
            f"data.path={demo_data}",
            *TINY,
            "d3ad.knn_k=5",
            "train.steps=3",
            "d3ad.autoencoder.steps=3",
            f"train.max_minutes={budget_s / 60}",
            "train.fill_budget=true",
        ],
    )
    with using_clock(Ticking(0.1)):
        summary = train(cfg, tmp_path / "run", progress=False)
    stages = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["stages"]
    assert all(stages[s]["complete"] for s in ("autoencoder", "denoiser", "adapt", "prior", "patches"))
    for s in ("autoencoder", "denoiser"):
        assert stages[s]["planned_steps"] == 3 and stages[s]["steps"] == stages[s]["steps_done"] > 3
    assert "planned_steps" not in stages["adapt"]  # the method's one epoch (MethodSpec.budget_fixed), not filled
    looped = sum(stages[s]["seconds"] for s in ("autoencoder", "denoiser", "adapt"))
    assert budget_s * 0.8 * 0.7 <= looped <= budget_s * 0.8 + 2.0  # the loop stages used their shares
    assert summary["budget_filled"] is True
    _, parity = export_run(tmp_path / "run", tmp_path / "b.edgead", parity_images=2, progress=False)
    assert parity["passed"]


def test_fill_budget_needs_a_budget(demo_data, tmp_path):
    r = edgead_cli("train", "--method", "d3ad", "--data", demo_data, "--out", tmp_path / "run", "--fill-budget")
    assert r.returncode != 0 and "needs a budget to fill: give --max-minutes" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()
