"""The Python API a factory application embeds: ``Detector`` and ``Result``.

detector = Detector.load("tire.edgead")            # backend="auto" picks the fastest
result = detector.predict(frame)                   # BGR uint8 frame from OpenCV
if result.is_anomalous:
    reject(result.normalised_score)
    cv2.imwrite("bad.png", result.overlay())
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..core.bundle import Bundle, load_bundle
from ..core.errors import BackendError, BundleError, InputError
from ..core.preprocess import to_batch
from ..core.scoring import PostProcessor
from .backends import BACKENDS, Backend, BackendChoice, choose_backend, open_stage
from .pipeline import pipeline_class
from .preprocess import as_rgb, check_judgeable
from .result import Color, Result

log = logging.getLogger(__name__)


@dataclass
class ScoredBatch:
    """What ``Detector.score_batch`` returns: maps at model resolution before any decision."""

    maps: np.ndarray
    """float32 [B, h, w] smoothed anomaly maps."""
    scores: np.ndarray
    """float64 [B] raw image scores."""
    timings_ms: dict[str, float]
    reconstruction: np.ndarray | None = None
    """float32 [B, 3, h, w] in the model's input space, for methods that reconstruct."""
    components: dict[str, np.ndarray] = field(default_factory=dict)
    """The pipeline's method-specific intermediates (see PipelineOutput.components)."""


class Detector:
    """Runs a bundle on images: pre-processing, the method's stages, scoring and decision."""

    def __init__(
        self,
        bundle: Bundle,
        backend: str = "auto",
        device: int = 0,
        threads: int | None = None,
        require_calibration: bool = True,
        backends: dict[str, Backend] | None = None,
        product: str | None = None,
        int8: bool = False,
    ):
        """``backends`` (one per stage) replaces backend selection, e.g. to benchmark PyTorch.
        ``product``: which product's thresholds, for a bundle that serves several (DiAD).
        ``int8``: run the bundle's INT8 graphs (edgead export --quantize int8) on ONNX Runtime."""
        if int8:
            bundle = bundle.with_int8()
        try:
            self.calibration = bundle.manifest.calibration_for(product)
        except BundleError:
            if require_calibration or product is not None:
                raise
            self.calibration = None  # several products and none chosen: maps and scores only
        if require_calibration and self.calibration is None:
            raise BundleError(f"bundle {bundle.root} is not calibrated; re-export it with 'edgead export'")
        self.product = product
        self.bundle = bundle
        self._bundle_id = bundle.id
        self.manifest = bundle.manifest
        self.postprocess = PostProcessor(bundle.manifest.scoring, self.calibration)
        stages = [s.name for s in bundle.manifest.stages]
        if backends is not None:
            if sorted(backends) != sorted(stages):
                raise BundleError(f"backends given for {sorted(backends)}, the bundle has the stages {stages}")
            self.choice = BackendChoice(next(iter(backends.values())).name, "given")
            self.backends = dict(backends)
        else:
            self.choice = choose_backend("onnxruntime" if int8 and backend == "auto" else backend, bundle)
            if int8 and BACKENDS.get(self.choice.name).family != "onnxruntime":
                raise BackendError(
                    f"the INT8 graphs run on ONNX Runtime; backend {self.choice.name} runs the "
                    "bundle's engines (choose --backend onnxruntime)"
                )
            self.backends = {}
            try:
                for stage in stages:
                    self.backends[stage] = open_stage(self.choice, bundle, stage, threads=threads, device=device)
            except Exception:
                self.close()
                raise
        try:
            self.pipeline = pipeline_class(bundle)(bundle, self.backends)
        except Exception:
            self.close()
            raise
        log.info("backend %s (%s)", self.choice.name, self.choice.reason)

    @classmethod
    def load(
        cls,
        bundle: str | Path | Bundle,
        backend: str = "auto",
        device: int = 0,
        threads: int | None = None,
        verify: bool = True,
        product: str | None = None,
        int8: bool = False,
    ) -> Detector:
        """Open a bundle directory; ``backend`` is auto, tensorrt, onnxruntime or onnxruntime-<cpu|cuda|tensorrt>;
        ``product`` names the product for a bundle that serves several; ``int8``: its INT8 graphs."""
        b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, verify=verify)
        return cls(b, backend=backend, device=device, threads=threads, product=product, int8=int8)

    # -- properties -------------------------------------------------------------------------
    @property
    def backend_name(self) -> str:
        return self.choice.name

    @property
    def method(self) -> str:
        return self.manifest.method

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.manifest.preprocess.image_size
        return h, w

    @property
    def threshold(self) -> float:
        return self.postprocess.threshold

    @property
    def bundle_id(self) -> str:
        """The bundle's id (``Bundle.id``), carried by every Result."""
        return self._bundle_id

    # -- inference --------------------------------------------------------------------------
    def predict(self, image: np.ndarray | str | Path, color: Color = "bgr", keep_image: bool = True) -> Result:
        """One image: a path, or a uint8 HxW / HxWx3 / HxWx4 array in ``color`` channel order."""
        return self.predict_batch([image], color=color, keep_image=keep_image)[0]

    def predict_batch(
        self, images: Sequence[np.ndarray | str | Path], color: Color = "bgr", keep_image: bool = True
    ) -> list[Result]:
        if color not in ("bgr", "rgb"):
            raise InputError(f"color must be 'bgr' or 'rgb', got {color!r}")
        if len(images) == 0:
            return []
        t0 = time.perf_counter()
        rgbs = [as_rgb(im, color) for im in images]
        sources = [str(im) if isinstance(im, (str, Path)) else None for im in images]
        return self._infer(rgbs, sources, t0, keep_image)

    def predict_rgb(self, rgbs: list[np.ndarray], keep_image: bool = True) -> list[Result]:
        """Fast path for already-converted uint8 RGB frames (used by streams)."""
        return self._infer(rgbs, [None] * len(rgbs), time.perf_counter(), keep_image)

    def score_batch(self, rgbs: list[np.ndarray]) -> ScoredBatch:
        """Smoothed maps at model resolution, raw image scores and per-part timings (ms).

        Needs no calibration: export uses it to calibrate.
        """
        t0 = time.perf_counter()
        x = to_batch(rgbs, self.manifest.preprocess)
        t1 = time.perf_counter()
        out = self.pipeline.run(x)
        t2 = time.perf_counter()
        maps = self.postprocess.maps(out.maps)
        scores = self.postprocess.scores(maps)
        t3 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) * 1e3, **out.timings_ms, "postprocess": (t3 - t2) * 1e3}
        return ScoredBatch(maps, scores, timings, out.reconstruction, out.components)

    @contextmanager
    def record_stages(self) -> Iterator[list[tuple[str, dict[str, np.ndarray], dict[str, np.ndarray]]]]:
        """Collect (stage, feeds, outputs) copies of every stage call made inside the block."""
        calls: list[tuple[str, dict[str, np.ndarray], dict[str, np.ndarray]]] = []

        def observe(stage: str, feeds: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> None:
            calls.append((stage, {k: v.copy() for k, v in feeds.items()}, {k: v.copy() for k, v in out.items()}))

        self.pipeline.observers.append(observe)
        try:
            yield calls
        finally:
            self.pipeline.observers.remove(observe)

    def run_stage(self, stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One stage's backend on the given feeds (for comparisons; pipelines run stages themselves)."""
        if stage not in self.backends:
            raise BundleError(f"bundle has no stage {stage!r}; it has {', '.join(self.backends)}")
        return self.backends[stage].run(feeds)

    def _infer(self, rgbs: list[np.ndarray], sources: list[str | None], t0: float, keep_image: bool) -> list[Result]:
        cal = self.calibration
        if cal is None:
            raise BundleError(f"bundle {self.bundle.root} is not calibrated; re-export it with 'edgead export'")
        for rgb in rgbs:
            check_judgeable(rgb)
        t_in = time.perf_counter()
        scored = self.score_batch(rgbs)
        bad = np.flatnonzero(~np.isfinite(scored.scores))
        if len(bad):  # never a pass: a NaN compares False with any threshold
            where = f"image {bad[0]} of the batch" if len(rgbs) > 1 else "the image"
            raise InputError(
                f"the anomaly score of {where} is not finite ({scored.scores[bad[0]]}): the model "
                "produced an invalid map for it, so it was not judged"
            )
        timings = scored.timings_ms
        t_post = time.perf_counter()
        post = self.postprocess
        norm = post.normalised(scored.scores)
        anomalous = post.is_anomalous(scored.scores)
        results = []
        for i, rgb in enumerate(rgbs):
            h, w = rgb.shape[:2]
            amap = scored.maps[i]
            if amap.shape != (h, w):
                amap = cv2.resize(amap, (w, h), interpolation=cv2.INTER_LINEAR)
            results.append(
                Result(
                    score=float(scored.scores[i]),
                    normalised_score=float(norm[i]),
                    is_anomalous=bool(anomalous[i]),
                    anomaly_map=amap,
                    mask=post.pixel_mask(amap),
                    threshold=cal.image.threshold,
                    latency_ms={},
                    image=rgb if keep_image else None,
                    source=sources[i],
                    pixel_stats=cal.pixel,
                    bundle_id=self._bundle_id,
                )
            )
        t_end = time.perf_counter()
        # image decoding / colour conversion before score_batch counts as pre-processing
        timings["preprocess"] += (t_in - t0) * 1e3
        timings["postprocess"] += (t_end - t_post) * 1e3
        timings["total"] = (t_end - t0) * 1e3
        n = len(rgbs)
        for r in results:
            r.latency_ms = {k: v / n for k, v in timings.items()}
        return results

    def stream(self, source: Any, **options: Any) -> Iterator[Result]:
        """Results for every frame of a camera, video, URL, GStreamer pipeline or image folder.

        See ``edgead.runtime.stream.stream_results`` for the options (stride, roi, on_result...).
        """
        from .stream import stream_results

        return stream_results(self, source, **options)

    def close(self) -> None:
        for b in self.backends.values():
            b.close()
        self.backends = {}

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
