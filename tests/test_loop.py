"""The shared training loop: time limit, logs from the first step, progress lines in log files."""

import json
import time

import pytest
import torch

from edgead.core.errors import EdgeadError
from edgead.training.loop import run_loop


def _stepper(seconds=0.0, values=None):
    calls = []

    def step():
        calls.append(1)
        time.sleep(seconds)
        v = values[len(calls) - 1] if values else 1.0 / len(calls)
        return {"loss": torch.tensor(v)}

    return step, calls


def test_stops_before_a_step_that_would_overrun_the_time_limit(tmp_path):
    step, calls = _stepper(seconds=0.05)
    saves = []
    t0 = time.perf_counter()
    out = run_loop(
        "t",
        step,
        lambda s, e, t: saves.append(s),
        0,
        1000,
        0.0,
        tmp_path / "log.jsonl",
        max_minutes=0.4 / 60,
        progress=False,
    )
    took = time.perf_counter() - t0
    assert out.stopped_by_time_limit and out.steps == len(calls) < 1000
    assert took < 0.4 + 0.03, "a step was started although it could not finish inside the limit"
    assert saves == [out.steps]  # the checkpoint of the last step is kept


def test_log_has_the_first_step_then_every_n_and_the_last(tmp_path):
    step, _ = _stepper(values=[4.0, 2.0, 2.0, 1.0, 3.0])
    run_loop("t", step, lambda s, e, t: None, 0, 5, 0.0, tmp_path / "log.jsonl", log_every=2, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 4, 5]
    assert [r["loss"] for r in lines] == [4.0, 2.0, 1.5, 3.0]  # means since the previous line


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path, capsys):
    step, _ = _stepper()
    run_loop("train x", step, lambda s, e, t: None, 0, 3, 0.0, tmp_path / "log.jsonl", progress=True, line_every_s=0.0)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and err[0].startswith("train x: step 1/3") and "steps/s eta" in err[0]


def test_divergence_is_a_clear_error(tmp_path):
    step, _ = _stepper(values=[1.0, float("nan")])
    with pytest.raises(EdgeadError, match="diverged at step 2"):
        run_loop("t", step, lambda s, e, t: None, 0, 5, 0.0, tmp_path / "log.jsonl", log_every=1, progress=False)


def test_resumed_run_keeps_counting(tmp_path):
    step, calls = _stepper()
    out = run_loop("t", step, lambda s, e, t: None, 7, 10, 12.0, tmp_path / "log.jsonl", progress=False)
    assert len(calls) == 3 and out.steps == 10 and out.elapsed_s >= 12.0


def test_sigterm_saves_the_checkpoint_like_ctrl_c(tmp_path):
    """A service manager or scheduler stops training with SIGTERM: the last finished step is saved."""
    import os
    import signal

    saves = []

    def step():
        if len(saves) == 0 and step.calls == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives during the 4th step, before it finishes
        step.calls += 1
        return {"loss": torch.tensor(1.0)}

    step.calls = 0
    with pytest.raises(KeyboardInterrupt):
        run_loop("t", step, lambda s, e, t: saves.append(s), 0, 100, 0.0, tmp_path / "log.jsonl", progress=False)
    assert saves == [3]  # the last finished step
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is the process's again


def test_a_stage_that_would_take_hours_says_so_early(tmp_path, caplog):
    from edgead.training.loop import long_run_warning

    step, calls = _stepper(seconds=0.02)
    run_loop(
        "train denoiser",
        step,
        lambda s, e, t: None,
        0,
        10_000_000,
        0.0,
        tmp_path / "log.jsonl",
        progress=False,
        max_minutes=0.2 / 60,
    )
    (line,) = [r.message for r in caplog.records if "take about" in r.message]
    assert line.startswith("train denoiser: at ") and "--max-minutes" in line and "--method d3ad --preset s" in line
    assert long_run_warning("x", rate=10.0, remaining=30_000) is None  # 50 minutes: no warning
    assert "about 2.0 h" in long_run_warning("x", rate=1.0, remaining=7200)


_LONG_STEP = """
import pathlib, sys, torch
from edgead.training.loop import run_loop
torch.set_num_threads(1)
a = torch.randn(7000, 7000)
marker = pathlib.Path(sys.argv[1])
def step():
    marker.write_text("in step")
    torch.mm(a, a)  # one call into PyTorch (minutes of work): no Python signal handler runs inside it
    marker.write_text("step done")
    return {"loss": torch.tensor(1.0)}
run_loop("autoencoder", step, lambda s, e, t: None, 0, 5, 0.0, pathlib.Path(sys.argv[2]), progress=False)
"""


def test_ctrl_c_inside_a_long_step_is_answered_at_once_and_a_second_quits(tmp_path):
    """A Ctrl-C that lands inside one long PyTorch call was silent until the call ended (2.5 minutes for a 256-px
    DiffusionAD step on a CPU): the first is acknowledged while the call still runs, the second ends the process."""
    import signal
    import subprocess
    import sys

    marker = tmp_path / "marker"
    child = subprocess.Popen(
        [sys.executable, "-c", _LONG_STEP, str(marker), str(tmp_path / "log.jsonl")],
        stderr=subprocess.PIPE,
        text=True,
        # as at a terminal: under a CI runner that started the tests in the background, SIGINT arrives ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while not (marker.is_file() and marker.read_text() == "in step"):
            assert time.monotonic() < deadline and child.poll() is None, "the step never started"
            time.sleep(0.05)
        time.sleep(0.3)
        child.send_signal(signal.SIGINT)
        said = child.stderr.readline() + child.stderr.readline()
        assert "stopping once the step in hand ends" in said
        assert marker.read_text() == "in step"  # answered while the call still runs
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=30) == 130
        assert marker.read_text() == "in step"  # it quit inside the call, not after it
        assert "quitting at once" in child.stderr.read()
    finally:
        child.kill()
        child.wait()
