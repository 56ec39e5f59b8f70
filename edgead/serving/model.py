"""One bundle answering a batch of Triton requests: every valid frame of every request is scored in
one pass through the stages, and each request is answered on its own, so one bad payload never fails
the requests batched with it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..core.errors import EdgeadError, InputError
from ..data.io import MAX_PIXELS_ENV, max_image_pixels
from ..runtime.detector import Detector
from ..runtime.preprocess import check_judgeable
from .protocol import OUTPUT_NAMES, PIXEL_STATS


@dataclass
class Request:
    images: np.ndarray
    """uint8 [n, H, W, 3] RGB."""
    map_size: int | None = None
    outputs: Sequence[str] | None = None
    """Outputs asked for; None: all."""


def check_request(request: Request) -> None:
    x = request.images
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
        raise InputError(f"'image' must be uint8, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim != 4 or x.shape[3] != 3:
        raise InputError(f"'image' must be [n, height, width, 3] RGB frames, got shape {list(x.shape)}")
    n, h, w = x.shape[:3]
    if n == 0:
        raise InputError(f"'image' of shape {list(x.shape)} holds no frame")
    check_judgeable(x[0], "'image' frame")
    limit = max_image_pixels()
    if h * w > limit:
        raise InputError(
            f"frames of {w}x{h} pixels exceed the server's limit of {limit:,} "
            f"(edgead serve --max-pixels; {MAX_PIXELS_ENV} for another tritonserver)"
        )
    if request.map_size is not None and not (isinstance(request.map_size, int) and request.map_size >= 1):
        raise InputError(f"parameter 'map_size' must be a whole number >= 1, got {request.map_size!r}")
    unknown = sorted(set(request.outputs or ()) - set(OUTPUT_NAMES))
    if unknown:
        raise InputError(f"unknown outputs {unknown}; this model has {', '.join(OUTPUT_NAMES)}")


class ServedModel:
    """A Detector behind a request/response interface (what the Triton Python backend calls)."""

    def __init__(self, detector: Detector):
        if detector.calibration is None:
            raise EdgeadError(f"bundle {detector.bundle.root} is not calibrated; serve a calibrated bundle")
        self.detector = detector
        self.bundle_id = detector.bundle.id
        self.on_decisions: Callable[[int, int], None] | None = None
        """Told (passed, rejected) for every answered request: Triton's custom metrics count decisions with it."""
        stats = detector.calibration.pixel
        self._pixel_stats = np.array([getattr(stats, k) for k in PIXEL_STATS], np.float64)

    def answer(self, requests: Sequence[Request]) -> list[dict[str, np.ndarray] | EdgeadError]:
        """Outputs or an error for each request, in order."""
        answers: list[dict[str, np.ndarray] | EdgeadError | None] = [None] * len(requests)
        valid = []
        for i, request in enumerate(requests):
            try:
                check_request(request)
                valid.append(i)
            except EdgeadError as exc:
                answers[i] = exc
        try:
            answers_valid = self._score([requests[i] for i in valid])
        except EdgeadError:
            if len(valid) < 2:
                raise
            answers_valid = [self._score_one(requests[i]) for i in valid]  # find the request that fails
        for i, a in zip(valid, answers_valid):
            answers[i] = a
        return answers  # type: ignore[return-value]

    def _score_one(self, request: Request) -> dict[str, np.ndarray] | EdgeadError:
        try:
            return self._score([request])[0]
        except EdgeadError as exc:
            return exc

    def _score(self, requests: list[Request]) -> list[dict[str, np.ndarray] | EdgeadError]:
        if not requests:
            return []
        t0 = time.perf_counter()
        frames = [f for r in requests for f in r.images]
        det = self.detector
        scored = det.score_batch(frames)
        norm = det.postprocess.normalised(scored.scores)
        anomalous = det.postprocess.is_anomalous(scored.scores)
        per_frame_ms = (time.perf_counter() - t0) * 1e3 / len(frames)
        out: list[dict[str, np.ndarray] | EdgeadError] = []
        start = 0
        for r in requests:
            rows = slice(start, start + len(r.images))
            start = rows.stop
            scores = scored.scores[rows]
            bad = np.flatnonzero(~np.isfinite(scores))
            if len(bad):  # never a pass: the whole request is refused, the others are answered
                out.append(
                    InputError(
                        f"the anomaly score of frame {bad[0]} is not finite ({scores[bad[0]]}): the "
                        "model produced an invalid map for it, so it was not judged"
                    )
                )
                continue
            n = len(scores)
            if self.on_decisions is not None:
                rejected = int(anomalous[rows].sum())
                self.on_decisions(n - rejected, rejected)
            wanted = set(r.outputs or OUTPUT_NAMES)
            values = {
                "score": lambda: scores.astype(np.float64)[:, None],
                "normalised_score": lambda: norm[rows].astype(np.float64)[:, None],
                "is_anomalous": lambda: anomalous[rows].astype(bool)[:, None],
                "threshold": lambda: np.full((n, 1), det.threshold, np.float64),
                "pixel_stats": lambda: np.repeat(self._pixel_stats[None], n, 0),
                "anomaly_map": lambda: np.stack([_resize_map(m, r.map_size) for m in scored.maps[rows]]),
                "server_ms": lambda: np.full((n, 1), per_frame_ms, np.float64),
                "bundle_id": lambda: np.full((n, 1), self.bundle_id.encode(), object),
            }
            out.append({name: make() for name, make in values.items() if name in wanted})
        return out

    def close(self) -> None:
        self.detector.close()


def _resize_map(amap: np.ndarray, map_size: int | None) -> np.ndarray:
    h, w = amap.shape
    if map_size is None or max(h, w) <= map_size:
        return np.ascontiguousarray(amap, np.float32)
    s = map_size / max(h, w)
    return cv2.resize(amap, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
