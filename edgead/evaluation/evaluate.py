"""``edgead evaluate``: run a bundle over a dataset's test split and compute every metric."""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import DataError
from ..core.metrics import auroc, image_metrics, metrics_for, pixel_metrics
from ..core.progress import tracked
from ..data.datasets import AnomalyDataset, Sample, content_hash
from ..data.io import read_image, read_mask
from ..runtime.detector import Detector

log = logging.getLogger(__name__)


@dataclass
class EvaluationRun:
    samples: list[Sample]
    scores: np.ndarray
    maps: np.ndarray
    masks: np.ndarray | None
    report: dict = field(default_factory=dict)
    reconstructions: bool = False
    """The method reconstructs (sheets then show the reconstruction)."""


def training_images_among(samples: list[Sample], detector: Detector, key: str = "train_hashes") -> list[Sample]:
    """Test samples whose bytes equal a training image of the bundle's model (``key="validation_hashes"``: a
    held-out image its threshold was calibrated on)."""
    trained = detector.manifest.training_hashes(key)
    return [s for s in samples if trained and content_hash(s.path) in trained]


def evaluate(detector: Detector, dataset: AnomalyDataset, batch: int = 4, progress: bool = True) -> EvaluationRun:
    samples = dataset.test
    if not samples:
        raise DataError(f"{dataset.root} has no test images (expected test/<good|defect>/ or defect folders)")
    seen = training_images_among(samples, detector)
    if seen:
        log.warning(
            "%d of %d test images were training images of this model; they are left out of the metrics",
            len(seen),
            len(samples),
        )
        samples = [s for s in samples if s not in seen]
    calibrated_on = training_images_among(samples, detector, "validation_hashes")
    if calibrated_on:  # their false-reject rate is the one the threshold was fitted to give: not a measurement
        log.warning(
            "%d of %d test images set the threshold (held-out calibration images); they are left out of the metrics",
            len(calibrated_on),
            len(samples),
        )
        samples = [s for s in samples if s not in calibrated_on]
    labels = np.array([s.label for s in samples])
    if labels.all() or not labels.any():
        why = " (the others trained the model or set its threshold)" if seen or calibrated_on else ""
        raise DataError(f"{dataset.root}: evaluation needs both good and anomalous test images{why}")
    h, w = detector.image_size
    maps, scores = [], []
    reconstructs = False
    t0 = time.perf_counter()
    for i in tracked(range(0, len(samples), batch), f"evaluate {dataset.name}", bar=progress, unit="batch"):
        rgbs = [read_image(s.path) for s in samples[i : i + batch]]
        scored = detector.score_batch(rgbs)
        maps.append(scored.maps)
        scores.append(scored.scores)
        reconstructs = scored.reconstruction is not None
    seconds = time.perf_counter() - t0
    maps_a, scores_a = np.concatenate(maps), np.concatenate(scores)
    have_masks = all(s.mask_path is not None for s in samples if s.label)
    gt = None
    if have_masks:
        gt = np.stack(
            [read_mask(s.mask_path, h) if s.mask_path is not None else np.zeros((h, w), bool) for s in samples]
        )
    cal = detector.calibration
    thr = cal.image.threshold if cal is not None else float("nan")
    decisions = scores_a > thr
    report: dict = {
        "dataset": str(dataset.root),
        "bundle": str(detector.bundle.root),
        "method": detector.method,
        "backend": detector.backend_name,
        "test_images": {"good": int((labels == 0).sum()), "anomalous": int(labels.sum())},
        "image": image_metrics(labels, scores_a),
        "pixel": pixel_metrics(maps_a, gt) if gt is not None else None,
        "at_calibrated_threshold": {
            "threshold": thr,
            "false_reject_rate": float(decisions[labels == 0].mean()),
            "miss_rate": float((~decisions[labels == 1]).mean()),
            "accuracy": float((decisions == labels.astype(bool)).mean()),
            "rule": cal.rule if cal else None,
            "target_frr": cal.target_frr if cal else None,
            "calibration_images": cal.n_images if cal else None,
            "threshold_interval_90": cal.threshold_interval if cal else None,
            "synthetic_miss_rate": cal.synthetic_miss_rate if cal else None,
        },
        "excluded_training_images": len(seen),
        "excluded_calibration_images": len(calibrated_on),
        "per_defect_auroc": {},
        "seconds_per_image": seconds / len(samples),
    }
    mismatch = calibration_mismatch(scores_a[labels == 0], cal)
    if mismatch:
        report["calibration_mismatch"] = mismatch
        log.warning(mismatch)
    good = labels == 0
    for defect in sorted({s.defect for s in samples if s.label}):
        sel = good | np.array([s.defect == defect for s in samples])
        report["per_defect_auroc"][defect] = auroc(labels[sel], scores_a[sel])
    return EvaluationRun(samples, scores_a, maps_a, gt, report, reconstructs)


def calibration_mismatch(good_scores: np.ndarray, cal) -> str | None:
    """A warning when the data set's good images score far outside the bundle's calibration: most of them
    above both the threshold and every calibration image, which a model only does on another product
    or another imaging setup (a hazelnut bundle on grid images, a changed camera or light)."""
    if cal is None or len(good_scores) == 0:
        return None
    median = float(np.median(good_scores))
    if not (median > cal.image.threshold and median > cal.image.max):
        return None
    above = int((good_scores > cal.image.threshold).sum())
    return (
        f"the good test images score far above this bundle's calibration ({above} of {len(good_scores)} above the "
        f"threshold {cal.image.threshold:.4g}; their median {median:.4g}, the highest of its {cal.n_images} "
        f"calibration images {cal.image.max:.4g}): the product or the imaging setup looks different from what "
        "the model was trained and calibrated on; check the bundle (and --product), or re-calibrate on this "
        "line's good parts with 'edgead calibrate'"
    )


def mean_report(reports: dict[str, dict]) -> dict:
    """The mean of per-product reports: every metric averaged over products (the paper's multi-class mean)."""
    first = next(iter(reports.values()))

    def mean(path: tuple[str, ...]):
        values = []
        for r in reports.values():
            v = r
            for k in path:
                v = v.get(k) if isinstance(v, dict) else None
            if isinstance(v, (int, float)):
                values.append(float(v))
        return sum(values) / len(values) if len(values) == len(reports) else None

    out = {
        "image": {k: mean(("image", k)) for k in first["image"]},
        "pixel": {k: mean(("pixel", k)) for k in first["pixel"]} if first.get("pixel") else None,
        # each product has its own threshold; a mean of them means nothing
        "at_calibrated_threshold": {
            "threshold": None,
            **{k: mean(("at_calibrated_threshold", k)) for k in ("false_reject_rate", "miss_rate", "accuracy")},
        },
        "per_defect_auroc": {},
        "products": list(reports),
    }
    return out


def format_table(report: dict) -> str:
    columns = sorted(
        {m.name: m for level in ("image", "pixel") for m in metrics_for(level)}.values(),
        key=lambda m: (m.order, m.name),
    )
    widths = [max(8, len(m.title) + 2) for m in columns]
    lines = [f"{'level':<7}" + "".join(f"{m.title:>{w}}" for m, w in zip(columns, widths))]
    for name, row in (("image", report["image"]), ("pixel", report.get("pixel"))):
        if row is None:
            lines.append(f"{name:<7}{'(no masks)':>{sum(widths)}}")
            continue
        lines.append(
            f"{name:<7}"
            + "".join(
                f"{row[m.name]:>{w}.3f}" if row.get(m.name) is not None else f"{'-':>{w}}"
                for m, w in zip(columns, widths)
            )
        )
    c = report["at_calibrated_threshold"]
    at = (
        f"the calibrated threshold {c['threshold']:.4g}"
        if c.get("threshold") is not None
        else "each product's threshold"
    )
    lines.append(
        f"at {at}: false rejects {c['false_reject_rate']:.1%}, "
        f"misses {c['miss_rate']:.1%}, accuracy {c['accuracy']:.1%}"
    )
    if c.get("rule"):
        target = f", target false-reject rate {c['target_frr']:.1%}" if c.get("target_frr") is not None else ""
        synth = c.get("synthetic_miss_rate")
        lines.append(
            f"  threshold from {c['calibration_images']} good images ({c['rule']} rule{target}); "
            f"90% interval {c['threshold_interval_90'][0]:.4g}..{c['threshold_interval_90'][1]:.4g}"
            + (f"; misses {synth:.0%} of synthetic anomalies" if synth is not None and synth == synth else "")
        )
    if report.get("per_defect_auroc"):
        lines.append(
            "image AUROC per defect: " + ", ".join(f"{k} {v:.3f}" for k, v in report["per_defect_auroc"].items())
        )
    return "\n".join(lines)


def save_sheets(
    detector: Detector, run: EvaluationRun, out_dir: Path, per_class: int = 3, name: str = "sheet.png"
) -> list[Path]:
    """Input / reconstruction / map / predicted mask / ground truth rows for a few images: of the good and of the
    defective images each, the wrong verdicts (false rejects, misses) and the right ones alternately, so the
    sheet shows what the threshold gets wrong as well as what it gets right."""
    from .report import sample_sheet

    threshold = detector.threshold

    def pick(label: int) -> list[int]:
        ids = [i for i, s in enumerate(run.samples) if s.label == label]
        wrong = [i for i in ids if (run.scores[i] > threshold) != bool(label)]
        right = [i for i in ids if i not in wrong]
        right = right[:: max(1, len(right) // per_class)]  # spread over the defect types
        mixed = [i for pair in itertools.zip_longest(wrong, right) for i in pair if i is not None]
        return sorted(mixed[:per_class])

    return [sample_sheet(detector, run, pick(0) + pick(1), out_dir / name)]
