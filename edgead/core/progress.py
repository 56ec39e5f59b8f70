"""Progress of long work, for whoever asked to hear it: the Python API's ``progress=`` callbacks.

Long loops (training steps, the coreset, calibration, evaluation, validation, export's steps) call ``report``;
a caller that wants to hear it wraps the work in ``listening(callback)``. The terminal's bars and status lines
are separate (each loop keeps its own): a factory application gets typed events instead of parsing them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    task: str
    """What is being done: ``train autoencoder``, ``coreset``, ``calibrate``, ``evaluate``, ``export``..."""
    done: int
    total: int | None
    """None when the end is not known in advance (a live source)."""
    detail: str = ""
    """A step's losses, the part of an export being written, ..."""

    @property
    def fraction(self) -> float | None:
        return None if not self.total else min(self.done / self.total, 1.0)


ProgressCallback = Callable[[Progress], None]
_listener: ContextVar[ProgressCallback | None] = ContextVar("edgead_progress", default=None)


@contextmanager
def listening(callback: ProgressCallback | None) -> Iterator[None]:
    """Send the progress of the work done inside the block to ``callback`` (None: to nobody)."""
    token = _listener.set(callback)
    try:
        yield
    finally:
        _listener.reset(token)


def on_terminal() -> bool:
    """Whether a person watches a terminal: bars and status lines then (the CLI), silence for applications."""
    import sys

    return sys.stderr.isatty()


def report(task: str, done: int, total: int | None = None, detail: str = "") -> None:
    callback = _listener.get()
    if callback is not None:
        callback(Progress(task, done, total, detail))


def tracked(
    items: Iterable[T], task: str, total: int | None = None, bar: bool = False, unit: str = "item"
) -> Iterator[T]:
    """``items`` one by one, each reported (and shown as a tqdm bar when ``bar``)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    shown = None
    if bar:
        from tqdm.auto import tqdm

        shown = tqdm(total=total, desc=task, unit=unit)
    try:
        for i, item in enumerate(items, 1):
            yield item
            if shown is not None:
                shown.update(1)
            report(task, i, total)
    finally:
        if shown is not None:
            shown.close()
