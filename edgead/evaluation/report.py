"""Figures drawn with OpenCV (no plotting library needed): ROC curves and sample sheets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..core.metrics import roc_curve, trapezoid
from ..core.preprocess import to_image
from ..data.io import read_image, write_image
from ..runtime.overlay import heat_map

if TYPE_CHECKING:
    from ..runtime.detector import Detector
    from .evaluate import EvaluationRun

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]


def roc_figure(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str = "ROC", size: int = 480
) -> Path:
    """Plot labelled (labels, scores) pairs as ROC curves into a PNG."""
    pad = 50
    img = np.full((size, size, 3), 255, np.uint8)
    x0, y0, x1, y1 = pad, size - pad, size - 15, 30
    cv2.rectangle(img, (x0, y1), (x1, y0), (0, 0, 0), 1)
    cv2.line(img, (x0, y0), (x1, y1), (180, 180, 180), 1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for v in (0.0, 0.5, 1.0):
        cv2.putText(img, f"{v:.1f}", (int(x0 + v * (x1 - x0)) - 10, y0 + 18), font, 0.4, (0, 0, 0), 1)
        cv2.putText(img, f"{v:.1f}", (x0 - 32, int(y0 - v * (y0 - y1)) + 4), font, 0.4, (0, 0, 0), 1)
    cv2.putText(img, "false positive rate", (size // 2 - 60, size - 10), font, 0.45, (0, 0, 0), 1)
    cv2.putText(img, "TPR", (x0 - 40, y1 + 25), font, 0.45, (0, 0, 0), 1)
    cv2.putText(img, title, (x0, 20), font, 0.5, (0, 0, 0), 1)
    for k, (name, (labels, scores)) in enumerate(curves.items()):
        fpr, tpr, _ = roc_curve(labels, scores)
        auc = float(trapezoid(tpr, fpr))
        pts = np.stack([x0 + fpr * (x1 - x0), y0 - tpr * (y0 - y1)], 1).astype(np.int32)
        colour = COLOURS[k % len(COLOURS)]
        cv2.polylines(img, [pts], False, colour, 2, cv2.LINE_AA)
        cv2.putText(img, f"{name} (AUROC {auc:.3f})", (x0 + 80, y0 - 15 - 18 * k), font, 0.45, colour, 1)
    write_image(path, img)
    return path


def _tile(img: np.ndarray, size: int) -> np.ndarray:
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_NEAREST)


def _band(width: int, height: int, text: str, colour=(255, 255, 255), background=(30, 30, 30)) -> np.ndarray:
    band = np.full((height, width, 3), background, np.uint8)
    cv2.putText(band, text, (6, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    return band


def sample_sheet(detector: Detector, run: EvaluationRun, indices: list[int], path: Path, tile: int = 192) -> Path:
    """One row per image (input, reconstruction, anomaly map, predicted mask, ground truth) under a
    heading per column; each row says its score against the threshold and the verdict."""
    m = detector.manifest
    cal = detector.calibration
    pixel_stats = cal.pixel if cal is not None else None
    threshold = detector.threshold
    titles = (
        ["input"]
        + (["reconstruction"] if m.params is not None and run.reconstructions else [])
        + ["map (red: threshold)", "predicted mask"]
        + (["ground truth"] if run.masks is not None else [])
    )
    rows = []
    for i in indices:
        s = run.samples[i]
        rgb = read_image(s.path)
        tiles = [rgb]
        if "reconstruction" in titles:
            scored = detector.score_batch([rgb])
            tiles.append(to_image(scored.reconstruction[0], m.preprocess))
        tiles.append(heat_map(run.maps[i], pixel_stats))
        thr = pixel_stats.threshold if pixel_stats is not None else 0.5
        tiles.append(((run.maps[i] > thr) * 255).astype(np.uint8))
        if run.masks is not None:
            tiles.append((run.masks[i] * 255).astype(np.uint8))
        row = np.concatenate([_tile(t, tile) for t in tiles], axis=1)
        flagged = bool(run.scores[i] > threshold)
        right = flagged == bool(s.label)
        verdict = "ANOMALY" if flagged else "OK"
        label = (
            f"{s.path.parent.name}/{s.path.name} ({s.defect}): score {run.scores[i]:.4g} "
            f"{'>' if flagged else '<='} threshold {threshold:.4g} -> {verdict}"
            + ("" if right else ("  (missed)" if s.label else "  (false reject)"))
        )
        rows.append(_band(row.shape[1], 24, label, (90, 220, 90) if right else (240, 80, 80)))
        rows.append(row)
    width = rows[1].shape[1]
    header = np.concatenate([_band(tile, 28, t, background=(60, 60, 60)) for t in titles], axis=1)[:, :width]
    write_image(path, np.concatenate([header, *rows], axis=0))
    return path
