"""Whether a bundle's INT8 graphs keep its decisions: the acceptance check of ``export --quantize int8``, and
its re-check whenever the threshold margin it was accepted against changes (``edgead calibrate``).

A stage's INT8 graph is accepted when running it (the other stages fp32) moves no image score, and no map's
99th-percentile pixel, by more than ``tolerance`` of the margin between the good images' mean and the
threshold. A narrower margin (a lower threshold) makes the same change matter more: the stages are then
measured again against the new margin, and those that no longer hold are dropped (fp32 runs instead).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.bundle import Bundle
from ..core.manifest import Calibration
from ..core.scoring import PostProcessor
from .backends.onnxruntime import OnnxRuntimeBackend
from .detector import Detector, ScoredBatch


def int8_detector(bundle: Bundle, int8: dict[str, Path]) -> Detector:
    """The bundle with these stages from INT8 graphs (the others fp32), on ONNX Runtime CPU."""
    backends = {
        e.name: OnnxRuntimeBackend(int8.get(e.name, bundle.path(e.file)), e.inputs, e.outputs)
        for e in bundle.manifest.stages
    }
    return Detector(bundle, backends=backends, require_calibration=False)


def calibrations(bundle: Bundle) -> list[Calibration]:
    m = bundle.manifest
    return [m.calibration] if m.calibration else list(m.products.values())


def margins(cals: list[Calibration], reference: list[ScoredBatch]) -> tuple[float, float]:
    """Distance from the good images' mean to the threshold, image and pixel level (the smallest over the
    products of a bundle that serves several); an uncalibrated bundle: the reference scores' spread."""
    if not cals:
        scores = np.array([r.scores[0] for r in reference])
        maps = np.stack([r.maps[0] for r in reference])
        return float(scores.std() or 1.0), float(maps.std() or 1.0)
    image = min(abs(c.image.threshold - c.image.mean) for c in cals)
    pixel = min(abs(c.pixel.threshold - c.pixel.mean) for c in cals)
    return max(image, 1e-12), max(pixel, 1e-12)


def changes(
    bundle: Bundle,
    det: Detector,
    frames: list[np.ndarray],
    reference: list[ScoredBatch],
    image_margin: float,
    pixel_margin: float,
) -> tuple[float, float, int]:
    """Largest image-score change and p99 map change (shares of the margins) and decisions changed, for ``det``
    (some stages in INT8) against the fp32 ``reference`` on the same frames. Unrounded: a tolerance below any
    report's rounding still applies."""
    got = [det.score_batch([im]) for im in frames]
    score = max(abs(float(g.scores[0] - r.scores[0])) for g, r in zip(got, reference)) / image_margin
    pixel = max(float(np.percentile(np.abs(g.maps[0] - r.maps[0]), 99)) for g, r in zip(got, reference)) / pixel_margin
    flips = 0
    cal = bundle.manifest.calibration
    if cal is not None:
        post = PostProcessor(bundle.manifest.scoring, cal)
        flips = int(
            sum(post.is_anomalous(g.scores)[0] != post.is_anomalous(r.scores)[0] for g, r in zip(got, reference))
        )
    return score, pixel, flips


def recheck(bundle: Bundle, frames: list[np.ndarray], why: str) -> tuple[list[str], list[Path]]:
    """Measure the bundle's accepted INT8 stages again on ``frames`` (good images) against the margins of its
    calibration as it stands now; drop those over the INT8 set's tolerance from the manifest, which records why.
    Returns what was done (one line each, for the caller to report) and the graphs no longer listed, which the
    caller removes once it has saved the manifest. ``why``: what changed the margin."""
    int8 = bundle.manifest.int8
    if int8 is None or not int8.stages or not frames:
        return [], []
    with Detector(bundle, backend="onnxruntime-cpu", require_calibration=False) as det:
        reference = [det.score_batch([im]) for im in frames]
    image_margin, pixel_margin = margins(calibrations(bundle), reference)
    graphs = {q.stage: bundle.path(q.file) for q in int8.stages}
    dropped: dict[str, str] = {}
    for stage, path in graphs.items():
        with int8_detector(bundle, {stage: path}) as det8:
            score, pixel, _ = changes(bundle, det8, frames, reference, image_margin, pixel_margin)
        if max(score, pixel) > int8.tolerance:
            dropped[stage] = (
                f"{why}: INT8 moves scores by {score:.3f} and maps by {pixel:.3f} of the new margin "
                f"(tolerance {int8.tolerance})"
            )
    kept = {s: p for s, p in graphs.items() if s not in dropped}
    if kept:
        with int8_detector(bundle, kept) as det8:  # the set that stays, measured together
            score, pixel, flips = changes(bundle, det8, frames, reference, image_margin, pixel_margin)
        if max(score, pixel) > int8.tolerance:
            reason = (
                f"{why}: the INT8 stages together move scores by {score:.3f} and maps by {pixel:.3f} of the new "
                f"margin (tolerance {int8.tolerance})"
            )
            dropped.update(dict.fromkeys(kept, reason))
            kept = {}
        else:
            int8.score_change, int8.map_change, int8.decisions_changed = round(score, 4), round(pixel, 4), flips
    said = [
        f"INT8 stages re-checked on {len(frames)} good images against the new threshold margin ({why}): "
        + (f"{', '.join(kept)} kept" if kept else "none kept")
        + (f"; dropped {', '.join(dropped)} (fp32 runs instead)" if dropped else "")
    ]
    if not dropped:
        return said, []
    int8.stages = [q for q in int8.stages if q.stage not in dropped]
    int8.kept_fp32.update(dropped)
    if not int8.stages:
        bundle.manifest.int8 = None
        said.append(
            f"the bundle has no INT8 graphs left ({'; '.join(dict.fromkeys(dropped.values()))}); make new "
            f"ones against this threshold with: edgead export {bundle.root} --quantize int8 --calibration GOOD"
        )
    return said, [graphs[s] for s in dropped]
