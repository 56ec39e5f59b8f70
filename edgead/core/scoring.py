"""Post-processing in numpy/OpenCV (anomalib's ``PostProcessor`` idea): anomaly maps -> image scores,
normalised scores, decisions and pixel masks, all from the bundle manifest's ``scoring`` and
``calibration`` sections. ``Detector`` holds no method knowledge: it asks a ``PostProcessor``.

Image scores are normalised so that the threshold maps to 0.5, with a logistic curve that never saturates:

    normalised = 1 / (1 + exp(-4 (score - threshold) / span)),  span = max(max, threshold) - min(min, threshold)

with min, max and threshold measured on anomaly-free images. Its slope at the threshold is anomalib's min-max
convention's (1 / span), but scores far from it keep their order (a clipped min-max put good parts and defects
alike at 0.000 or 1.000). Pixel maps keep the clipped min-max for their colours (``normalise``).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from .manifest import Calibration, Scoring, Stats
from .registry import Registry


def smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of each [H, W] map (kernel 2*round(4 sigma)+1, as scipy's default truncate).

    Border: OpenCV's BORDER_REFLECT (abc|cba), which is scipy.ndimage's ``reflect`` mode.
    """
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


def pooled_max(maps: np.ndarray, pool: int) -> np.ndarray:
    """Max of each map after a pool x pool average pool, stride 1, no padding (DiAD's image score)."""
    out = []
    for m in maps:
        p = min(pool, *m.shape)
        s = cv2.integral(m.astype(np.float64))  # (H+1, W+1) summed-area table
        window = s[p:, p:] - s[:-p, p:] - s[p:, :-p] + s[:-p, :-p]
        out.append(window.max() / (p * p))
    return np.asarray(out, np.float64)


ScoreRule = Callable[[np.ndarray, Scoring], np.ndarray]
"""``rule(maps [B, H, W], scoring) -> image scores [B]`` (float64); its parameters come from the manifest's scoring."""


def max_rule(maps: np.ndarray, scoring: Scoring) -> np.ndarray:
    return maps.reshape(maps.shape[0], -1).max(axis=1).astype(np.float64)


def top_k_mean_rule(maps: np.ndarray, scoring: Scoring) -> np.ndarray:
    return top_k_mean(maps, scoring.top_k)


def pooled_max_rule(maps: np.ndarray, scoring: Scoring) -> np.ndarray:
    return pooled_max(maps, scoring.pool)


SCORE_RULES: Registry[ScoreRule] = Registry(
    "score rule",
    {
        "max": "edgead.core.scoring:max_rule",
        "top_k_mean": "edgead.core.scoring:top_k_mean_rule",
        "pooled_max": "edgead.core.scoring:pooled_max_rule",
    },
)
"""Manifest ``scoring.image_score`` -> rule. A new rule is a function plus one entry (or the
``edgead.score_rules`` entry-point group); an exporter names it in its ``Scoring``."""


def image_scores(maps: np.ndarray, rule: str, top_k: int = 1, pool: int = 1) -> np.ndarray:
    return SCORE_RULES.get(rule)(maps, Scoring(rule, top_k=top_k, pool=pool))


def normalise(values: np.ndarray | float, stats: Stats) -> np.ndarray:
    """Threshold at 0.5; the span covers the good images and the threshold, so a threshold above
    every good score (few calibration images) does not squash all scores to 0 or 1."""
    span = max(max(stats.max, stats.threshold) - min(stats.min, stats.threshold), 1e-12)
    return np.clip((np.asarray(values, np.float64) - stats.threshold) / span + 0.5, 0.0, 1.0)


def normalise_score(values: np.ndarray | float, stats: Stats) -> np.ndarray:
    """Image scores -> (0, 1), the threshold at 0.5, ordered everywhere (see the module's docstring)."""
    span = max(max(stats.max, stats.threshold) - min(stats.min, stats.threshold), 1e-12)
    z = np.clip(4.0 * (np.asarray(values, np.float64) - stats.threshold) / span, -700.0, 700.0)
    return 1.0 / (1.0 + np.exp(-z))


class PostProcessor:
    """Maps -> smoothed maps and image scores; scores -> normalised scores and decisions."""

    def __init__(self, scoring: Scoring, calibration: Calibration | None = None):
        self.rule = SCORE_RULES.get(scoring.image_score)
        self.scoring, self.calibration = scoring, calibration

    def maps(self, raw: np.ndarray) -> np.ndarray:
        return smooth(raw, self.scoring.smoothing_sigma)

    def scores(self, maps: np.ndarray) -> np.ndarray:
        return self.rule(maps, self.scoring)

    @property
    def threshold(self) -> float:
        return float("nan") if self.calibration is None else self.calibration.image.threshold

    def normalised(self, scores: np.ndarray) -> np.ndarray:
        return normalise_score(scores, self._cal().image)

    def is_anomalous(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self._cal().image.threshold

    def pixel_mask(self, anomaly_map: np.ndarray) -> np.ndarray:
        return anomaly_map > self._cal().pixel.threshold

    def _cal(self) -> Calibration:
        if self.calibration is None:
            from .errors import BundleError

            raise BundleError("the bundle is not calibrated; re-export it with 'edgead export'")
        return self.calibration
