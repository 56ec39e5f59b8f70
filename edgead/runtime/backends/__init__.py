"""Backend choice: one interface, several implementations (see base.Backend).

``auto`` tries, in order: native TensorRT (engines for this GPU in the bundle), ONNX Runtime
with the TensorRT provider, with the CUDA provider, then on the CPU, and reports its pick.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ...bundle import Bundle
from ...errors import BackendError, EdgeadError
from .base import Backend
from .onnxruntime import OnnxRuntimeBackend

log = logging.getLogger(__name__)

BackendName = Literal[
    "auto", "tensorrt", "onnxruntime", "onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt"
]
BACKEND_NAMES: tuple[str, ...] = BackendName.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class BackendChoice:
    name: str
    """Concrete backend: tensorrt, onnxruntime-tensorrt, onnxruntime-cuda or onnxruntime-cpu."""
    reason: str


def _ort_providers() -> list[str]:
    try:
        from .onnxruntime import available_providers

        return available_providers()
    except Exception:  # no onnxruntime at all
        return []


def choose_backend(requested: str, bundle: Bundle) -> BackendChoice:
    if requested not in BACKEND_NAMES:
        raise BackendError(f"backend must be one of {', '.join(BACKEND_NAMES)}; got {requested!r}")
    if requested == "tensorrt":
        from .tensorrt import find_engine_set

        engine_set = find_engine_set(bundle)  # raises with the rebuild command when missing
        return BackendChoice("tensorrt", f"engines {engine_set.directory}")
    providers = _ort_providers()
    if requested.startswith("onnxruntime-"):
        return BackendChoice(requested, "requested")
    if requested == "auto":
        try:
            from .tensorrt import find_engine_set

            engine_set = find_engine_set(bundle)
            return BackendChoice("tensorrt", f"native TensorRT with engines {engine_set.directory}")
        except EdgeadError as exc:  # not installed, no GPU, or no engines for this GPU
            log.info("native TensorRT skipped: %s", exc)
            skipped = "no native TensorRT engines usable here; -v says why"
    else:
        skipped = "ONNX Runtime requested"
    for provider, name in (
        ("TensorrtExecutionProvider", "onnxruntime-tensorrt"),
        ("CUDAExecutionProvider", "onnxruntime-cuda"),
        ("CPUExecutionProvider", "onnxruntime-cpu"),
    ):
        if provider in providers:
            return BackendChoice(name, f"{provider} available ({skipped})")
    raise BackendError(
        "no inference backend available: install ONNX Runtime with pip install \"edgead[cpu]\" "
        "(or \"edgead[gpu]\" on an NVIDIA machine)"
    )


def open_stage(choice: BackendChoice, bundle: Bundle, stage: str, threads: int | None = None,
               device: int = 0) -> Backend:
    entry = bundle.manifest.stage(stage)
    if choice.name == "tensorrt":
        from .tensorrt import TensorRTBackend, find_engine_set

        engine_set = find_engine_set(bundle)
        file = next(f for f in engine_set.files if f.stage == stage)
        return TensorRTBackend(bundle.path(file.file), entry.inputs, entry.outputs, device=device,
                               bundle_root=bundle.root, flavour=engine_set.flavour)
    provider = choice.name.removeprefix("onnxruntime-")
    cache = None
    if provider == "tensorrt":  # ORT builds TensorRT engines on first use; cache them per graph, outside the bundle
        root = Path(os.environ.get("EDGEAD_CACHE_DIR", Path.home() / ".cache" / "edgead"))
        cache = root / "ort-tensorrt" / entry.sha256[:16]
        cache.mkdir(parents=True, exist_ok=True)
    return OnnxRuntimeBackend(bundle.path(entry.file), entry.inputs, entry.outputs,
                              provider=provider, threads=threads, cache_dir=cache)  # type: ignore[arg-type]


__all__ = ["BACKEND_NAMES", "Backend", "BackendChoice", "choose_backend", "open_stage"]
