"""The pipeline contract: float32 NCHW input batch -> anomaly maps at model resolution."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from ...bundle import Bundle
from ..backends import Backend


@dataclass
class PipelineOutput:
    maps: np.ndarray
    """float32 [B, h, w] anomaly maps before smoothing."""
    reconstruction: np.ndarray | None = None
    """float32 [B, 3, h, w] in the model's input space, where the method reconstructs."""
    timings_ms: dict[str, float] = field(default_factory=dict)


class Pipeline(ABC):
    stages: tuple[str, ...] = ()

    def __init__(self, bundle: Bundle, backends: dict[str, Backend]):
        self.bundle = bundle
        self.backends = backends

    def _timed(self, timings: dict[str, float], stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        out = self.backends[stage].run(feeds)
        timings[stage] = timings.get(stage, 0.0) + (time.perf_counter() - t0) * 1e3
        return out

    @abstractmethod
    def run(self, x: np.ndarray) -> PipelineOutput: ...
