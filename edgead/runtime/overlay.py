"""Overlays like the common anomaly-detection visualisers: heat map, mask contour, verdict."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..core.manifest import Stats
from ..core.scoring import normalise

if TYPE_CHECKING:
    from .result import Result

RED = (230, 40, 40)
GREEN = (40, 200, 60)


def heat_map(anomaly_map: np.ndarray, stats: Stats | None) -> np.ndarray:
    """RGB JET colouring with the pixel threshold at the middle of the scale."""
    if stats is not None:
        norm = normalise(anomaly_map, stats)
    else:
        lo, hi = float(anomaly_map.min()), float(anomaly_map.max())
        norm = (anomaly_map - lo) / max(hi - lo, 1e-12)
    u8 = np.clip(norm * 255.0, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(u8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def blend_weights(anomaly_map: np.ndarray, stats: Stats | None, alpha: float) -> np.ndarray:
    """Per-pixel opacity of the heat map: none below half the pixel threshold (normalised 0.25), rising
    to ``alpha`` at the threshold, so a good part keeps its true colours and a colour defect stays visible."""
    if stats is None:
        return np.full(anomaly_map.shape, alpha, np.float32)
    norm = normalise(anomaly_map, stats)
    return (np.clip((norm - 0.25) / 0.25, 0.0, 1.0) * alpha).astype(np.float32)


def draw_overlay(result: Result, alpha: float = 0.6, text: bool = True) -> np.ndarray:
    image = result.image
    if image is None:
        raise ValueError("draw_overlay needs the result's image")
    w = blend_weights(result.anomaly_map, result.pixel_stats, alpha)[..., None]
    heat = heat_map(result.anomaly_map, result.pixel_stats).astype(np.float32)
    out = (image.astype(np.float32) * (1.0 - w) + heat * w + 0.5).astype(np.uint8)
    contours, _ = cv2.findContours(result.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(1, round(min(image.shape[:2]) / 200))
    cv2.drawContours(out, contours, -1, RED, thickness)
    if text:
        verdict = "ANOMALY" if result.is_anomalous else "OK"
        label = f"{verdict} {result.normalised_score:.2f}"
        scale = max(0.4, min(image.shape[:2]) / 500)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        cv2.rectangle(out, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
        cv2.putText(
            out,
            label,
            (4, th + 4),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            RED if result.is_anomalous else GREEN,
            thickness,
            cv2.LINE_AA,
        )
    return out
