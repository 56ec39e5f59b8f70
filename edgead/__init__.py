"""edgead: train, export and run diffusion-based visual anomaly detection on edge devices.

Public API (loaded lazily so that ``import edgead`` stays cheap)::

    from edgead import Detector, Result, load_bundle
    from edgead import RemoteDetector                  # the same API, answered by edgead serve
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core.version import __version__

__all__ = ["Detector", "RemoteDetector", "Result", "load_bundle", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .core.bundle import load_bundle
    from .runtime.detector import Detector
    from .runtime.result import Result
    from .serving.client import RemoteDetector


def __getattr__(name: str) -> Any:
    if name in ("Detector", "Result"):
        from . import runtime

        return getattr(runtime, name)
    if name == "RemoteDetector":
        from .serving.client import RemoteDetector

        return RemoteDetector
    if name == "load_bundle":
        from .core.bundle import load_bundle

        return load_bundle
    raise AttributeError(f"module 'edgead' has no attribute {name!r}")
