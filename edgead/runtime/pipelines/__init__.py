"""One pipeline per method: chains the bundle's stages exactly as the method requires."""

from __future__ import annotations

from ...core.bundle import Bundle
from .base import Pipeline, PipelineOutput


def pipeline_class(bundle: Bundle) -> type[Pipeline]:
    """The runtime pipeline the method registry names for this bundle's method."""
    from ...methods import get_method

    return get_method(bundle.manifest.method).load("pipeline")


__all__ = ["Pipeline", "PipelineOutput", "pipeline_class"]
