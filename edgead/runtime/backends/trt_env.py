"""TensorRT and GPU detection in one place (Polygraphy habit): flavours, versions, GPU, engine headers.

Three flavours of TensorRT, one interface (``TensorRT``):

    TensorRT 10   JetPack 6 / x86: weakly typed networks, the FP16 builder flag, FP32 pinning
    TensorRT 11   strongly typed only: FP16 is written into the ONNX graph before the build
    TensorRT-RTX  (``tensorrt_rtx``, desktop GeForce/RTX): strongly typed, builds ahead of time on a
                  machine without a GPU for target compute capabilities, specialises on the GPU at load

Nothing here imports TensorRT at module import; each function imports it when called and
raises MissingDependencyError with the install command when it is absent.

Engine file format (``.plan``)::

    b"EDGEADTRT\\x01" | uint32 little-endian header length | JSON header | serialized engine

The header records what the engine was built from and for (stage, shapes, dtypes, precision
requested and obtained, TensorRT version, GPU name and compute capability, ONNX sha256), so a
mismatch is detected before TensorRT is asked to deserialize anything.
"""

from __future__ import annotations

import ctypes
import json
import re
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ...core.errors import BackendError, MissingDependencyError

MAGIC = b"EDGEADTRT\x01"
Flavour = Literal["tensorrt", "rtx"]
MODULES: dict[str, str] = {"tensorrt": "tensorrt", "rtx": "tensorrt_rtx"}
INSTALL: dict[str, str] = {
    "tensorrt": 'pip install "edgead[gpu]" on x86-64 with CUDA (or use the TensorRT of JetPack on Jetson; '
    "see the README's GPU deployment section)",
    "rtx": 'pip install "edgead[rtx]" (TensorRT for RTX: GeForce/RTX GPUs of compute 7.5 and newer except 9.x)',
}
RTX_TARGETS = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
"""Compute capabilities TensorRT-RTX 1.7 builds for (no Hopper 9.0: use TensorRT 10/11 or ONNX Runtime CUDA there)."""


def trt_major(version: str) -> int:
    m = re.match(r"(\d+)", version)
    if not m:
        raise BackendError(f"cannot parse TensorRT version {version!r}")
    return int(m.group(1))


@dataclass(frozen=True)
class TensorRT:
    """An installed TensorRT flavour and its module."""

    flavour: Flavour
    module: Any

    @property
    def version(self) -> str:
        return str(self.module.__version__)

    @property
    def strongly_typed(self) -> bool:
        """FP16 comes from the graph, not a builder flag (TensorRT 11, TensorRT-RTX)."""
        return self.flavour == "rtx" or trt_major(self.version) >= 11

    @property
    def label(self) -> str:
        return f"TensorRT-RTX {self.version}" if self.flavour == "rtx" else f"TensorRT {self.version}"


def tensorrt(prefer: str = "auto") -> TensorRT:
    """The installed flavour: ``prefer`` is auto (TensorRT, else TensorRT-RTX), tensorrt or rtx."""
    import importlib

    if prefer not in ("auto", *MODULES):
        raise BackendError(f"--trt must be one of auto, tensorrt, rtx; got {prefer!r}")
    order = list(MODULES) if prefer == "auto" else [prefer]
    errors = []
    for flavour in order:
        try:
            return TensorRT(flavour, importlib.import_module(MODULES[flavour]))  # type: ignore[arg-type]
        except ImportError as exc:
            errors.append(f"{MODULES[flavour]}: {exc}")
    want = " or ".join(INSTALL[f] for f in order)
    raise MissingDependencyError(f"TensorRT is not installed ({'; '.join(errors)}); install it: {want}")


def trt_module():
    """The ``tensorrt`` module of the default flavour (kept for callers that need only the module)."""
    return tensorrt().module


def trt_version(trt: Any = None) -> str:
    return str((trt or trt_module()).__version__)


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


def local_gpu(device: int = 0) -> GpuInfo:
    """Name and compute capability of a CUDA device through the CUDA runtime (no torch)."""
    try:
        from polygraphy import cuda  # type: ignore[import-not-found]

        lib = cuda.wrapper().handle
    except ImportError as exc:
        raise MissingDependencyError(
            f"Polygraphy is not installed ({exc}); install it: {INSTALL['tensorrt']}"
        ) from None
    except Exception as exc:  # Polygraphy raises when libcudart cannot be found
        raise BackendError(f"no CUDA runtime found: {exc}") from None
    major, minor = ctypes.c_int(), ctypes.c_int()
    for attr, out in ((75, major), (76, minor)):  # cudaDevAttrComputeCapabilityMajor/Minor
        status = lib.cudaDeviceGetAttribute(ctypes.byref(out), attr, device)
        if status != 0:
            raise BackendError(f"no usable CUDA device {device} (cudaDeviceGetAttribute status {status})")
    props = ctypes.create_string_buffer(4096)  # cudaDeviceProp begins with char name[256]
    status = lib.cudaGetDeviceProperties(props, device)
    if status != 0:
        raise BackendError(f"cudaGetDeviceProperties failed for device {device} (status {status})")
    name = props.raw[:256].split(b"\0", 1)[0].decode(errors="replace") or f"cuda{device}"
    return GpuInfo(name, f"{major.value}.{minor.value}")


@dataclass
class EngineHeader:
    method: str
    stage: str
    inputs: list[dict]
    outputs: list[dict]
    precision: str
    obtained_precision: str
    tensorrt_version: str
    gpu: str
    """The GPU it was built on ('' for a TensorRT-RTX engine built ahead of time)."""
    compute_capability: str
    edgead_version: str
    onnx_sha256: str
    max_batch: int
    extra: dict = field(default_factory=dict)
    flavour: Flavour = "tensorrt"
    targets: list[str] = field(default_factory=list)
    """TensorRT-RTX: the compute capabilities it was built for ([] = the builder's portable default)."""


def write_engine(path: Path, header: EngineHeader, engine_bytes: bytes) -> None:
    blob = json.dumps(asdict(header), sort_keys=True).encode()
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<I", len(blob)) + blob)
        f.write(engine_bytes)


def read_engine(path: Path) -> tuple[EngineHeader, bytes]:
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise BackendError(f"{path} is not an edgead TensorRT engine (missing header)")
    (n,) = struct.unpack("<I", data[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    try:
        header = EngineHeader(**json.loads(data[start : start + n]))
    except (ValueError, TypeError) as exc:
        raise BackendError(f"{path} has a corrupt engine header: {exc}") from None
    return header, data[start + n :]


def check_engine_header(
    header: EngineHeader, path: Path, bundle_root: Path, gpu: GpuInfo, version: str, flavour: Flavour = "tensorrt"
) -> None:
    """Refuse an engine built for another flavour, version or GPU, naming the rebuild command."""
    rebuild = f"rebuild on this device with: edgead export {bundle_root} --engine {header.precision}"
    if header.flavour != flavour:
        names = {"tensorrt": "TensorRT", "rtx": "TensorRT-RTX"}
        raise BackendError(
            f"{path} was built with {names[header.flavour]}, this machine runs {names[flavour]}; "
            f"{rebuild} --trt {flavour}"
        )
    if header.tensorrt_version != version:
        raise BackendError(
            f"{path} was built with TensorRT {header.tensorrt_version}, this machine has {version}; {rebuild}"
        )
    if flavour == "rtx":
        if header.targets and gpu.compute_capability not in header.targets:
            raise BackendError(
                f"{path} was built for compute capabilities {', '.join(header.targets)}; this GPU "
                f"is {gpu.name} (compute {gpu.compute_capability}); {rebuild} --sm "
                f"{gpu.compute_capability.replace('.', '')}"
            )
        return
    if header.gpu != gpu.name or header.compute_capability != gpu.compute_capability:
        raise BackendError(
            f"{path} was built for {header.gpu} (compute {header.compute_capability}), this GPU is "
            f"{gpu.name} (compute {gpu.compute_capability}); {rebuild}"
        )
