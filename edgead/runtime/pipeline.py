"""The pipeline contract: float32 NCHW input batch -> anomaly maps at model resolution.

A pipeline runs its stages through ``self.stage(name, feeds, timings)``: that is where the
timings are taken and where observers (``Detector.record_stages``) see every feed and output.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..core.bundle import Bundle
from .backends import Backend

StageObserver = Callable[[str, dict[str, np.ndarray], dict[str, np.ndarray]], None]


@dataclass
class PipelineOutput:
    maps: np.ndarray
    """float32 [B, h, w] anomaly maps before smoothing."""
    reconstruction: np.ndarray | None = None
    """float32 [B, 3, h, w] in the model's input space, where the method reconstructs."""
    timings_ms: dict[str, float] = field(default_factory=dict)
    components: dict[str, np.ndarray] = field(default_factory=dict)
    """Method-specific intermediate results (e.g. D3AD's raw latent and feature maps, its start steps)."""


class Pipeline:
    def __init__(self, bundle: Bundle, backends: dict[str, Backend]):
        self.bundle = bundle
        self.backends = backends
        self.params = bundle.manifest.params
        self.observers: list[StageObserver] = []

    def stage(self, name: str, feeds: dict[str, np.ndarray], timings: dict[str, float]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        out = self.backends[name].run(feeds)
        timings[name] = timings.get(name, 0.0) + (time.perf_counter() - t0) * 1e3
        for observe in self.observers:
            observe(name, feeds, out)
        return out

    def run(self, x: np.ndarray) -> PipelineOutput:
        raise NotImplementedError


def pipeline_class(bundle: Bundle) -> type[Pipeline]:
    """The runtime pipeline the method registry names for this bundle's method."""
    from ..core.methods import get_method

    return get_method(bundle.manifest.method).load("pipeline")
