"""Fit how a latent method mixes its reconstruction map with the patch kNN map (edgead/core/fusion.py).

Statistics: mean and standard deviation of each map's pixels over the held-out good images.
Weight: every candidate mixes the maps of the held-out good images and of synthetic anomalies made
from them (the training synthesis) and is scored by the *separation* of their image scores,

    separation = (median synthetic score - mean good score) / standard deviation of the good scores

the quantity the operating point depends on: the threshold is the good scores' mean plus k of
their standard deviations (runtime/calibration.py), so a larger separation misses fewer anomalies
at the same false-reject rate. It does not saturate the way the synthetic AUROC does (1.0 for
most weights on tire). The largest wins; ties go to the smaller kNN weight (more of the diffusion
model). Image AUROC and pixel AUPRO on the synthetic anomalies are recorded beside it. Never test
images: those are for evaluation only (docs/studies.md §8 shows where the rule lands).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

from ..core.bundle import Bundle
from ..core.fusion import FusionParams, PatchKnnConfig, fuse
from ..core.metrics import aupro, auroc
from ..core.scoring import image_scores, smooth

log = logging.getLogger(__name__)
SYNTHETIC_IMAGES = 48
"""At least this many synthetic anomalies (several per held-out image when there are few)."""


def synthetic_anomalies(
    images_u8: np.ndarray, size: int, foreground: bool, count: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` anomalies made from the images in turn: uint8 [count, H, W, 3] and bool masks [count, H, W]."""
    from ..training.data import DeviceImages
    from ..training.synthesis import AnomalySynthesizer

    data = DeviceImages(images_u8, torch.device("cpu"), foreground)
    synth = AnomalySynthesizer(size)
    g = torch.Generator().manual_seed(seed)
    frames, masks = [], []
    with torch.no_grad():
        for _ in range(math.ceil(count / len(images_u8))):
            x, m = synth(data.images.float() / 255.0, g, data.foreground)
            frames.append((x.permute(0, 2, 3, 1).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8))
            masks.append(m[:, 0].numpy() > 0.5)
    return np.concatenate(frames)[:count], np.concatenate(masks)[:count]


def map_components(
    bundle: Bundle, frames: np.ndarray, product: str | None = None, batch: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """(reconstruction maps, kNN maps) [N, H, W] of uint8 RGB frames through the staged bundle."""
    from ..runtime.detector import Detector

    rec, knn = [], []
    with Detector(bundle, backend="onnxruntime-cpu", require_calibration=False, product=product) as det:
        for i in range(0, len(frames), batch):
            parts = det.score_batch(list(frames[i : i + batch])).components
            rec.append(parts["reconstruction_map"])
            knn.append(parts["knn_map"])
    return np.concatenate(rec), np.concatenate(knn)


def candidate_rows(
    good: tuple[np.ndarray, np.ndarray],
    bad: tuple[np.ndarray, np.ndarray],
    masks: np.ndarray,
    stats: FusionParams,
    candidates: tuple[float, ...],
    scoring,
) -> list[dict]:
    """What each candidate weight does on the good images and the synthetic anomalies:
    image AUROC, pixel AUPRO, and the separation of the image scores, (median synthetic - mean good) / sd good."""
    labels = np.r_[np.zeros(len(good[0])), np.ones(len(bad[0]))]
    rows = []
    for w in sorted(set(candidates)):
        params = FusionParams(w, stats.reconstruction, stats.knn)
        maps_good = smooth(fuse(*good, params), scoring.smoothing_sigma)
        maps_bad = smooth(fuse(*bad, params), scoring.smoothing_sigma)
        s_good = image_scores(maps_good, scoring.image_score, scoring.top_k, scoring.pool)
        s_bad = image_scores(maps_bad, scoring.image_score, scoring.top_k, scoring.pool)
        image, pro = auroc(labels, np.r_[s_good, s_bad]), aupro(maps_bad, masks)
        spread = float(s_good.std(ddof=1)) if len(s_good) > 1 else 0.0
        separation = (float(np.median(s_bad)) - float(s_good.mean())) / max(spread, 1e-12)
        rows.append(
            {
                "knn_weight": w,
                "separation": round(separation, 3),
                "image_auroc": round(image, 4),
                "pixel_aupro": round(pro, 4),
            }
        )
    return rows


def choose_weight(
    good: tuple[np.ndarray, np.ndarray],
    bad: tuple[np.ndarray, np.ndarray],
    masks: np.ndarray,
    stats: FusionParams,
    candidates: tuple[float, ...],
    scoring,
) -> tuple[float, list[dict]]:
    """The candidate whose synthetic anomalies lie furthest from the good images (``separation``), and every row."""
    rows = candidate_rows(good, bad, masks, stats, candidates, scoring)
    best = max(rows, key=lambda r: (r["separation"], -r["knn_weight"]))
    return best["knn_weight"], rows


def fit_fusion(bundle: Bundle, images: list[Path], settings: PatchKnnConfig, foreground: bool) -> dict:
    """Set ``bundle.manifest.params.fusion`` from the held-out good ``images``; returns what was measured."""
    from ..training.data import load_images

    params = bundle.manifest.params
    pre = bundle.manifest.preprocess
    good_u8 = load_images(images, pre)
    good = map_components(bundle, good_u8)
    stats = FusionParams(
        0.0, [float(good[0].mean()), float(good[0].std())], [float(good[1].mean()), float(good[1].std())]
    )
    report: dict = {"images": len(images)}
    if settings.weight is not None:
        stats.knn_weight = float(settings.weight)
        report["chosen_by"] = "configuration"
    else:
        frames, masks = synthetic_anomalies(good_u8, pre.image_size[0], foreground, max(SYNTHETIC_IMAGES, len(images)))
        stats.knn_weight, rows = choose_weight(
            good, map_components(bundle, frames), masks, stats, settings.candidates, bundle.manifest.scoring
        )
        report.update(chosen_by="synthetic anomalies", synthetic_images=len(frames), candidates=rows)
        log.info(
            "fusion weight of the kNN map chosen on %d held-out good images and %d synthetic anomalies: %.2f "
            "(separation %s)",
            len(images),
            len(frames),
            stats.knn_weight,
            ", ".join(f"{r['knn_weight']:.2f}: {r['separation']:.2f}" for r in rows),
        )
    params.fusion = stats
    report["knn_weight"] = stats.knn_weight
    return report
