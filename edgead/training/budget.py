"""One time budget for a whole training run (``edgead train --max-minutes M``).

The budget is split over the run's optimisation stages by the method's declared shares
(``MethodSpec.budget``), each stage taking its share of the time still left among the stages still
to run, so a stage that finishes early hands its time on. A share of ``budget_reserve`` is kept for
the stages without a loop (the D3AD prior, the patch bank, DiAD's selection). A stage that reaches
its share stops *before* the step that would overrun and takes the steps it has done as its plan:
it is complete, the next stage starts, and the run always ends exportable within the budget. The
stages' records keep the planned steps, so the report says what the budget cut.

With ``fill`` (``--fill-budget``) a stage's steps are not the preset's but what its share holds: the loop
measures the stage's step rate in a short warm-up and plans the steps from it once (training/loop.py), so
a large budget trains longer and a stage no longer finishes early while an earlier one was cut. Stages
whose length is part of the method (``MethodSpec.budget_fixed``) keep their steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

_active: ContextVar[Budget | None] = ContextVar("edgead_training_budget", default=None)
_clock: ContextVar[Callable[[], float]] = ContextVar("edgead_training_clock", default=time.perf_counter)


def now() -> float:
    """Seconds on the clock budgets and training loops time themselves with (``time.perf_counter`` unless a test
    gives another: ``using_clock``)."""
    return _clock.get()()


@contextmanager
def using_clock(clock: Callable[[], float]) -> Iterator[None]:
    """Time budgets, loops and deadlines with ``clock`` inside the block (tests: a clock they advance)."""
    token = _clock.set(clock)
    try:
        yield
    finally:
        _clock.reset(token)


@dataclass
class Budget:
    seconds: float
    shares: dict[str, float]
    """Loop stage -> weight, for the stages this invocation will run."""
    reserve: float = 0.0
    """Fraction of the budget kept for the stages without a loop."""
    fill: bool = False
    """Each stage runs for its whole share, its steps planned from its measured rate..."""
    fixed: frozenset[str] = frozenset()
    """...except these, whose steps are the method's (MethodSpec.budget_fixed): only shortened to fit."""
    started: float = field(default_factory=now)
    done: set[str] = field(default_factory=set)
    cuts: dict[str, dict[str, int]] = field(default_factory=dict)
    """Stage -> the steps the budget allowed and the steps planned, where it allowed fewer."""

    def fills(self, stage: str) -> bool:
        return self.fill and stage in self.shares and stage not in self.fixed

    def left(self) -> float:
        return self.seconds - (now() - self.started)

    def stage_seconds(self, stage: str) -> float | None:
        """Seconds ``stage`` may use now (None: the stage is not in the budget)."""
        if stage not in self.shares:
            return None
        pending = [s for s in self.shares if s not in self.done or s == stage]
        usable = self.left() - self.reserve * self.seconds
        return max(usable, 0.0) * self.shares[stage] / sum(self.shares[s] for s in pending)

    def finish(self, stage: str) -> None:
        self.done.add(stage)

    def cut(self, stage: str, steps: int, planned: int) -> None:
        self.cuts[stage] = {"steps": int(steps), "planned": int(planned)}

    @contextmanager
    def active(self) -> Iterator[Budget]:
        token = _active.set(self)
        try:
            yield self
        finally:
            _active.reset(token)


def active_budget() -> Budget | None:
    return _active.get()


def budget_deadline() -> float | None:
    """``now()`` time at which the active run's budget ends (None: the run has no budget)."""
    budget = _active.get()
    return None if budget is None else budget.started + budget.seconds


def plan(
    minutes: float | None,
    shares: tuple[tuple[str, float], ...],
    reserve: float,
    stage: str,
    complete: set[str],
    fill: bool = False,
    fixed: tuple[str, ...] = (),
) -> Budget | None:
    """The budget of one ``edgead train`` invocation: the loop stages it will run (one with ``--stage``;
    on ``--resume`` those not complete yet) share ``minutes``."""
    if minutes is None:
        return None
    running = {s: w for s, w in shares if (stage == "all" or s == stage) and s not in complete}
    return Budget(
        minutes * 60.0, running or {stage: 1.0}, reserve if stage == "all" else 0.0, fill=fill, fixed=frozenset(fixed)
    )
