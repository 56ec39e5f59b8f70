"""PatchCore baseline at run time: feature_extractor stage, then nearest-neighbour distances."""

from __future__ import annotations

import time

import numpy as np

from ...core.bundle import Bundle
from ...core.errors import BundleError
from ...core.knn import bank_scorer, distance_map
from ...runtime.backends import Backend
from ...runtime.pipeline import Pipeline, PipelineOutput


class PatchCorePipeline(Pipeline):
    def __init__(self, bundle: Bundle, backends: dict[str, Backend]):
        super().__init__(bundle, backends)
        bank = bundle.extra("memory_bank")
        channels = bundle.manifest.stage("feature_extractor").outputs[0].shape[1]
        if bank.ndim != 2 or bank.shape != (self.params.memory_bank_size, channels):
            raise BundleError(
                f"bundle {bundle.root}: memory bank has shape {bank.shape}, the manifest "
                f"declares ({self.params.memory_bank_size}, {channels})"
            )
        self.scorer = bank_scorer(bundle, "memory_bank", bank, self.params.knn_probes)
        self.size = tuple(bundle.manifest.preprocess.image_size)

    def run(self, x: np.ndarray) -> PipelineOutput:
        timings: dict[str, float] = {}
        feats = self.stage("feature_extractor", {"image": x}, timings)["features"]
        t0 = time.perf_counter()
        maps = distance_map(self.scorer, feats, self.size)
        timings["knn"] = (time.perf_counter() - t0) * 1e3
        return PipelineOutput(maps.astype(np.float32), None, timings)
