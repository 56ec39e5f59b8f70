"""A backend against a reference on real images, Polygraphy-style: ``edgead validate`` (reference:
ONNX Runtime CPU) and the export parity check (reference: the PyTorch modules).

Per stage: the reference pipeline's recorded inputs are fed to the backend under test and each
output is compared (max abs / max relative error, NaN/Inf). End to end: image scores of both
pipelines, their rank agreement (Spearman) and decision agreement.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.bundle import Bundle
from ..core.errors import BundleError
from ..core.progress import tracked
from .detector import Detector

TOLERANCES = {
    "fp32": {"atol": 1e-3, "rtol": 1e-3},
    "fp16": {"atol": 5e-2, "rtol": 2e-2},
    "int8": {"atol": 0.25, "rtol": 0.25},
}
"""int8: engines from QDQ graphs against the fp32 graphs; export --quantize already bounded the score change."""


@dataclass
class OutputCheck:
    stage: str
    output: str
    max_abs: float
    max_rel: float
    finite: bool
    passed: bool


@dataclass
class ValidationReport:
    backend: str
    reference: str
    images: int
    tolerance: dict
    outputs: list[OutputCheck] = field(default_factory=list)
    score_max_abs_diff: float = 0.0
    score_rank_correlation: float = 1.0
    decisions_agree: int = 0
    decision_mismatches: list[str] = field(default_factory=list)
    passed: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        lines = [
            f"{self.backend} vs {self.reference} on {self.images} images "
            f"(atol {self.tolerance['atol']}, rtol {self.tolerance['rtol']})",
            f"{'stage':<20}{'output':<12}{'max abs':>12}{'max rel':>12}  finite  result",
        ]
        for o in self.outputs:
            lines.append(
                f"{o.stage:<20}{o.output:<12}{o.max_abs:>12.3e}{o.max_rel:>12.3e}  "
                f"{'yes' if o.finite else 'NO':<6}  {'PASS' if o.passed else 'FAIL'}"
            )
        lines.append(
            f"image scores: max |diff| {self.score_max_abs_diff:.3e}, rank correlation "
            f"{self.score_rank_correlation:.4f}, decisions agree {self.decisions_agree}/{self.images}"
        )
        if self.decision_mismatches:
            more = len(self.decision_mismatches) - 5
            lines.append(
                "decision mismatches: "
                + ", ".join(self.decision_mismatches[:5])
                + (f" and {more} more" if more > 0 else "")
            )
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def sample_images(bundle: Bundle) -> list[np.ndarray]:
    """The real (validation) images the exporter stored in the bundle."""
    try:
        stack = bundle.extra("sample_images")
    except BundleError:
        raise BundleError(f"bundle {bundle.root} holds no sample images; pass --images DIR or re-export it") from None
    return [np.ascontiguousarray(im) for im in stack]


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2:
        return 1.0
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    if ra.std() == 0 or rb.std() == 0:
        return 1.0 if np.array_equal(ra, rb) else 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def compare_outputs(
    stage: str, out: dict[str, np.ndarray], ref: dict[str, np.ndarray], atol: float, rtol: float
) -> list[OutputCheck]:
    checks = []
    for name, r in ref.items():
        o = np.asarray(out[name], np.float64)
        r64 = r.astype(np.float64)
        diff = np.abs(o - r64)
        scale = max(float(np.abs(r64).max()), 1e-12)
        finite = bool(np.isfinite(o).all())
        ok = finite and bool(np.all(diff <= atol + rtol * np.abs(r64)))
        checks.append(OutputCheck(stage, name, float(diff.max()), float(diff.max()) / scale, finite, ok))
    return checks


def _worst(a: OutputCheck | None, b: OutputCheck) -> OutputCheck:
    if a is None:
        return b
    return OutputCheck(
        b.stage,
        b.output,
        max(a.max_abs, b.max_abs),
        max(a.max_rel, b.max_rel),
        a.finite and b.finite,
        a.passed and b.passed,
    )


def validate(
    detector: Detector,
    images: Iterable[np.ndarray],
    precision: str = "fp32",
    reference: Detector | None = None,
    tolerance: dict | None = None,
    names: list[str] | None = None,
    progress: bool = False,
) -> ValidationReport:
    """Compare ``detector``'s stages and scores with ``reference`` on uint8 RGB ``images``.

    The reference (default: ONNX Runtime CPU on the same bundle) runs the pipeline with its
    stage inputs recorded; those exact inputs then go to ``detector``'s backends, so a stage is
    judged on its own error, not on what earlier stages passed down. ``names`` label decision
    mismatches (default: the image's index).
    """
    bundle = detector.bundle
    tol = tolerance or TOLERANCES[precision]
    ref = reference or Detector(bundle, backend="onnxruntime-cpu", require_calibration=False)
    worst: dict[tuple[str, str], OutputCheck] = {}  # one line per stage output: worst over all calls
    ref_scores, test_scores = [], []
    try:
        for im in tracked(images, "validate", len(names) if names is not None else None, bar=progress, unit="image"):
            with ref.record_stages() as calls:
                ref_scores.append(ref.score_batch([im]).scores[0])
            test_scores.append(detector.score_batch([im]).scores[0])
            for stage, feeds, outs in calls:  # compared per image: memory stays flat over many images
                got = detector.run_stage(stage, feeds)
                for c in compare_outputs(stage, got, outs, tol["atol"], tol["rtol"]):
                    worst[(c.stage, c.output)] = _worst(worst.get((c.stage, c.output)), c)
    finally:
        if reference is None:
            ref.close()
    if not ref_scores:
        raise BundleError("no images to validate on")
    rs, ts = np.array(ref_scores), np.array(test_scores)
    cal = detector.calibration
    thr = cal.image.threshold if cal is not None else np.inf
    labels = names or [str(i) for i in range(len(rs))]
    report = ValidationReport(detector.backend_name, ref.backend_name, len(rs), tol, list(worst.values()))
    report.score_max_abs_diff = float(np.abs(rs - ts).max())
    report.score_rank_correlation = _rank_correlation(rs, ts)
    report.decision_mismatches = [labels[i] for i in np.flatnonzero((rs > thr) != (ts > thr))]
    report.decisions_agree = len(rs) - len(report.decision_mismatches)
    report.passed = all(o.passed for o in report.outputs) and not report.decision_mismatches
    return report


def images_from(folder: str | Path, limit: int = 16) -> list[np.ndarray]:
    """Up to ``limit`` images of a folder, as read (the pipeline resizes them)."""
    from ..data.io import list_images, read_image

    files = list_images(folder)[:limit]
    if not files:
        raise BundleError(f"no images in {folder}")
    return [read_image(f) for f in files]
