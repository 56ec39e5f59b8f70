"""Backends: one interface (base.Backend, after Polygraphy's runners), one table of implementations.

Each entry of ``BACKENDS`` is a ``BackendKind``: how to tell whether it can run a bundle here and
how to open one stage with it. ``auto`` tries the kinds in order of ``priority`` (native TensorRT
engines in the bundle, ONNX Runtime with TensorRT, with CUDA, on the CPU) and reports its pick; a
family name (``onnxruntime``) tries that family's kinds only. A new backend is a module with a
``BackendKind`` plus one line in the table (or the ``edgead.backends`` entry-point group).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from ...core.bundle import Bundle
from ...core.errors import BackendError, EdgeadError
from ...core.registry import Registry
from .base import Backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendKind:
    name: str
    family: str
    """``--backend FAMILY`` takes the first usable kind of the family."""
    priority: int
    """``auto`` tries lower numbers first (the faster engines)."""
    usable: Callable[[Bundle], str]
    """Why this kind can run the bundle here; raises an EdgeadError that says why not."""
    open: Callable[[Bundle, str, int | None, int], Backend]
    """``open(bundle, stage, threads, device)`` -> the stage's backend."""


BACKENDS: Registry[BackendKind] = Registry(
    "backend",
    {
        "tensorrt": "edgead.runtime.backends.tensorrt:NATIVE_TENSORRT",
        "onnxruntime-tensorrt": "edgead.runtime.backends.onnxruntime:ORT_TENSORRT",
        "onnxruntime-cuda": "edgead.runtime.backends.onnxruntime:ORT_CUDA",
        "onnxruntime-cpu": "edgead.runtime.backends.onnxruntime:ORT_CPU",
    },
    BackendKind,
)


@dataclass(frozen=True)
class BackendChoice:
    name: str
    """The kind picked (a BACKENDS entry), or the name of backends handed in directly."""
    reason: str


def _kinds() -> list[BackendKind]:
    return sorted(BACKENDS.all(), key=lambda k: (k.priority, k.name))


def backend_names() -> list[str]:
    """What ``--backend`` accepts: auto, each family, each kind (in the order auto tries them)."""
    return ["auto", *dict.fromkeys(n for k in _kinds() for n in (k.family, k.name))]


def choose_backend(requested: str, bundle: Bundle) -> BackendChoice:
    if requested in BACKENDS:
        kind = BACKENDS.get(requested)
        return BackendChoice(kind.name, kind.usable(bundle))  # raises with why it cannot run here
    kinds = _kinds()
    candidates = kinds if requested == "auto" else [k for k in kinds if k.family == requested]
    if not candidates:
        raise BackendError(f"backend must be one of {', '.join(backend_names())}; got {requested!r}")
    skipped = []
    for kind in candidates:
        try:
            reason = kind.usable(bundle)
        except EdgeadError as exc:  # not installed, no GPU, no engines for this GPU
            log.info("backend %s skipped: %s", kind.name, exc)
            skipped.append(kind.name)
            continue
        return BackendChoice(kind.name, reason + (f" (skipped {', '.join(skipped)}; -v says why)" if skipped else ""))
    raise BackendError(
        'no inference backend available: install ONNX Runtime with pip install "edgead[cpu]" '
        '(or "edgead[gpu]" on an NVIDIA machine)' + (f"; tried {', '.join(skipped)} (-v says why)" if skipped else "")
    )


_pool: ContextVar[dict | None] = ContextVar("edgead_backend_pool", default=None)


@contextmanager
def reuse_backends() -> Iterator[None]:
    """Within the block, a stage graph opened again (same file, content, kind, threads, device) gets the
    backend already open: export opens the same graphs for statistics, calibration, fusion and parity."""
    pool: dict = {}
    token = _pool.set(pool)
    try:
        yield
    finally:
        _pool.reset(token)
        for backend in pool.values():
            backend.close()


class _Borrowed(Backend):
    """A pooled backend lent to one Detector: runs the pool's, leaves closing to the pool."""

    def __init__(self, inner: Backend):
        super().__init__(inner.path, inner.inputs, inner.outputs)
        self.inner, self.name = inner, inner.name

    def run(self, feeds):
        return self.inner.run(feeds)

    def _run(self, feeds):  # pragma: no cover - run() delegates whole
        return self.inner._run(feeds)


def open_stage(
    choice: BackendChoice, bundle: Bundle, stage: str, threads: int | None = None, device: int = 0
) -> Backend:
    pool = _pool.get()
    if pool is None:
        return BACKENDS.get(choice.name).open(bundle, stage, threads, device)
    entry = bundle.manifest.stage(stage)
    key = (choice.name, str(bundle.path(entry.file)), entry.sha256, threads, device)
    if key not in pool:
        pool[key] = BACKENDS.get(choice.name).open(bundle, stage, threads, device)
    return _Borrowed(pool[key])


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendChoice",
    "BackendKind",
    "backend_names",
    "choose_backend",
    "open_stage",
    "reuse_backends",
]
