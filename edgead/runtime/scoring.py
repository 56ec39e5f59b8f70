"""Post-processing in numpy/OpenCV: smoothing, image scores, calibration and normalisation.

Normalisation follows anomalib's min-max convention so that the threshold maps to 0.5:

    normalised = clip((score - threshold) / (max - min) + 0.5, 0, 1)

with min, max and threshold measured on anomaly-free validation images.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..bundle import Stats


def smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of each [H, W] map (kernel 2*round(4 sigma)+1, as scipy's default truncate)."""
    if sigma <= 0:
        return maps
    k = 2 * int(round(4 * sigma)) + 1
    return np.stack([cv2.GaussianBlur(m, (k, k), sigma, borderType=cv2.BORDER_REFLECT) for m in maps])


def top_k_mean(maps: np.ndarray, k: int) -> np.ndarray:
    """Mean of the k largest values of each map (DiffusionAD's image score)."""
    flat = maps.reshape(maps.shape[0], -1)
    k = min(k, flat.shape[1])
    top = np.partition(flat, flat.shape[1] - k, axis=1)[:, -k:]
    return top.astype(np.float64).mean(axis=1)


def image_scores(maps: np.ndarray, rule: str, top_k: int = 1) -> np.ndarray:
    if rule == "top_k_mean":
        return top_k_mean(maps, top_k)
    if rule == "max":
        return maps.reshape(maps.shape[0], -1).max(axis=1).astype(np.float64)
    raise ValueError(f"image_score must be one of 'top_k_mean', 'max'; got {rule!r}")


def fit_stats(values: np.ndarray, k_sigma: float, lower: float | None = None) -> Stats:
    """Threshold = mean + k_sigma * std of values from normal images."""
    v = np.asarray(values, np.float64)
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError("calibration needs finite scores from at least one normal image")
    mean, std = float(v.mean()), float(v.std())
    return Stats(
        min=float(v.min()) if lower is None else float(lower),
        max=float(v.max()),
        threshold=mean + k_sigma * std,
        mean=mean,
        std=std,
    )


def normalise(values: np.ndarray | float, stats: Stats) -> np.ndarray:
    span = max(stats.max - stats.min, 1e-12)
    return np.clip((np.asarray(values, np.float64) - stats.threshold) / span + 0.5, 0.0, 1.0)
