"""TensorRT logic without a GPU: a fake TensorRT module stands in for the real API.

Tests that need real TensorRT and a GPU are marked ``gpu`` and skipped here with the reason.
"""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgead.core.bundle import load_bundle
from edgead.core.errors import BackendError, EdgeadError, ExportError
from edgead.export.tensorrt import (
    build_engines,
    network_flags,
    obtained_precision,
    profile_shapes,
)
from edgead.runtime.backends import choose_backend
from edgead.runtime.backends.trt_env import (
    EngineHeader,
    GpuInfo,
    check_engine_header,
    read_engine,
    write_engine,
)

GPU = GpuInfo("NVIDIA Orin (nvgpu)", "8.7")


class FakeTRT:
    """Just enough of the TensorRT 10/11 Python API to drive the builder's logic."""

    def __init__(self, version="10.3.0", fp16_capable=True):
        self.__version__ = version
        self.fp16_capable = fp16_capable
        self.log = {"flags": [], "network_flags": [], "pinned": 0, "parsed": [], "profiles": []}
        trt = self
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda s, level=0: None})
        self.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=1)
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
        self.ProfilingVerbosity = SimpleNamespace(DETAILED="detailed")
        self.BuilderFlag = SimpleNamespace(FP16="FP16", OBEY_PRECISION_CONSTRAINTS="OBEY")
        self.LayerType = SimpleNamespace(NORMALIZATION="norm", SOFTMAX="softmax", REDUCE="reduce", CONVOLUTION="conv")
        self.LayerInformationFormat = SimpleNamespace(JSON="json")
        self.float32 = "float32"

        class Layer:
            def __init__(self, kind):
                self.type, self.num_outputs, self.precision = kind, 1, None

            def set_output_type(self, i, t):
                trt.log["pinned"] += 1

        class Network:
            def __init__(self, flags):
                self.flags = flags
                self.layers = [Layer("conv"), Layer("norm"), Layer("softmax")]
                self.num_layers = len(self.layers)

            def get_layer(self, i):
                return self.layers[i]

        class Config:
            def __init__(self):
                self.flags = set()
                self.profiling_verbosity = None

            def set_memory_pool_limit(self, pool, n):
                self.workspace = n

            def set_flag(self, f):
                self.flags.add(f)
                trt.log["flags"].append(f)

            def add_optimization_profile(self, p):
                trt.log["profiles"].append(p.shapes)

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, lo, opt, hi):
                self.shapes[name] = (lo, opt, hi)

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                trt.log["network_flags"].append(flags)
                self.network = Network(flags)
                return self.network

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                half = trt.fp16_capable and ("FP16" in config.flags or trt.log["parsed"][-1].endswith("fp16.onnx"))
                return json.dumps({"half": bool(half)}).encode()

        class Parser:
            num_errors = 0

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                trt.log["parsed"].append(path)
                return Path(path).is_file()

        class Engine:
            def __init__(self, blob):
                self.half = json.loads(blob)["half"]

            def create_engine_inspector(self):
                fmt = "Row major linear FP16 format" if self.half else "Row major linear FP32 format"
                info = {
                    "Layers": [
                        {"Name": "conv", "Outputs": [{"Format/Datatype": fmt}]},
                        {"Name": "norm", "Outputs": [{"Format/Datatype": "Row major linear FP32 format"}]},
                    ]
                }
                return SimpleNamespace(get_engine_information=lambda f: json.dumps(info))

        self.Builder = Builder
        self.OnnxParser = Parser
        self.Runtime = lambda logger: SimpleNamespace(deserialize_cuda_engine=lambda b: Engine(b))


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    dst = tmp_path / "b.edgead"
    shutil.copytree(tiny_bundle, dst)
    return dst


def ok_validator(calls):
    def v(bundle, engine_dir, engine_set, precision):
        calls.append(sorted(p.name for p in engine_dir.iterdir()))
        return {"passed": True}

    return v


def test_trt10_fp16_build_records_engines(bundle_copy):
    trt, calls = FakeTRT("10.3.0"), []
    es, report = build_engines(bundle_copy, "fp16", max_batch=2, trt=trt, gpu=GPU, validator=ok_validator(calls))
    assert trt.log["network_flags"] == [0, 0] and trt.log["flags"].count("FP16") == 2
    assert es.directory == "engines/nvidia-orin-nvgpu-trt10.3.0-fp16"
    assert calls == [["denoiser_step.plan", "segmenter.plan"]]
    assert report["stages"]["denoiser_step"]["obtained_precision"] == "fp16 (1/2 layers FP16)"
    # denoiser_step sees [x_ts; x_tb]: its profile allows twice the frame batch
    assert trt.log["profiles"][0]["x_t"][2][0] == 4 and trt.log["profiles"][1]["image"][2][0] == 2
    b = load_bundle(bundle_copy)  # sha256 of the engines verified
    header, blob = read_engine(bundle_copy / es.files[0].file)
    assert header.stage == "denoiser_step" and header.gpu == GPU.name and header.max_batch == 4
    assert header.onnx_sha256 == b.manifest.stage("denoiser_step").sha256
    with pytest.raises(ExportError, match="exists; pass --overwrite"):
        build_engines(bundle_copy, "fp16", trt=trt, gpu=GPU, validator=ok_validator([]))


def test_trt10_retries_with_fp32_pins_when_validation_fails(bundle_copy):
    trt, attempts = FakeTRT("10.3.0"), []

    def flaky(bundle, engine_dir, engine_set, precision):
        attempts.append(trt.log["pinned"])
        if len(attempts) == 1:
            raise ExportError("overflow")
        return {"passed": True}

    es, report = build_engines(bundle_copy, "fp16", trt=trt, gpu=GPU, validator=flaky)
    assert len(attempts) == 2 and attempts[0] == 0 and attempts[1] > 0
    assert "OBEY" in trt.log["flags"] and report["stages"]["segmenter"]["pinned_fp32"] is True


def test_failed_validation_leaves_bundle_untouched(bundle_copy):
    before = (bundle_copy / "manifest.yaml").read_text()

    def bad(*a):
        raise ExportError("engines disagree")

    with pytest.raises(ExportError, match="engines disagree"):
        build_engines(bundle_copy, "fp16", trt=FakeTRT("10.3.0"), gpu=GPU, validator=bad)
    assert (bundle_copy / "manifest.yaml").read_text() == before
    assert not (bundle_copy / "engines").exists() or not any((bundle_copy / "engines").iterdir())
    assert not list(bundle_copy.glob(".engines.*"))


def test_trt11_writes_fp16_into_the_graph(bundle_copy):

    trt = FakeTRT("11.0.0")
    es, report = build_engines(bundle_copy, "fp16", trt=trt, gpu=GPU, validator=ok_validator([]))
    assert trt.log["network_flags"] == [2, 2]  # 1 << STRONGLY_TYPED
    assert "FP16" not in trt.log["flags"]
    assert all(p.endswith("fp16.onnx") for p in trt.log["parsed"])
    assert report["stages"]["segmenter"]["obtained_precision"].startswith("fp16")


def test_fp16_request_that_yields_fp32_is_an_error(bundle_copy):
    with pytest.raises(ExportError, match="fp16 was requested but TensorRT built an FP32 engine"):
        build_engines(
            bundle_copy, "fp16", trt=FakeTRT("10.3.0", fp16_capable=False), gpu=GPU, validator=ok_validator([])
        )


def test_fp32_build(bundle_copy):
    trt = FakeTRT("10.3.0")
    es, _ = build_engines(bundle_copy, "fp32", trt=trt, gpu=GPU, validator=ok_validator([]))
    assert "FP16" not in trt.log["flags"] and es.precision == "fp32"
    assert es.obtained_precision.startswith("denoiser_step: fp32")


def test_trt11_fp16_graph_keeps_fp32_io(tiny_bundle, tmp_path):
    import onnx

    from edgead.export.tensorrt import fp16_onnx

    out = fp16_onnx(tiny_bundle / "graphs" / "segmenter.onnx", tmp_path / "fp16.onnx")
    m = onnx.load(str(out))
    f32 = onnx.TensorProto.FLOAT
    assert all(i.type.tensor_type.elem_type == f32 for i in m.graph.input)
    assert all(o.type.tensor_type.elem_type == f32 for o in m.graph.output)
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer)


def test_network_flags_and_profiles():
    from edgead.runtime.backends.trt_env import TensorRT

    assert network_flags(TensorRT("tensorrt", FakeTRT("10.3.0"))) == 0
    assert network_flags(TensorRT("tensorrt", FakeTRT("11.0.0"))) == 2
    assert network_flags(TensorRT("rtx", FakeTRT("1.7.1"))) == 2  # TensorRT-RTX: strongly typed only
    assert profile_shapes(["batch", 3, 64, 64], 4) == ((1, 3, 64, 64), (4, 3, 64, 64), (4, 3, 64, 64))


def test_obtained_precision_parsing():
    info = {"Layers": [{"Outputs": [{"Format/Datatype": "Half"}]}, {"Outputs": [{"Format/Datatype": "Float"}]}, "x"]}
    assert obtained_precision(json.dumps(info)) == ("fp16", 1, 2)
    assert obtained_precision(json.dumps({"Layers": []})) == ("fp32", 0, 0)
    # TensorRT 11's inspector has separate DataType and Format fields
    info11 = {
        "Layers": [
            {"Outputs": [{"DataType": "Half", "Format": "Row major linear FP16 format (kLINEAR)"}]},
            {"Outputs": [{"DataType": "Float", "Format": "Row major linear FP32 format (kLINEAR)"}]},
        ]
    }
    assert obtained_precision(json.dumps(info11)) == ("fp16", 1, 2)


def test_precision_from_the_rtx_build_log():
    from edgead.export.tensorrt import precision_from_build_log

    table = (
        "Layers:\n"
        "Name: a, LayerType: kgen, Inputs: [ { Name: x, Datatype: Float }], Outputs: [ { Name: y, Datatype: Half }]\n"
        "Name: b, LayerType: kgen, Inputs: [ { Name: y, Datatype: Half }], Outputs: [ { Name: z, Datatype: Float }]\n"
        "Name: c, LayerType: shape_call, Inputs: [], Outputs: []"
    )
    assert precision_from_build_log(["building", table, "done"]) == ("fp16", 1, 3)
    with pytest.raises(ExportError, match="no layer table"):
        precision_from_build_log(["nothing"])


def test_rtx_targets_are_checked():
    from edgead.export.tensorrt import parse_targets

    assert parse_targets("86,89,120") == ["8.6", "8.9", "12.0"] and parse_targets("sm75") == ["7.5"]
    with pytest.raises(ExportError, match="'90' is not a compute capability TensorRT-RTX builds for"):
        parse_targets("86,90")


def test_engine_header_round_trip_and_checks(tmp_path):
    h = EngineHeader(
        "diffusionad",
        "segmenter",
        [],
        [],
        "fp16",
        "fp16 (3/4 layers FP16)",
        "10.3.0",
        GPU.name,
        GPU.compute_capability,
        "0.1.0",
        "abc",
        2,
    )
    p = tmp_path / "s.plan"
    write_engine(p, h, b"ENGINE")
    h2, blob = read_engine(p)
    assert h2 == h and blob == b"ENGINE"
    check_engine_header(h2, p, tmp_path, GPU, "10.3.0")
    with pytest.raises(
        BackendError, match=r"built with TensorRT 10.3.0, this machine has 10.7.0; rebuild .* --engine fp16"
    ):
        check_engine_header(h2, p, tmp_path, GPU, "10.7.0")
    with pytest.raises(BackendError, match="was built for NVIDIA Orin .* this GPU is NVIDIA H100"):
        check_engine_header(h2, p, tmp_path, GpuInfo("NVIDIA H100", "9.0"), "10.3.0")
    with pytest.raises(BackendError, match="was built with TensorRT, this machine runs TensorRT-RTX"):
        check_engine_header(h2, p, tmp_path, GPU, "10.3.0", "rtx")
    rtx = EngineHeader(
        "d3ad",
        "decoder",
        [],
        [],
        "fp16",
        "fp16",
        "1.7.1",
        "",
        "",
        "0.2.0",
        "abc",
        2,
        flavour="rtx",
        targets=["8.6", "8.9"],
    )
    check_engine_header(rtx, p, tmp_path, GpuInfo("NVIDIA GeForce RTX 4090", "8.9"), "1.7.1", "rtx")
    with pytest.raises(
        BackendError,
        match="built for compute capabilities 8.6, 8.9; this GPU is NVIDIA H100 "
        r"\(compute 9.0\).*--sm 90",
    ):
        check_engine_header(rtx, p, tmp_path, GpuInfo("NVIDIA H100", "9.0"), "1.7.1", "rtx")
    (tmp_path / "junk.plan").write_bytes(b"not an engine")
    with pytest.raises(BackendError, match="not an edgead TensorRT engine"):
        read_engine(tmp_path / "junk.plan")


def test_backend_selection_order(tiny_bundle, monkeypatch):
    import edgead.runtime.backends.onnxruntime as ort_backend
    import edgead.runtime.backends.tensorrt as trt_backend

    b = load_bundle(tiny_bundle)
    all_eps = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort_backend, "available_providers", lambda: all_eps)
    assert choose_backend("auto", b).name == "onnxruntime-tensorrt"
    assert choose_backend("onnxruntime", b).name == "onnxruntime-tensorrt"
    monkeypatch.setattr(ort_backend, "available_providers", lambda: all_eps[1:])
    assert choose_backend("auto", b).name == "onnxruntime-cuda"
    monkeypatch.setattr(trt_backend, "find_engine_set", lambda bundle: SimpleNamespace(directory="engines/x"))
    assert choose_backend("auto", b).name == "tensorrt"
    assert choose_backend("onnxruntime-cpu", b).name == "onnxruntime-cpu"


def test_tensorrt_backend_without_tensorrt_names_the_install(tiny_bundle):
    import edgead.runtime.backends.trt_env as trt_env

    real = trt_env.MODULES
    trt_env.MODULES = {"tensorrt": "tensorrt_missing", "rtx": "tensorrt_rtx_missing"}
    try:
        with pytest.raises(EdgeadError, match=r'TensorRT is not installed.*pip install "edgead\[gpu\]".*edgead\[rtx\]'):
            choose_backend("tensorrt", load_bundle(tiny_bundle))
    finally:
        trt_env.MODULES = real


def test_validate_detects_a_wrong_backend(tiny_bundle):
    from edgead import Detector
    from edgead.runtime.backends.base import Backend
    from edgead.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from edgead.runtime.validate import validate

    class Noisy(Backend):  # a backend whose segmenter output is off by 0.01
        name = "noisy"

        def __init__(self, inner):
            super().__init__(inner.path, inner.inputs, inner.outputs)
            self.inner = inner

        def _run(self, feeds):
            return {k: v + 0.01 for k, v in self.inner.run(feeds).items()}

    imgs = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(3)]
    b = load_bundle(tiny_bundle)
    ort = {s.name: OnnxRuntimeBackend(b.path(s.file), s.inputs, s.outputs) for s in b.manifest.stages}
    with Detector(b, backends=dict(ort)) as det:
        assert validate(det, imgs).passed
    ort = {s.name: OnnxRuntimeBackend(b.path(s.file), s.inputs, s.outputs) for s in b.manifest.stages}
    with Detector(b, backends={**ort, "segmenter": Noisy(ort["segmenter"])}) as det:
        report = validate(det, imgs)
    assert not report.passed
    seg = next(o for o in report.outputs if o.stage == "segmenter")
    assert not seg.passed and seg.max_abs == pytest.approx(0.01, abs=1e-4)


def test_validate_cli_uses_sample_images(tiny_bundle):
    from .conftest import edgead_cli

    r = edgead_cli("validate", tiny_bundle, "--backend", "onnxruntime-cpu")
    assert r.returncode == 0, r.stderr
    assert "on 6 images" in r.stdout and "PASSED" in r.stdout


def _has_gpu_trt() -> bool:
    try:
        import tensorrt  # noqa: F401

        from edgead.runtime.backends.trt_env import local_gpu

        local_gpu()
        return True
    except Exception:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu_trt(), reason="needs TensorRT and an NVIDIA GPU (not installable on the CI machines)")
def test_real_engines_build_and_validate(bundle_copy):
    from edgead import Detector

    es, report = build_engines(bundle_copy, "fp16")
    assert report["validation"]["passed"]
    with Detector.load(bundle_copy, backend="tensorrt") as det:
        assert det.backend_name == "tensorrt"
        det.predict(np.zeros((64, 64, 3), np.uint8))


# -------------------------------------------------------------- real TensorRT-RTX builds (no GPU needed)
def _rtx_version():
    try:
        import tensorrt_rtx

        return tensorrt_rtx.__version__
    except ImportError:
        return None


METHOD_NAMES = __import__("edgead.methods", fromlist=["method_names"]).method_names()


@pytest.mark.skipif(_rtx_version() is None, reason='TensorRT-RTX is not installed (pip install "edgead[rtx]")')
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_real_rtx_engines_for_every_stage(name, precision, method_bundle, tmp_path):
    """Real engines from TensorRT for RTX, built on this CPU for every stage of every method."""
    root, _ = method_bundle(name)
    b = tmp_path / "b.edgead"
    shutil.copytree(root, b)
    es, report = build_engines(b, precision, flavour="rtx", sm="86,89" if precision == "fp32" else None)
    bundle = load_bundle(b)  # the manifest lists the engines with their sha256, verified here
    assert bundle.manifest.engines == [es] and es.flavour == "rtx" and es.tensorrt_version == _rtx_version()
    assert [f.stage for f in es.files] == [s.name for s in bundle.manifest.stages]
    assert es.targets == (["8.6", "8.9"] if precision == "fp32" else []) and not es.validated
    assert "edgead validate" in report["validation"]
    for f in es.files:
        header, blob = read_engine(b / f.file)
        stage = bundle.manifest.stage(f.stage)
        st = report["stages"][f.stage]
        assert header.flavour == "rtx" and header.stage == f.stage and header.onnx_sha256 == stage.sha256
        assert header.targets == es.targets and header.gpu == "" and len(blob) > 1000
        assert header.max_batch == stage.batch_factor and st["layers"] > 0
        if precision == "fp16":
            assert 0 < st["fp16_layers"] < st["layers"], st  # FP16 arithmetic, FP32 I/O and normalisation
        else:
            assert st["fp16_layers"] == 0, st
