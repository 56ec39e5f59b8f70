"""Anomaly detection metrics in numpy: AUROC, AP, F1max (image and pixel) and AUPRO@0.3.

Curves are exact (every distinct score is a threshold); ties are handled as in scikit-learn.
AUPRO follows the MVTec AD evaluation code: per-region overlap averaged over all ground-truth
regions (8-connected), false-positive rate over all anomaly-free pixels, area under PRO(FPR)
up to FPR 0.3 divided by 0.3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from .registry import Registry

trapezoid = getattr(np, "trapezoid", None) or np.trapz
"""numpy 2's name; numpy 1 (the serving environment: Triton's Python backend) has only trapz."""


def _binary_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative true and false positives at each distinct threshold, scores descending."""
    y = np.asarray(labels).ravel().astype(bool)
    s = np.asarray(scores).ravel().astype(np.float64)
    if y.size != s.size:
        raise ValueError(f"labels and scores differ in size: {y.size} vs {s.size}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or Inf")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tps = np.cumsum(y)[last].astype(np.float64)
    fps = (last + 1 - tps).astype(np.float64)
    return tps, fps, s[last]


def _require_both(labels: np.ndarray) -> None:
    y = np.asarray(labels).astype(bool)
    if y.all() or not y.any():
        raise ValueError("metrics need both normal and anomalous samples")


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _require_both(labels)
    tps, fps, thr = _binary_curve(labels, scores)
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return fpr, tpr, np.r_[np.inf, thr]


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(trapezoid(tpr, fpr))


def precision_recall(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall at each distinct threshold (descending scores)."""
    _require_both(labels)
    tps, fps, thr = _binary_curve(labels, scores)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return precision, recall, thr


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """AP = sum_n (R_n - R_{n-1}) P_n (scikit-learn's definition, no interpolation)."""
    precision, recall, _ = precision_recall(labels, scores)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def f1_max(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Best F1 over all thresholds and the threshold that reaches it."""
    precision, recall, thr = precision_recall(labels, scores)
    denom = precision + recall
    f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
    i = int(np.argmax(f1))
    return float(f1[i]), float(thr[i])


def pro_curve(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FPR and mean per-region overlap at every distinct threshold (exact, MVTec AD style)."""
    maps = np.asarray(maps, np.float64)
    masks = np.asarray(masks).astype(bool)
    if maps.shape != masks.shape or maps.ndim != 3:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} must both be [N, H, W]")
    fp_change = np.zeros(maps.shape, np.float64)
    pro_change = np.zeros(maps.shape, np.float64)
    n_regions = 0
    for i, gt in enumerate(masks):
        n, labelled = cv2.connectedComponents(gt.astype(np.uint8), connectivity=8)
        fp_change[i][labelled == 0] = 1.0
        sizes = np.bincount(labelled.ravel(), minlength=n)
        for k in range(1, n):
            pro_change[i][labelled == k] = 1.0 / sizes[k]
        n_regions += n - 1
    n_ok = fp_change.sum()
    if n_regions == 0 or n_ok == 0:
        raise ValueError("AUPRO needs at least one anomalous region and one normal pixel")
    s = maps.ravel()
    order = np.argsort(-s, kind="mergesort")
    s = s[order]
    fpr = np.cumsum(fp_change.ravel()[order]) / n_ok
    pro = np.cumsum(pro_change.ravel()[order]) / n_regions
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    return np.r_[0.0, np.clip(fpr[last], 0, 1)], np.r_[0.0, np.clip(pro[last], 0, 1)]


def aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    fpr, pro = pro_curve(maps, masks)
    keep = fpr <= fpr_limit
    x, y = fpr[keep], pro[keep]
    j = int(np.searchsorted(fpr, fpr_limit, side="right"))
    if j < fpr.size and x[-1] < fpr_limit:  # interpolate the curve at the limit
        x0, x1, y0, y1 = fpr[j - 1], fpr[j], pro[j - 1], pro[j]
        y_lim = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0) if x1 > x0 else y1
        x, y = np.r_[x, fpr_limit], np.r_[y, y_lim]
    return float(trapezoid(y, x) / fpr_limit)


@dataclass(frozen=True)
class Metric:
    """One column of ``edgead evaluate``'s report and table."""

    name: str
    """The report's key."""
    title: str
    levels: tuple[str, ...]
    """``image``: compute(labels [N], scores [N]); ``pixel``: compute(masks [N, H, W], maps [N, H, W])."""
    compute: Callable[[np.ndarray, np.ndarray], float | dict[str, float]]
    """A number, or several keys (the first is the column's: f1max and its threshold)."""
    order: int = 100
    """Column position (smaller first)."""


AUROC = Metric("auroc", "AUROC", ("image", "pixel"), auroc, 10)
AP = Metric("ap", "AP", ("image", "pixel"), average_precision, 20)
F1MAX = Metric(
    "f1max",
    "F1max",
    ("image", "pixel"),
    lambda labels, scores: dict(zip(("f1max", "f1max_threshold"), f1_max(labels, scores))),
    30,
)
AUPRO = Metric("aupro_0.3", "AUPRO@0.3", ("pixel",), lambda masks, maps: aupro(maps, masks), 40)

METRICS: Registry[Metric] = Registry(
    "metric",
    {
        "auroc": "edgead.core.metrics:AUROC",
        "ap": "edgead.core.metrics:AP",
        "f1max": "edgead.core.metrics:F1MAX",
        "aupro_0.3": "edgead.core.metrics:AUPRO",
    },
    Metric,
)
"""A new metric is a Metric plus one entry (or the ``edgead.metrics`` entry-point group): the report,
the table and the multi-product mean pick it up."""


def metrics_for(level: str) -> list[Metric]:
    return sorted((m for m in METRICS.all() if level in m.levels), key=lambda m: (m.order, m.name))


def _compute(level: str, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric in metrics_for(level):
        value = metric.compute(labels, scores)
        out.update(value if isinstance(value, dict) else {metric.name: float(value)})
    return out


def image_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return _compute("image", labels, scores)


def pixel_metrics(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    return _compute("pixel", masks, maps)
