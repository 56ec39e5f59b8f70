"""edgead: train, export and run diffusion-based visual anomaly detection on edge devices.

Public API (loaded lazily so that ``import edgead`` stays cheap)::

    from edgead import Detector, Result, load_bundle
    from edgead import RemoteDetector                  # the same API (AnomalyDetector), answered by edgead serve
    from edgead import api                             # train, export, engines, INT8, evaluate, calibrate
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .core.version import __version__

__all__ = ["AnomalyDetector", "Detector", "RemoteDetector", "Result", "api", "load_bundle", "__version__"]

_WHERE = {
    "AnomalyDetector": "edgead.runtime.interface",
    "Detector": "edgead.runtime.detector",
    "Result": "edgead.runtime.result",
    "RemoteDetector": "edgead.serving.client",
    "load_bundle": "edgead.core.bundle",
}

if TYPE_CHECKING:  # pragma: no cover
    from . import api
    from .core.bundle import load_bundle
    from .runtime.detector import Detector
    from .runtime.interface import AnomalyDetector
    from .runtime.result import Result
    from .serving.client import RemoteDetector


def __getattr__(name: str) -> Any:
    if name == "api":
        return importlib.import_module("edgead.api")
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'edgead' has no attribute {name!r}")
