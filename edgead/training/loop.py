"""The optimisation loop every trainer stage shares: time limit, checkpoints, logs, progress.

A stage supplies ``step() -> {name: loss tensor}`` (it does its own backward and optimiser step)
and ``save(step, elapsed_s, total_steps)``. The loop never synchronises with the GPU on a normal
step: losses are summed on the device and read back only when a log line is due, so a fast GPU is never
stalled by the host.

- ``train_log.jsonl`` gets a line at the first step of every invocation, then every
  ``log_every`` steps and at the last step (mean losses since the previous line).
- On a terminal, a tqdm bar; otherwise (a log file, CI, ``nohup``) one progress line on
  stderr every ``line_every_s`` seconds with steps/s, ETA and losses.
- A run's time budget (training/budget.py) gives the stage its share: the loop stops *before* a step
  that would overrun, judged by the mean duration of recent steps, takes the steps done as the
  stage's plan (so the stage is complete and the run goes on) and saves. ``max_minutes`` caps one
  invocation alone (the stage then stays incomplete, to be resumed).
- A budget that is filled (``--fill-budget``) plans the stage's steps once, after a warm-up of a few
  steps and seconds timed between two device synchronisations, from the measured rate and the share.
- After a few steps, a stage whose estimate passes ``LONG_RUN_S`` says so once, with the options
  that finish sooner (a 256-px DiffusionAD on a CPU would otherwise run for weeks in silence).
- Ctrl-C and SIGTERM (a service manager, ``kill``, a batch scheduler's time limit) both save the
  checkpoint of the last finished step before the process ends; they are acknowledged at once even inside a
  long step, and a second one quits at once (training/interrupt.py).
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
from ..core.progress import report
from . import distributed
from .budget import active_budget, budget_deadline, now
from .interrupt import heard_at_once

log = logging.getLogger(__name__)


@dataclass
class LoopResult:
    steps: int
    elapsed_s: float
    stopped_by_time_limit: bool
    """By the budget (the plan was shortened to ``steps``) or by ``max_minutes``."""
    losses: dict[str, float]
    steps_per_s: float

    def summary(self) -> dict:
        return {
            "steps": self.steps,
            "elapsed_s": round(self.elapsed_s, 1),
            "stopped_by_time_limit": self.stopped_by_time_limit,
            "steps_per_s": round(self.steps_per_s, 2),
            **self.losses,
        }


class _Progress:
    """tqdm on a terminal, plain lines elsewhere, nothing when disabled."""

    def __init__(
        self, name: str, start: int, total: int, enabled: bool, line_every_s: float, run_deadline: float | None = None
    ):
        self.name, self.total, self.line_every_s, self.run_deadline = name, total, line_every_s, run_deadline
        self.bar = None
        self.lines = enabled and not sys.stderr.isatty()
        self.last_line = -math.inf  # the first step always gets a line
        if enabled and not self.lines:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, desc=name, unit="step", dynamic_ncols=True)

    def replan(self, total: int) -> None:
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def due(self) -> bool:
        return self.lines and now() - self.last_line >= self.line_every_s

    def update(self, step: int, rate: float, losses: dict[str, float] | None, line: bool) -> None:
        report(f"train {self.name}", step, self.total, " ".join(f"{k} {v:.4f}" for k, v in (losses or {}).items()))
        if self.bar is not None:
            self.bar.update(1)
            if losses:
                self.bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()})
        elif line and losses is not None:
            left = (self.total - step) / rate if rate > 0 else float("nan")
            eta = time.strftime("%H:%M:%S", time.gmtime(left)) if math.isfinite(left) else "?"
            parts = " ".join(f"{k} {v:.4f}" for k, v in losses.items())
            run = ""
            if self.run_deadline is not None:  # the whole run ends by its budget
                run_left = max(self.run_deadline - now(), 0.0)
                run = f", run ends within {time.strftime('%H:%M:%S', time.gmtime(run_left))} (budget)"
            sys.stderr.write(
                f"{self.name}: step {step}/{self.total} ({step / self.total:.1%}) "
                f"{rate:.2f} steps/s eta {eta}{run} | {parts}\n"
            )
            sys.stderr.flush()
            self.last_line = now()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


LONG_RUN_S = 3600.0
ESTIMATE_AFTER_STEPS = 3
WARMUP_STEPS = 5
"""Steps after the first that time a stage's rate before a filled budget plans its steps..."""
WARMUP_S = 10.0
"""...and seconds (at most 5% of the stage's share): a GPU's queue must fill before its rate shows."""
FILL_MARGIN = 0.97
"""Share of the time left that a filled plan counts on: steps vary, and a stage that ends early hands its time on."""


def _synchronise() -> None:
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def filled_steps(step: int, rate: float, seconds_left: float) -> int:
    """The steps a stage at ``step`` runs in all when it goes on at ``rate`` steps/s for ``seconds_left``."""
    return step + max(int(rate * FILL_MARGIN * max(seconds_left, 0.0)), 0)


def long_run_warning(name: str, rate: float, remaining: int) -> str | None:
    """The one warning for a stage whose remaining steps take more than an hour at the measured rate."""
    seconds = remaining / rate if rate > 0 else math.inf
    if seconds <= LONG_RUN_S:
        return None
    return (
        f"{name}: at {rate:.3g} steps/s the remaining {remaining} steps take about {seconds / 3600:.1f} h on this "
        "machine; to finish sooner set a budget (--max-minutes), fewer --steps or a smaller --preset; without a "
        "GPU, --method d3ad --preset s trains in about half an hour and --method patchcore in a minute "
        "(README: What trains where)"
    )


def step_seeding(
    device: torch.device | str, seed: int, salt: int, step: int
) -> tuple[torch.Generator, Callable[[], None]]:
    """A generator for a stage's batches, noise and synthetic anomalies, and the call that re-seeds it from
    (seed, stage, step) at the start of every step: a run stopped and resumed at any step draws exactly what
    an uninterrupted one draws, so it reaches the same weights."""
    gen = torch.Generator(device=device)
    at = [step]
    process = distributed.rank()  # each training process draws its own part of the batch

    def reseed() -> None:
        gen.manual_seed(seed * 1_000_003 + salt * 100_003 + process * 7_919_317 + at[0])
        at[0] += 1

    return gen, reseed


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_loop(
    name: str,
    step_fn: Callable[[], dict[str, torch.Tensor]],
    save_fn: Callable[[int, float, int], None],
    start_step: int,
    total_steps: int,
    start_elapsed_s: float,
    log_path: Path,
    max_minutes: float | None = None,
    checkpoint_every: int = 1000,
    log_every: int = 50,
    progress: bool = True,
    line_every_s: float = 10.0,
    stage: str | None = None,
    save_when: Callable[[int, int], bool] | None = None,
) -> LoopResult:
    """``stage``: the name under which the run's budget (if any) gives this loop its share; with a filled budget
    ``total_steps`` is replaced by the steps the share holds. ``save_when(step, total)``: more steps to save at
    than every ``checkpoint_every`` (snapshots placed by the final total)."""
    step = start_step
    budget = active_budget()
    share_s = budget.stage_seconds(stage) if budget is not None and stage is not None else None
    to_plan = share_s is not None and budget.fills(stage)  # the steps come from the rate, once it is measured
    if step >= total_steps and not to_plan:
        log.info("%s already has %d/%d steps; nothing to do", name, step, total_steps)
        return LoopResult(step, start_elapsed_s, False, {}, 0.0)
    limits = [s for s in (share_s, None if max_minutes is None else max_minutes * 60.0) if s is not None]
    limit_s = min(limits) if limits else None
    planned = total_steps
    main = distributed.is_main()  # one process writes the log and shows progress
    bar = _Progress(name, step, total_steps, progress and main, line_every_s, budget_deadline())
    sums: dict[str, torch.Tensor] = {}
    n_summed = 0
    first = True
    last: dict[str, float] = {}
    t_session = now()
    t_run0 = t_session - start_elapsed_s  # elapsed over all invocations of this stage
    recent: list[float] = []  # durations of recent steps (host clock), for the time limit
    stopped_by_time = False
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = log_path.open("a") if main else None
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None  # SIGTERM saves like Ctrl-C
    warmup_from: tuple[int, float] | None = None  # (step, time) after the first step, for a filled budget
    filled = 0  # the steps a filled budget planned

    def recorded_total() -> int:
        """The stage's steps for its record; before a filled plan exists, one more than done: unfinished."""
        return max(total_steps, step + 1) if to_plan else total_steps

    with heard_at_once(name):
        try:
            while to_plan or step < total_steps:
                t_before = now()
                if limit_s is not None and recent:
                    expected = sum(recent) / len(recent)
                    if distributed.any_process(t_before - t_session + expected > limit_s):
                        stopped_by_time = True
                        if share_s is not None and limit_s == share_s:  # the budget: these steps are the plan
                            total_steps, to_plan = step, False
                        break
                losses = step_fn()
                step += 1
                for k, v in losses.items():
                    d = v.detach().float()
                    sums[k] = sums[k] + d if k in sums else d
                n_summed += 1
                t_after = now()
                recent = (recent + [t_after - t_before])[-20:]
                session_rate = (step - start_step) / max(t_after - t_session, 1e-9)
                if to_plan and warmup_from is None:
                    _synchronise()
                    warmup_from = (step, now())
                elif to_plan and distributed.any_process(  # every process plans at the same step
                    step - warmup_from[0] >= WARMUP_STEPS and t_after - warmup_from[1] >= min(WARMUP_S, 0.05 * share_s)
                ):
                    _synchronise()
                    t_now = now()
                    rate = (step - warmup_from[0]) / max(t_now - warmup_from[1], 1e-9)
                    left = share_s - (t_now - t_session)
                    filled = planned = total_steps = distributed.fewest(filled_steps(step, rate, left))
                    to_plan = False
                    bar.replan(total_steps)
                    log.info(
                        "%s: %.3g steps/s in the warm-up; its %.0f s of the budget hold %d steps",
                        name,
                        rate,
                        share_s,
                        total_steps,
                    )
                at_end = not to_plan and step == total_steps
                want_log = first or step % log_every == 0 or at_end
                want_line = bar.due()
                reported = None
                if want_log or want_line:
                    keys = list(sums)
                    values = torch.stack([sums[k] for k in keys]).cpu().tolist()  # the one sync
                    reported = {k: v / n_summed for k, v in zip(keys, values)}
                    if not all(math.isfinite(v) for v in reported.values()):
                        raise EdgeadError(
                            f"{name} diverged at step {step}: losses {reported}; "
                            "lower the learning rate (--set train.learning_rate=...)"
                        )
                    last = reported
                    if want_log and log_file is not None:
                        record = {
                            "stage": name,
                            "step": step,
                            "elapsed_s": round(t_after - t_run0, 2),
                            "steps_per_s": round(session_rate, 3),
                            **{k: round(v, 6) for k, v in reported.items()},
                        }
                        log_file.write(json.dumps(record) + "\n")
                        log_file.flush()
                    if want_log:
                        sums, n_summed, first = {}, 0, False
                if step - start_step == ESTIMATE_AFTER_STEPS and step < total_steps and share_s is None:
                    warning = long_run_warning(name, session_rate, total_steps - step)
                    if warning:
                        log.warning(warning)
                bar.update(step, session_rate, reported, want_line)
                if (
                    step % checkpoint_every == 0
                    or at_end
                    or (save_when is not None and not to_plan and save_when(step, total_steps))
                ):
                    save_fn(step, now() - t_run0, total_steps)
        except KeyboardInterrupt:
            log.warning("%s interrupted at step %d; saving checkpoint", name, step)
            save_fn(step, now() - t_run0, recorded_total())
            raise
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)
            bar.close()
            if log_file is not None:
                log_file.close()
    elapsed = now() - t_run0
    if stopped_by_time and total_steps == step and filled:
        log.info("%s: %d of the %d steps planned from the warm-up fitted the budget's share", name, step, filled)
    elif stopped_by_time and total_steps == step:
        if budget is not None and stage is not None:
            budget.cut(stage, step, planned)
        log.warning(
            "%s: the time budget allowed %d of %d steps; the run goes on with them (a run with a larger "
            "--max-minutes trains more)",
            name,
            step,
            planned,
        )
    elif stopped_by_time:
        log.warning("%s: stopped at step %d/%d by the %.1f-minute limit", name, step, total_steps, max_minutes)
    if stopped_by_time or (step % checkpoint_every != 0 and step != total_steps):
        save_fn(step, elapsed, recorded_total())
    if budget is not None and stage is not None and step >= total_steps:
        budget.finish(stage)
    distributed.barrier()  # the other processes go on once process 0 has written the stage's files
    rate = (step - start_step) / max(now() - t_session, 1e-9)
    return LoopResult(step, elapsed, stopped_by_time, last, rate)
