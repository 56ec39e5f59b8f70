"""ONNX Runtime backend: CPU, CUDA and TensorRT execution providers."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ...core.bundle import Bundle
from ...core.contracts import TensorSpec
from ...core.errors import BackendError, require
from .base import Backend

if TYPE_CHECKING:
    from . import BackendKind

Provider = Literal["cpu", "cuda", "tensorrt"]
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
}


def check_contract(path: Path, graph: list[tuple[str, str, list]], contract: list[TensorSpec], kind: str) -> None:
    """The graph's inputs or outputs against the manifest's stage contract: names, dtypes, ranks, fixed dims."""
    names = [g[0] for g in graph]
    if names != [c.name for c in contract]:
        raise BackendError(
            f"{path.name}: the graph's {kind}s are {names}, the bundle's contract says "
            f"{[c.name for c in contract]} (graph and manifest do not belong together; re-export)"
        )
    for (name, dtype, shape), spec in zip(graph, contract):
        if ORT_TYPES.get(dtype, dtype) != spec.dtype:
            raise BackendError(f"{path.name}: {kind} {name!r} is {dtype} in the graph, {spec.dtype} in the contract")
        fixed = [d if isinstance(d, int) else None for d in shape]
        if len(shape) != len(spec.shape) or any(
            isinstance(want, int) and have is not None and have != want for have, want in zip(fixed, spec.shape)
        ):
            raise BackendError(
                f"{path.name}: {kind} {name!r} has shape {list(shape)} in the graph, {spec.shape} in the contract"
            )


def ort_module():
    return require(
        "onnxruntime",
        'pip install "edgead[cpu]" (or "edgead[gpu]" on an NVIDIA machine; never both)',
        "Running ONNX graphs",
    )


def available_providers() -> list[str]:
    return list(ort_module().get_available_providers())


def require_provider(provider: Provider) -> str:
    """ONNX Runtime's name of ``provider``; BackendError saying what to install when this ONNX Runtime lacks it."""
    if provider not in PROVIDERS:
        raise BackendError(f"provider must be one of {', '.join(PROVIDERS)}; got {provider!r}")
    wanted, have = PROVIDERS[provider], available_providers()  # no ONNX Runtime at all: the install command
    if wanted not in have:
        raise BackendError(
            f"ONNX Runtime has no {wanted} here (available: {', '.join(have)}); install "
            'onnxruntime-gpu (pip install "edgead[gpu]") on a machine with CUDA'
        )
    return wanted


class OnnxRuntimeBackend(Backend):
    def __init__(
        self,
        path: Path,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        provider: Provider = "cpu",
        threads: int | None = None,
        cache_dir: Path | None = None,
        spinning: bool = False,
    ):
        super().__init__(path, inputs, outputs)
        ort = ort_module()
        wanted = require_provider(provider)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        if not spinning:
            # ONNX Runtime's intra-op threads busy-wait for work after each run by default. A pipeline runs
            # several sessions one after another (five for D3AD, each with its own pool), so the pools of the
            # stages that just ran keep spinning on the cores the next stage needs (docs/studies.md §14.1 measures it).
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list = [wanted]
        if provider == "tensorrt":
            trt_opts = {"trt_fp16_enable": False}
            if cache_dir is not None:
                trt_opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir))
            providers = [(wanted, trt_opts), "CUDAExecutionProvider", "CPUExecutionProvider"]
        elif provider == "cuda":
            providers = [wanted, "CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # ORT raises its own exception types
            raise BackendError(f"ONNX Runtime cannot load {path}: {exc}") from None
        check_contract(path, [(i.name, i.type, i.shape) for i in self.session.get_inputs()], inputs, "input")
        check_contract(path, [(o.name, o.type, o.shape) for o in self.session.get_outputs()], outputs, "output")
        self.name = f"onnxruntime-{provider}"
        self.output_names = [o.name for o in outputs]

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self.session.run(self.output_names, feeds)
        except Exception as exc:
            raise BackendError(f"ONNX Runtime failed on {self.path.name}: {exc}") from None
        return dict(zip(self.output_names, values))

    def close(self) -> None:
        self.session = None


def _provider_open(provider: Provider) -> Callable[[Bundle, str, int | None, int], Backend]:
    def open_stage(bundle: Bundle, stage: str, threads: int | None, device: int) -> Backend:
        entry = bundle.manifest.stage(stage)
        cache = None
        if provider == "tensorrt":  # ORT builds TensorRT engines on first use; cache them per graph, outside the bundle
            root = Path(os.environ.get("EDGEAD_CACHE_DIR", Path.home() / ".cache" / "edgead"))
            cache = root / "ort-tensorrt" / entry.sha256[:16]
            cache.mkdir(parents=True, exist_ok=True)
        return OnnxRuntimeBackend(
            bundle.path(entry.file), entry.inputs, entry.outputs, provider=provider, threads=threads, cache_dir=cache
        )

    return open_stage


def _kind(provider: Provider, priority: int) -> BackendKind:
    from . import BackendKind

    return BackendKind(
        f"onnxruntime-{provider}",
        "onnxruntime",
        priority,
        lambda bundle: f"{require_provider(provider)} available",
        _provider_open(provider),
    )


ORT_TENSORRT = _kind("tensorrt", 10)
ORT_CUDA = _kind("cuda", 20)
ORT_CPU = _kind("cpu", 30)
