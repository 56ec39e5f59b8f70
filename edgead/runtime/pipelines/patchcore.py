"""PatchCore baseline at run time: feature_extractor stage, then nearest-neighbour distances."""

from __future__ import annotations

import time

import cv2
import numpy as np

from ...bundle import Bundle
from ...errors import BundleError
from ..backends import Backend
from ..knn import NearestNeighbourScorer
from .base import Pipeline, PipelineOutput


class PatchCorePipeline(Pipeline):
    stages = ("feature_extractor",)

    def __init__(self, bundle: Bundle, backends: dict[str, Backend]):
        super().__init__(bundle, backends)
        if bundle.manifest.patchcore is None:
            raise BundleError(f"bundle {bundle.root} has no patchcore section")
        self.scorer = NearestNeighbourScorer(bundle.extra("memory_bank"))
        self.size = tuple(bundle.manifest.preprocess.image_size)

    def run(self, x: np.ndarray) -> PipelineOutput:
        timings: dict[str, float] = {}
        feats = self._timed(timings, "feature_extractor", {"image": x})["features"]
        t0 = time.perf_counter()
        d = self.scorer.distances(feats)
        h, w = self.size
        maps = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) for m in d])
        timings["knn"] = (time.perf_counter() - t0) * 1e3
        return PipelineOutput(maps.astype(np.float32), None, timings)
