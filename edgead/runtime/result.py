"""One frame's verdict, the type every sink, stream and application receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np

from ..core.errors import InputError
from ..core.manifest import Stats
from .overlay import draw_overlay

if TYPE_CHECKING:
    from .temporal import LineState

Color = Literal["bgr", "rgb"]


@dataclass
class Result:
    """One frame's verdict. Maps and masks have the input image's height and width."""

    score: float
    """Raw image score in the method's units (compare with ``threshold``)."""
    normalised_score: float
    """Score mapped to (0, 1) with the calibrated threshold at 0.5 (a logistic curve: ordered everywhere,
    never stuck at 0 or 1; edgead.core.scoring)."""
    is_anomalous: bool
    anomaly_map: np.ndarray
    """float32 HxW, raw pixel scores."""
    mask: np.ndarray
    """bool HxW, pixels above the calibrated pixel threshold."""
    threshold: float
    latency_ms: dict[str, float]
    """Per part: preprocess, each stage, orchestration, postprocess, total."""
    image: np.ndarray | None = field(default=None, repr=False)
    """The uint8 RGB input the result was computed from (attached by stream and predict)."""
    source: str | None = None
    frame_index: int | None = None
    timestamp: float | None = None
    pixel_stats: Stats | None = field(default=None, repr=False)
    bundle_id: str | None = None
    """The bundle that judged the frame (``Bundle.id``): with ``threshold``, what a decision is traced to."""
    line: LineState | None = None
    """The line's decision at this frame when the stream is smoothed over time (``runtime.temporal``)."""
    _overlays: dict[tuple[float, bool], np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)

    def overlay(self, color: Color = "bgr", alpha: float = 0.6, text: bool = True) -> np.ndarray:
        """Heat map blended where the map approaches the pixel threshold, the mask's contour, score
        and verdict (uint8)."""
        if self.image is None:
            raise InputError("this Result has no image attached; call predict(..., keep_image=True)")
        key = (alpha, text)
        if key not in self._overlays:  # each sink asks; the drawing is done once a frame
            self._overlays[key] = draw_overlay(self, alpha=alpha, text=text)
        out = self._overlays[key]
        return cv2.cvtColor(out, cv2.COLOR_RGB2BGR) if color == "bgr" else out.copy()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (no arrays)."""
        return {
            "source": self.source,
            "frame_index": self.frame_index,
            "timestamp": self.timestamp,
            "score": round(float(self.score), 6),
            "normalised_score": round(float(self.normalised_score), 6),
            "is_anomalous": bool(self.is_anomalous),
            "threshold": float(self.threshold),
            "bundle_id": self.bundle_id,
            "anomalous_pixels": int(self.mask.sum()),
            "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()},
            **({"line": self.line.to_dict()} if self.line is not None else {}),
        }
