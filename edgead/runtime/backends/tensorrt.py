"""Native TensorRT backend (TensorRT 10/11 ``execute_async_v3``) with Polygraphy's CUDA wrapper.

Device buffers are allocated once per input shape and reused; execution runs on one CUDA
stream. With ``cuda_graph=True`` the enqueue is captured into a CUDA graph after the first run
of a shape and replayed afterwards (fixed-shape camera path). Outputs are host arrays owned by
the backend and overwritten by the next ``run``: copy them to keep them.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import numpy as np

from ...bundle import Bundle, EngineSet, TensorSpec
from ...errors import BackendError
from .base import Backend
from .trt_env import check_engine_header, local_gpu, read_engine, trt_module, trt_version

log = logging.getLogger(__name__)


def find_engine_set(bundle: Bundle, precision: str | None = None, device: int = 0) -> EngineSet:
    """The bundle's engines built for this GPU and TensorRT version (fp16 preferred)."""
    trt = trt_module()
    version = trt_version(trt)
    gpu = local_gpu(device)
    matches = [
        es for es in bundle.manifest.engines
        if es.gpu == gpu.name and es.compute_capability == gpu.compute_capability
        and es.tensorrt_version == version and (precision is None or es.precision == precision)
    ]
    if not matches:
        have = ", ".join(es.directory for es in bundle.manifest.engines) or "none"
        raise BackendError(
            f"bundle {bundle.root} has no TensorRT engines for {gpu.name} with TensorRT {version} "
            f"(it has: {have}); build them on this device with: "
            f"edgead export {bundle.root} --engine {precision or 'fp16'}"
        )
    matches.sort(key=lambda es: es.precision != "fp16")
    return matches[0]


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
    ):
        super().__init__(path, inputs, outputs)
        trt = trt_module()
        from polygraphy import cuda  # type: ignore[import-not-found]

        self.trt, self.cuda = trt, cuda
        self.cuda.wrapper().check(self.cuda.wrapper().handle.cudaSetDevice(device))
        header, blob = read_engine(path)
        check_engine_header(header, path, bundle_root, local_gpu(device), trt_version(trt))
        self.header = header
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise BackendError(f"TensorRT could not deserialize {path}; rebuild it with 'edgead export --engine'")
        self.context = self.engine.create_execution_context()
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
