"""``edgead validate``: a backend against ONNX Runtime CPU on real images, Polygraphy-style.

Per stage: the reference pipeline's recorded inputs are fed to the backend under test and each
output is compared (max abs / max relative error, NaN/Inf). End to end: image scores of both
pipelines, their rank agreement (Spearman) and decision agreement.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..bundle import Bundle
from ..errors import BundleError
from .backends.base import Backend
from .detector import Detector

TOLERANCES = {"fp32": {"atol": 1e-3, "rtol": 1e-3}, "fp16": {"atol": 5e-2, "rtol": 2e-2}}


class RecordingBackend(Backend):
    """Wraps a backend and keeps copies of every feed and output (reference side)."""

    def __init__(self, inner: Backend):
        super().__init__(inner.path, inner.inputs, inner.outputs)
        self.inner, self.name = inner, inner.name
        self.calls: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = []

    def _run(self, feeds):
        out = self.inner.run(feeds)
        self.calls.append(({k: v.copy() for k, v in feeds.items()}, {k: v.copy() for k, v in out.items()}))
        return out

    def close(self) -> None:
        self.inner.close()


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
    passed: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        lines = [f"{self.backend} vs {self.reference} on {self.images} images "
                 f"(atol {self.tolerance['atol']}, rtol {self.tolerance['rtol']})",
                 f"{'stage':<20}{'output':<12}{'max abs':>12}{'max rel':>12}  finite  result"]
        for o in self.outputs:
            lines.append(f"{o.stage:<20}{o.output:<12}{o.max_abs:>12.3e}{o.max_rel:>12.3e}  "
                         f"{'yes' if o.finite else 'NO':<6}  {'PASS' if o.passed else 'FAIL'}")
        lines.append(f"image scores: max |diff| {self.score_max_abs_diff:.3e}, rank correlation "
                     f"{self.score_rank_correlation:.4f}, decisions agree {self.decisions_agree}/{self.images}")
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def sample_images(bundle: Bundle) -> list[np.ndarray]:
    """The real (validation) images the exporter stored in the bundle."""
    try:
        stack = bundle.extra("sample_images")
    except BundleError:
        raise BundleError(
            f"bundle {bundle.root} holds no sample images; pass --images DIR or re-export it"
        ) from None
    return [np.ascontiguousarray(im) for im in stack]


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2:
        return 1.0
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    if ra.std() == 0 or rb.std() == 0:
        return 1.0 if np.array_equal(ra, rb) else 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def compare_outputs(stage: str, out: dict[str, np.ndarray], ref: dict[str, np.ndarray], atol: float,
                    rtol: float) -> list[OutputCheck]:
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


def validate(detector: Detector, images: list[np.ndarray], precision: str = "fp32",
             reference_backend: str = "onnxruntime-cpu") -> ValidationReport:
    """Compare ``detector``'s backend with ONNX Runtime CPU on uint8 RGB ``images``."""
    bundle = detector.bundle
    ref = Detector(bundle, backend=reference_backend, require_calibration=False)
    try:
        ref.pipeline.backends = ref.backends = {k: RecordingBackend(v) for k, v in ref.backends.items()}
        tol = TOLERANCES[precision]
        report = ValidationReport(detector.backend_name, reference_backend, len(images), tol)
        ref_scores, test_scores = [], []
        for im in images:
            ref_scores.append(ref.score_maps([im])[1][0])
            test_scores.append(detector.score_maps([im])[1][0])
        for stage, rec in ref.backends.items():
            for feeds, outs in rec.calls:
                got = detector.backends[stage].run(feeds)
                report.outputs += compare_outputs(stage, got, outs, tol["atol"], tol["rtol"])
        # one line per stage output: worst case over all calls
        worst: dict[tuple[str, str], OutputCheck] = {}
        for c in report.outputs:
            key = (c.stage, c.output)
            w = worst.get(key)
            worst[key] = c if w is None else OutputCheck(
                c.stage, c.output, max(w.max_abs, c.max_abs), max(w.max_rel, c.max_rel),
                w.finite and c.finite, w.passed and c.passed)
        report.outputs = list(worst.values())
    finally:
        ref.close()
    rs, ts = np.array(ref_scores), np.array(test_scores)
    cal = bundle.manifest.calibration
    thr = cal.image.threshold if cal is not None else np.inf
    report.score_max_abs_diff = float(np.abs(rs - ts).max())
    report.score_rank_correlation = _rank_correlation(rs, ts)
    report.decisions_agree = int(((rs > thr) == (ts > thr)).sum())
    report.passed = all(o.passed for o in report.outputs) and report.decisions_agree == len(images)
    return report


def images_from(folder: str | Path, size: int, limit: int = 16) -> list[np.ndarray]:
    from ..data.io import list_images, read_image, resize

    files = list_images(folder)[:limit]
    if not files:
        raise BundleError(f"no images in {folder}")
    return [resize(read_image(f), size) for f in files]
