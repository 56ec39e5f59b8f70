"""Native TensorRT backend (TensorRT 10/11 and TensorRT-RTX ``execute_async_v3``) with Polygraphy's CUDA wrapper.

Device buffers are allocated once per input shape and reused; execution runs on one CUDA
stream. With ``cuda_graph=True`` the enqueue is captured into a CUDA graph after the first run
of a shape and replayed afterwards (fixed-shape camera path); TensorRT-RTX does this itself
(its runtime config's WHOLE_GRAPH_CAPTURE strategy). TensorRT-RTX engines are checked with
``get_engine_validity`` before they load and keep a runtime cache (kernels specialised for this
GPU) beside the engines, or in ~/.cache/edgead when the bundle is read-only. Outputs are host
arrays owned by the backend and overwritten by the next ``run``: copy them to keep them.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import numpy as np

from ...core.bundle import RUNTIME_CACHE_SUFFIX, Bundle
from ...core.contracts import TensorSpec
from ...core.errors import BackendError
from ...core.manifest import EngineSet
from .base import Backend
from .trt_env import TensorRT, check_engine_header, local_gpu, read_engine, tensorrt

log = logging.getLogger(__name__)


def _installed() -> list[TensorRT]:
    found = []
    for flavour in ("tensorrt", "rtx"):
        try:
            found.append(tensorrt(flavour))
        except Exception:  # MissingDependencyError, or a broken install
            continue
    if not found:
        tensorrt("auto")  # raises with the install commands
    return found


def find_engine_set(bundle: Bundle, precision: str | None = None, device: int = 0) -> EngineSet:
    """The bundle's engines this machine can run: an installed flavour and version, built for this GPU
    (TensorRT) or for its compute capability or portably (TensorRT-RTX); fp16 preferred."""
    flavours = {t.flavour: t.version for t in _installed()}
    gpu = local_gpu(device)
    matches = [
        es
        for es in bundle.manifest.engines
        if flavours.get(es.flavour) == es.tensorrt_version
        and (precision is None or es.precision == precision)
        and (
            (es.flavour == "tensorrt" and es.gpu == gpu.name and es.compute_capability == gpu.compute_capability)
            or (es.flavour == "rtx" and (not es.targets or gpu.compute_capability in es.targets))
        )
    ]
    if not matches:
        have = ", ".join(es.directory for es in bundle.manifest.engines) or "none"
        installed = ", ".join(f"{k} {v}" for k, v in flavours.items())
        raise BackendError(
            f"bundle {bundle.root} has no TensorRT engines for {gpu.name} (compute {gpu.compute_capability}) "
            f"with {installed} (it has: {have}); build them with: edgead export {bundle.root} --engine "
            f"{precision or 'fp16'}"
        )
    order = {"fp16": 0, "int8": 1, "fp32": 2}  # int8 sets hold only the stages that kept their scores
    matches.sort(key=lambda es: (order.get(es.precision, 3), es.flavour != "tensorrt"))
    return matches[0]


class RuntimeCache:
    """TensorRT-RTX's runtime cache (kernels it compiled for this GPU), loaded and saved across runs."""

    def __init__(self, runtime_config, engine_path: Path, bundle_root: Path):
        import hashlib
        import os

        self.cache = runtime_config.create_runtime_cache()
        beside = Path(engine_path).with_suffix(RUNTIME_CACHE_SUFFIX)
        fallback = (
            Path(os.environ.get("EDGEAD_CACHE_DIR", Path.home() / ".cache" / "edgead"))
            / "rtx"
            / (hashlib.sha256(str(Path(engine_path).resolve()).encode()).hexdigest()[:16] + RUNTIME_CACHE_SUFFIX)
        )
        self.path = beside if os.access(beside.parent, os.W_OK) else fallback
        if self.path.is_file():
            try:
                self.cache.deserialize(self.path.read_bytes())
            except Exception as exc:  # a cache from another driver or version: start afresh
                log.warning("ignoring runtime cache %s: %s", self.path, exc)
        runtime_config.set_runtime_cache(self.cache)

    def save(self) -> None:
        from ...core.outputs import atomic_write

        try:
            atomic_write(self.path, bytes(self.cache.serialize()))
        except OSError as exc:
            log.warning("cannot save the runtime cache %s: %s", self.path, exc)


class _CudaGraph:
    """cudaStreamBeginCapture / EndCapture / GraphInstantiate / GraphLaunch through ctypes."""

    def __init__(self, cuda_wrapper):
        self.cuda = cuda_wrapper
        self.lib = cuda_wrapper.handle
        self.graph = ctypes.c_void_p()
        self.exec = ctypes.c_void_p()

    def capture(self, stream_ptr: int, enqueue) -> None:
        self.cuda.check(self.lib.cudaStreamBeginCapture(ctypes.c_void_p(stream_ptr), 0))
        ok = enqueue()
        self.cuda.check(self.lib.cudaStreamEndCapture(ctypes.c_void_p(stream_ptr), ctypes.byref(self.graph)))
        if not ok:
            raise BackendError("TensorRT enqueue failed during CUDA graph capture")
        self.cuda.check(self.lib.cudaGraphInstantiate(ctypes.byref(self.exec), self.graph, ctypes.c_ulonglong(0)))

    def launch(self, stream_ptr: int) -> None:
        self.cuda.check(self.lib.cudaGraphLaunch(self.exec, ctypes.c_void_p(stream_ptr)))

    def free(self) -> None:
        if self.exec:
            self.lib.cudaGraphExecDestroy(self.exec)
        if self.graph:
            self.lib.cudaGraphDestroy(self.graph)
        self.exec = ctypes.c_void_p()
        self.graph = ctypes.c_void_p()


class TensorRTBackend(Backend):
    def __init__(
        self,
        path: Path,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        bundle_root: Path,
        device: int = 0,
        cuda_graph: bool = False,
        flavour: str = "tensorrt",
    ):
        super().__init__(path, inputs, outputs)
        flavoured = tensorrt(flavour)
        trt = flavoured.module
        from polygraphy import cuda  # type: ignore[import-not-found]

        self.trt, self.cuda, self.flavour = trt, cuda, flavoured.flavour
        self.cuda.wrapper().check(self.cuda.wrapper().handle.cudaSetDevice(device))
        header, blob = read_engine(path)
        gpu = local_gpu(device)
        check_engine_header(header, path, bundle_root, gpu, flavoured.version, flavoured.flavour)
        self.header = header
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.runtime_cache = None
        runtime_config = None
        if self.flavour == "rtx":
            validity, diagnostics = self.runtime.get_engine_validity(blob)
            if validity == trt.EngineValidity.INVALID:
                raise BackendError(
                    f"TensorRT-RTX cannot run {path} on {gpu.name} (compute {gpu.compute_capability}; diagnostics "
                    f"{diagnostics}): TensorRT for RTX runs on GeForce/RTX GPUs of compute 7.5 and newer except "
                    "9.x (Hopper). On this GPU use --backend onnxruntime-cuda, or build TensorRT 10/11 engines "
                    f"here: edgead export {bundle_root} --engine {header.precision} --trt tensorrt"
                )
            if validity == trt.EngineValidity.SUBOPTIMAL:
                log.warning("%s is valid but suboptimal on %s (diagnostics %s)", path.name, gpu.name, diagnostics)
        self.engine = self.runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise BackendError(f"TensorRT could not deserialize {path}; rebuild it with 'edgead export --engine'")
        if self.flavour == "rtx":
            runtime_config = self.engine.create_runtime_config()
            self.runtime_cache = RuntimeCache(runtime_config, path, bundle_root)
            if cuda_graph:
                runtime_config.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
                cuda_graph = False  # TensorRT-RTX captures and replays by itself
        self.context = (
            self.engine.create_execution_context(runtime_config)
            if runtime_config is not None
            else self.engine.create_execution_context()
        )
        if self.context is None:
            raise BackendError(f"TensorRT could not create an execution context for {path}")
        self.stream = cuda.Stream()
        self.name = "tensorrt"
        self.use_cuda_graph = cuda_graph
        self._device: dict[str, object] = {}
        self._host_out: dict[str, np.ndarray] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._bound: dict[str, int] = {}
        self._graph: _CudaGraph | None = None
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        expected = {s.name for s in inputs}
        if set(self._input_names) != expected:
            raise BackendError(f"{path}: engine inputs {self._input_names} differ from the bundle's {sorted(expected)}")

    def _buffer(self, name: str, shape: tuple[int, ...], dtype) -> object:
        buf = self._device.get(name)
        if buf is None:
            buf = self.cuda.DeviceArray(shape=shape, dtype=dtype)
            self._device[name] = buf
        elif tuple(buf.shape) != shape:
            buf.resize(shape)
        return buf

    def _prepare(self, feeds: dict[str, np.ndarray]) -> bool:
        """Set shapes and addresses; True when anything changed (the CUDA graph is then stale)."""
        changed = False
        for name in self._input_names:
            arr = feeds[name]
            if self._shapes.get(name) != arr.shape:
                if not self.context.set_input_shape(name, arr.shape):
                    raise BackendError(
                        f"{self.path.name}: input {name!r} shape {arr.shape} is outside the engine's profile "
                        f"(max batch {self.header.max_batch}); rebuild with a larger --batch"
                    )
                self._shapes[name] = arr.shape
                changed = True
            changed |= self._bind(name, self._buffer(name, arr.shape, arr.dtype))
        for name in self._output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))
            if name not in self._host_out or self._host_out[name].shape != shape:
                self._host_out[name] = np.empty(shape, dtype)
                changed = True
            changed |= self._bind(name, self._buffer(name, shape, dtype))
        return changed

    def _bind(self, name: str, buf) -> bool:
        """Point TensorRT at ``buf``; True when the address moved (a captured graph is stale)."""
        if self._bound.get(name) == buf.ptr:
            return False
        if not self.context.set_tensor_address(name, buf.ptr):
            raise BackendError(f"{self.path.name}: cannot bind tensor {name!r}")
        self._bound[name] = buf.ptr
        return True

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        changed = self._prepare(feeds)
        for name in self._input_names:
            self._device[name].copy_from(np.ascontiguousarray(feeds[name]), self.stream)
        stream_ptr = self.stream.ptr
        if self.use_cuda_graph:
            if changed or self._graph is None:
                if self._graph is not None:
                    self._graph.free()
                # one plain run first: TensorRT allocates lazily and must not do so while capturing
                if not self.context.execute_async_v3(stream_ptr):
                    raise BackendError(f"TensorRT execution failed for {self.path.name}")
                self._graph = _CudaGraph(self.cuda.wrapper())
                self._graph.capture(stream_ptr, lambda: self.context.execute_async_v3(stream_ptr))
            self._graph.launch(stream_ptr)
        elif not self.context.execute_async_v3(stream_ptr):
            raise BackendError(f"TensorRT execution failed for {self.path.name}")
        for name in self._output_names:
            self._device[name].copy_to(self._host_out[name], self.stream)
        self.stream.synchronize()
        return {name: self._host_out[name] for name in self._output_names}

    def close(self) -> None:
        if self.runtime_cache is not None:
            self.runtime_cache.save()
            self.runtime_cache = None
        if self._graph is not None:
            self._graph.free()
            self._graph = None
        for buf in self._device.values():
            buf.free()
        self._device = {}
        if getattr(self, "stream", None) is not None:
            self.stream.free()
            self.stream = None
        self.context = None
        self.engine = None


def _usable(bundle: Bundle) -> str:
    return f"engines {find_engine_set(bundle).directory}"  # raises with the install or rebuild command


def _open(bundle: Bundle, stage: str, threads: int | None, device: int) -> Backend:
    entry = bundle.manifest.stage(stage)
    engine_set = find_engine_set(bundle, device=device)
    file = next(f for f in engine_set.files if f.stage == stage)
    return TensorRTBackend(
        bundle.path(file.file),
        entry.inputs,
        entry.outputs,
        device=device,
        bundle_root=bundle.root,
        flavour=engine_set.flavour,
    )


def _kind():
    from . import BackendKind

    return BackendKind("tensorrt", "tensorrt", 0, _usable, _open)


NATIVE_TENSORRT = _kind()
