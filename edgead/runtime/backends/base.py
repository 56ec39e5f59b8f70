"""The backend interface, after Polygraphy's BaseRunner: open, check inputs once, run, close.

A backend runs one stage graph or engine: ``run({name: array}) -> {name: array}``. The base
class validates names, dtypes and static dimensions with a message saying what was received
and what was expected; subclasses implement ``_run`` only.

Ownership: ONNX Runtime returns fresh arrays. The TensorRT backend returns views of host
buffers that it reuses, valid until its next ``run`` (copy them to keep them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ...core.contracts import TensorSpec
from ...core.errors import BackendError


class Backend(ABC):
    name: str = "backend"

    def __init__(self, path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec]):
        self.path = Path(path)
        self.inputs = inputs
        self.outputs = outputs

    def input_metadata(self) -> list[TensorSpec]:
        return list(self.inputs)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._check(feeds)
        return self._run(feeds)

    @abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None:  # noqa: B027 - optional for subclasses
        """Release sessions and device memory."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check(self, feeds: dict[str, np.ndarray]) -> None:
        expected = {s.name: s for s in self.inputs}
        if set(feeds) != set(expected):
            raise BackendError(f"{self.path.name}: received inputs {sorted(feeds)}, expected {sorted(expected)}")
        for name, spec in expected.items():
            a = feeds[name]
            if a.dtype != np.dtype(spec.dtype):
                raise BackendError(f"{self.path.name}: input {name!r} has dtype {a.dtype}, expected {spec.dtype}")
            if a.ndim != len(spec.shape) or any(isinstance(d, int) and d != n for d, n in zip(spec.shape, a.shape)):
                raise BackendError(
                    f"{self.path.name}: input {name!r} has shape {tuple(a.shape)}, expected {tuple(spec.shape)}"
                )
