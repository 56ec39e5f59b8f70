"""What a factory application codes against: anything that judges frames, a local ``Detector`` or a
``RemoteDetector`` answered by ``edgead serve``. Both satisfy this protocol (a test checks every member and
signature), so an application switches between them by construction only."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .result import Color, Result


@runtime_checkable
class AnomalyDetector(Protocol):
    method: str
    """The bundle's method (``edgead methods`` lists them)."""

    @property
    def backend_name(self) -> str:
        """Where the stages run (a backend kind, or ``triton`` for a served bundle)."""

    @property
    def threshold(self) -> float:
        """The image threshold the decisions are taken with (raw score units)."""

    @property
    def bundle_id(self) -> str | None:
        """The bundle that judges (``Bundle.id``); a remote detector's is None before its first answer."""

    def predict(self, image: np.ndarray | str | Path, color: Color = "bgr", keep_image: bool = True) -> Result:
        """One image: a path, or a uint8 array in ``color`` channel order."""

    def predict_batch(
        self, images: Sequence[np.ndarray | str | Path], color: Color = "bgr", keep_image: bool = True
    ) -> list[Result]:
        """Several images, judged together where the backend batches."""

    def predict_rgb(self, rgbs: list[np.ndarray], keep_image: bool = True) -> list[Result]:
        """uint8 RGB frames, as streams deliver them."""

    def stream(self, source: Any, **options: Any) -> Iterator[Result]:
        """A Result for every frame of a camera, video, URL, GStreamer pipeline, folder or glob."""

    def close(self) -> None:
        """Release sessions and connections."""

    def __enter__(self) -> AnomalyDetector: ...

    def __exit__(self, *exc: Any) -> None: ...
