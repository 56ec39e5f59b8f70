"""INT8 graphs for a bundle (``edgead export BUNDLE --quantize int8 --calibration GOOD``).

ONNX Runtime static quantisation in QDQ format (uint8 activations, int8 per-channel weights: what
ONNX Runtime's CPU kernels and TensorRT's INT8 builders read). Activation ranges come from each
stage's real inputs, recorded while the fp32 pipeline runs on two thirds of the good images; the
other third, never seen by the calibration, decides which stages keep their INT8 graph: a stage
stays fp32 when running it in INT8 (the others fp32) moves an image score, or the 99th percentile of
a map's change, by more than ``tolerance`` of the margin between the good images' mean and the
threshold. No test image is involved. The accepted set is then measured together and recorded in
the manifest; the fp32 graphs stay, and the runtime uses the INT8 ones on request (``--int8``).
"""

from __future__ import annotations

import logging
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..core.bundle import Bundle, load_bundle, sha256_file
from ..core.errors import ExportError
from ..core.manifest import Int8Set, Int8Stage
from ..core.outputs import exclusive, new_temp_dir
from ..data.io import read_image
from ..runtime.detector import Detector
from ..runtime.int8 import calibrations, changes, int8_detector, margins
from ..runtime.sources import expand_images

log = logging.getLogger(__name__)

INT8_DIR = "graphs-int8"
MIN_IMAGES = 6


def quantize_bundle(
    bundle_path: str | Path,
    calibration: str | Path,
    tolerance: float = 0.1,
    max_images: int = 48,
    overwrite: bool = False,
    sign_key: str | Path | None = None,
) -> dict:
    if not 0 < tolerance <= 1:
        raise ExportError(f"--int8-tolerance must be in (0, 1], got {tolerance}")
    with exclusive(bundle_path, "export --quantize"):  # the manifest is read, extended and written as one step
        bundle = load_bundle(bundle_path)
        if bundle.manifest.int8 is not None and not overwrite:
            raise ExportError(f"bundle {bundle.root} already has INT8 graphs; pass --overwrite to make them again")
        images = _good_images(calibration, max_images)
        held = images[2::3]
        seen = [im for i, im in enumerate(images) if i % 3 != 2]
        return _quantize(bundle, str(calibration), seen, held, tolerance, sign_key)


def _quantize(
    bundle: Bundle, source: str, seen: list[np.ndarray], held: list[np.ndarray], tolerance: float, sign_key
) -> dict:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    with Detector(bundle, backend="onnxruntime-cpu", require_calibration=False) as det:
        feeds = _record(det, seen)
        reference = [det.score_batch([im]) for im in held]
        fp32_ms = _median_ms(det, held)
    image_margin, pixel_margin = margins(calibrations(bundle), reference)

    tmp = new_temp_dir(bundle.root, "int8")
    report: dict = {"calibration": source, "n_calibration": len(seen), "n_held_out": len(held), "stages": {}}
    try:
        paths: dict[str, Path] = {}
        for entry in bundle.manifest.stages:
            out = tmp / f"{entry.name}.onnx"
            t0 = time.perf_counter()
            try:
                with _quiet():
                    quantize_static(
                        str(bundle.path(entry.file)),
                        str(out),
                        _reader(feeds.get(entry.name, [])),
                        quant_format=QuantFormat.QDQ,
                        per_channel=True,
                        activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                    )
            except Exception as exc:  # the quantiser's own exception types
                report["stages"][entry.name] = {"kept_fp32": f"quantisation failed: {exc}"}
                continue
            paths[entry.name] = out
            with int8_detector(bundle, {entry.name: out}) as det8:
                score, pixel, flips = changes(bundle, det8, held, reference, image_margin, pixel_margin)
            st = {
                "seconds": round(time.perf_counter() - t0, 1),
                "score_change": round(score, 4),
                "map_change": round(pixel, 4),
                "decisions_changed": flips,
            }
            if max(score, pixel) > tolerance:
                st["kept_fp32"] = (
                    f"INT8 moves scores by {score:.3f} and maps by {pixel:.3f} of the margin (tolerance {tolerance})"
                )
                paths.pop(entry.name)
            report["stages"][entry.name] = st
        if not paths:
            why = "; ".join(f"{k}: {v['kept_fp32']}" for k, v in report["stages"].items())
            raise ExportError(f"no stage keeps its scores in INT8 within the tolerance ({why})")
        with int8_detector(bundle, paths) as det8:  # the accepted set, measured together
            score, pixel, flips = changes(bundle, det8, held, reference, image_margin, pixel_margin)
            int8_ms = _median_ms(det8, held)
        report.update(
            score_change=round(score, 4),
            map_change=round(pixel, 4),
            decisions_changed=flips,
            fp32_ms=round(fp32_ms, 1),
            int8_ms=round(int8_ms, 1),
            speedup=round(fp32_ms / int8_ms, 2),
        )
        for p in tmp.iterdir():  # only the accepted graphs go into the bundle
            if p.stem not in paths:
                p.unlink()
        target = bundle.root / INT8_DIR
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    bundle.manifest.int8 = Int8Set(
        calibration=source,
        n_calibration=len(seen),
        n_held_out=len(held),
        tolerance=tolerance,
        stages=[Int8Stage(s, f"{INT8_DIR}/{s}.onnx", sha256_file(target / f"{s}.onnx")) for s in paths],
        kept_fp32={k: v["kept_fp32"] for k, v in report["stages"].items() if "kept_fp32" in v},
        score_change=report["score_change"],
        map_change=report["map_change"],
        decisions_changed=flips,
    )
    report["signature_dropped"] = bundle.save_manifest(sign_key)
    return report


def tensorrt_graphs(bundle: Bundle, calibration: str | Path, out: Path, max_images: int = 48) -> dict[str, Path]:
    """QDQ graphs TensorRT accepts, for the stages the bundle's INT8 set holds: int8 activations with zero
    point 0 (TensorRT quantises symmetrically), per-channel int8 weights, fp32 biases (TensorRT rejects
    ONNX Runtime's int32 bias DequantizeLinear and uint8 tensors, which the CPU graphs use for speed)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if bundle.manifest.int8 is None:
        raise ExportError(
            f"bundle {bundle.root} has no INT8 stages yet; first run: edgead export {bundle.root} "
            "--quantize int8 --calibration GOOD_IMAGES (it decides which stages keep their scores)"
        )
    images = _good_images(calibration, max_images)
    with Detector(bundle, backend="onnxruntime-cpu", require_calibration=False) as det:
        feeds = _record(det, images)
    graphs = {}
    for q in bundle.manifest.int8.stages:
        graphs[q.stage] = out / f"{q.stage}.trt-qdq.onnx"
        with _quiet():
            quantize_static(
                str(bundle.stage_path(q.stage)),
                str(graphs[q.stage]),
                _reader(feeds[q.stage]),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
            )
    return graphs


def _good_images(calibration: str | Path, max_images: int) -> list[np.ndarray]:
    files = expand_images([str(calibration)])[:max_images]
    if len(files) < MIN_IMAGES:
        raise ExportError(
            f"--calibration {calibration}: {len(files)} images; INT8 calibration needs at least "
            f"{MIN_IMAGES} good images (two thirds set the ranges, one third checks them)"
        )
    return [read_image(f) for f in files]


def _record(det: Detector, images: list[np.ndarray]) -> dict[str, list[dict[str, np.ndarray]]]:
    """Each stage's real inputs while the fp32 pipeline scores the images (the calibration's data)."""
    feeds: dict[str, list[dict[str, np.ndarray]]] = {}
    with det.record_stages() as calls:
        for im in images:
            det.score_batch([im])
    for stage, f, _ in calls:
        feeds.setdefault(stage, []).append(f)
    return feeds


def _reader(items: list[dict[str, np.ndarray]]):
    from onnxruntime.quantization import CalibrationDataReader

    class Feeds(CalibrationDataReader):
        def __init__(self):
            self.items = iter(items)

        def get_next(self):
            return next(self.items, None)

    return Feeds()


@contextmanager
def _quiet():
    """The quantiser warns on the root logger for every bias it cannot fold and every unused initialiser."""
    import onnxruntime

    logging.disable(logging.WARNING)
    onnxruntime.set_default_logger_severity(3)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _median_ms(det: Detector, images: list[np.ndarray], rounds: int = 2) -> float:
    det.score_batch([images[0]])  # warm-up
    times = []
    for _ in range(rounds):
        for im in images:
            t0 = time.perf_counter()
            det.score_batch([im])
            times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))
