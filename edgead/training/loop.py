"""The optimisation loop every trainer stage shares: time limit, checkpoints, logs, progress.

A stage supplies ``step() -> {name: loss tensor}`` (it does its own backward and optimiser step)
and ``save(step, elapsed_s)``. The loop never synchronises with the GPU on a normal step: losses
are summed on the device and read back only when a log line is due, so a fast GPU is never
stalled by the host.

- ``train_log.jsonl`` gets a line at the first step of every invocation, then every
  ``log_every`` steps and at the last step (mean losses since the previous line).
- On a terminal, a tqdm bar; otherwise (a log file, CI, ``nohup``) one progress line on
  stderr every ``line_every_s`` seconds with steps/s, ETA and losses.
- ``max_minutes`` limits this invocation: the loop stops *before* a step that would overrun,
  judged by the mean duration of recent steps, and saves.
- After a few steps, a stage whose estimate passes ``LONG_RUN_S`` says so once, with the options
  that finish sooner (a 256-px DiffusionAD on a CPU would otherwise run for weeks in silence).
- Ctrl-C and SIGTERM (a service manager, ``kill``, a batch scheduler's time limit) both save the
  checkpoint of the last finished step before the process ends.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.errors import EdgeadError

log = logging.getLogger(__name__)


@dataclass
class LoopResult:
    steps: int
    elapsed_s: float
    stopped_by_time_limit: bool
    losses: dict[str, float]
    steps_per_s: float

    def summary(self) -> dict:
        return {"steps": self.steps, "elapsed_s": round(self.elapsed_s, 1),
                "stopped_by_time_limit": self.stopped_by_time_limit,
                "steps_per_s": round(self.steps_per_s, 2), **self.losses}


class _Progress:
    """tqdm on a terminal, plain lines elsewhere, nothing when disabled."""

    def __init__(self, name: str, start: int, total: int, enabled: bool, line_every_s: float):
        self.name, self.total, self.line_every_s = name, total, line_every_s
        self.bar = None
        self.lines = enabled and not sys.stderr.isatty()
        self.last_line = -math.inf  # the first step always gets a line
        if enabled and not self.lines:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, desc=name, unit="step", dynamic_ncols=True)

    def due(self) -> bool:
        return self.lines and time.perf_counter() - self.last_line >= self.line_every_s

    def update(self, step: int, rate: float, losses: dict[str, float] | None, line: bool) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if losses:
                self.bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()})
        elif line and losses is not None:
            left = (self.total - step) / rate if rate > 0 else float("nan")
            eta = time.strftime("%H:%M:%S", time.gmtime(left)) if math.isfinite(left) else "?"
            parts = " ".join(f"{k} {v:.4f}" for k, v in losses.items())
            sys.stderr.write(f"{self.name}: step {step}/{self.total} ({step / self.total:.1%}) "
                             f"{rate:.2f} steps/s eta {eta} | {parts}\n")
            sys.stderr.flush()
            self.last_line = time.perf_counter()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


LONG_RUN_S = 3600.0
ESTIMATE_AFTER_STEPS = 3


def long_run_warning(name: str, rate: float, remaining: int) -> str | None:
    """The one warning for a stage whose remaining steps take more than an hour at the measured rate."""
    seconds = remaining / rate if rate > 0 else math.inf
    if seconds <= LONG_RUN_S:
        return None
    return (f"{name}: at {rate:.3g} steps/s the remaining {remaining} steps take about {seconds / 3600:.1f} h on this "
            "machine; to finish sooner set a budget (--max-minutes), fewer --steps or a smaller --preset; without a "
            "GPU, --method d3ad --preset s trains in about half an hour and --method patchcore in a minute "
            "(README: What trains where)")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_loop(
    name: str,
    step_fn: Callable[[], dict[str, torch.Tensor]],
    save_fn: Callable[[int, float], None],
    start_step: int,
    total_steps: int,
    start_elapsed_s: float,
    log_path: Path,
    max_minutes: float | None = None,
    checkpoint_every: int = 1000,
    log_every: int = 50,
    progress: bool = True,
    line_every_s: float = 10.0,
) -> LoopResult:
    step = start_step
    if step >= total_steps:
        log.info("%s already has %d/%d steps; nothing to do", name, step, total_steps)
        return LoopResult(step, start_elapsed_s, False, {}, 0.0)
    limit_s = None if max_minutes is None else max_minutes * 60.0
    bar = _Progress(name, step, total_steps, progress, line_every_s)
    sums: dict[str, torch.Tensor] = {}
    n_summed = 0
    first = True
    last: dict[str, float] = {}
    t_session = time.perf_counter()
    t_run0 = t_session - start_elapsed_s  # elapsed over all invocations of this stage
    recent: list[float] = []  # durations of recent steps (host clock), for the time limit
    stopped_by_time = False
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = log_path.open("a")
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None  # SIGTERM saves like Ctrl-C
    try:
        while step < total_steps:
            now = time.perf_counter()
            if limit_s is not None and recent:
                expected = sum(recent) / len(recent)
                if now - t_session + expected > limit_s:
                    stopped_by_time = True
                    break
            losses = step_fn()
            step += 1
            for k, v in losses.items():
                d = v.detach().float()
                sums[k] = sums[k] + d if k in sums else d
            n_summed += 1
            t_after = time.perf_counter()
            recent = (recent + [t_after - now])[-20:]
            session_rate = (step - start_step) / max(t_after - t_session, 1e-9)
            want_log = first or step % log_every == 0 or step == total_steps
            want_line = bar.due()
            reported = None
            if want_log or want_line:
                keys = list(sums)
                values = torch.stack([sums[k] for k in keys]).cpu().tolist()  # the one sync
                reported = {k: v / n_summed for k, v in zip(keys, values)}
                if not all(math.isfinite(v) for v in reported.values()):
                    raise EdgeadError(f"{name} diverged at step {step}: losses {reported}; "
                                      "lower the learning rate (--set train.learning_rate=...)")
                last = reported
                if want_log:
                    record = {"stage": name, "step": step, "elapsed_s": round(t_after - t_run0, 2),
                              "steps_per_s": round(session_rate, 3), **{k: round(v, 6) for k, v in reported.items()}}
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                    sums, n_summed, first = {}, 0, False
            if step - start_step == ESTIMATE_AFTER_STEPS and step < total_steps:
                warning = long_run_warning(name, session_rate, total_steps - step)
                if warning:
                    log.warning(warning)
            bar.update(step, session_rate, reported, want_line)
            if step % checkpoint_every == 0 or step == total_steps:
                save_fn(step, time.perf_counter() - t_run0)
    except KeyboardInterrupt:
        log.warning("%s interrupted at step %d; saving checkpoint", name, step)
        save_fn(step, time.perf_counter() - t_run0)
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        bar.close()
        log_file.close()
    elapsed = time.perf_counter() - t_run0
    if stopped_by_time:
        log.warning("%s: stopped at step %d/%d by the %.1f-minute limit", name, step, total_steps, max_minutes)
    if step % checkpoint_every != 0 and step != total_steps:
        save_fn(step, elapsed)
    rate = (step - start_step) / max(time.perf_counter() - t_session, 1e-9)
    return LoopResult(step, elapsed, stopped_by_time, last, rate)
