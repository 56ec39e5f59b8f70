"""One pipeline per method: chains the bundle's stages exactly as the method requires."""

from __future__ import annotations

from ...bundle import Bundle
from ...errors import BundleError
from .base import Pipeline, PipelineOutput


def pipeline_class(bundle: Bundle) -> type[Pipeline]:
    method = bundle.manifest.method
    if method == "diffusionad":
        from .diffusionad import DiffusionADPipeline

        return DiffusionADPipeline
    if method == "patchcore":
        from .patchcore import PatchCorePipeline

        return PatchCorePipeline
    raise BundleError(f"no runtime pipeline for method {method!r}; valid: diffusionad, patchcore")


__all__ = ["Pipeline", "PipelineOutput", "pipeline_class"]
