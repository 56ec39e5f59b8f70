"""Calibration from anomaly-free validation images through the exported runtime pipeline.

Image threshold = mean + k_sigma * std of the validation image scores; pixel threshold likewise
over the per-image maxima of the anomaly maps. Test images are never used here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..bundle import Bundle, Calibration
from ..config import CalibrationConfig
from ..data.io import read_image
from ..runtime.detector import Detector
from ..runtime.scoring import fit_stats


def run_images(detector: Detector, paths: list[Path], batch: int = 4, progress: bool = False,
               desc: str = "score") -> tuple[np.ndarray, np.ndarray]:
    """Smoothed maps [N, h, w] and image scores [N] for image files, in batches."""
    from tqdm.auto import tqdm

    maps, scores = [], []
    for i in tqdm(range(0, len(paths), batch), disable=not progress, desc=desc, unit="batch"):
        rgbs = [read_image(p) for p in paths[i:i + batch]]
        scored = detector.score_batch(rgbs)
        maps.append(scored.maps)
        scores.append(scored.scores)
    return np.concatenate(maps), np.concatenate(scores)


def calibrate(bundle: Bundle, images: list[Path], config: CalibrationConfig, source: str,
              backend: str = "onnxruntime-cpu", progress: bool = False) -> Calibration:
    if not images:
        raise ValueError("calibration needs at least one anomaly-free validation image")
    det = Detector(bundle, backend=backend, require_calibration=False)
    try:
        maps, scores = run_images(det, images, progress=progress, desc="calibrate")
    finally:
        det.close()
    per_image_max = maps.reshape(len(maps), -1).max(axis=1)
    pixel = fit_stats(per_image_max, config.k_sigma, lower=float(maps.min()))
    return Calibration(
        rule="mean + k_sigma * std over anomaly-free validation images",
        k_sigma=config.k_sigma,
        n_images=len(images),
        source=source,
        image=fit_stats(scores, config.k_sigma),
        pixel=pixel,
    )
