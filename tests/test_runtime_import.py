"""The runtime must import and run with torch, diffusers, torchvision and timm absent."""

import subprocess
import sys

BLOCKER = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'diffusers', 'torchvision', 'timm', 'onnx', 'safetensors'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
"""


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + code], capture_output=True, text=True)


def test_runtime_imports_without_training_stack():
    r = run(
        "import edgead.runtime, edgead.evaluation.evaluate, edgead.core.bundle, edgead.serving.triton_model, "
        "edgead.serving.watch; from edgead import Detector, RemoteDetector, Result, load_bundle; print('ok')"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_engine_builder_and_validation_import_without_torch():
    """`edgead export BUNDLE --engine` and `edgead validate` run on devices without PyTorch."""
    r = run("import edgead.export.tensorrt, edgead.runtime.validate, edgead.evaluation.speed, edgead.cli; print('ok')")
    assert r.returncode == 0, r.stderr


def test_blocker_really_blocks():
    r = run("import torch")
    assert r.returncode != 0 and "blocked: torch" in r.stderr


def test_detector_runs_without_torch(tiny_bundle):
    code = f"""
import numpy as np
from edgead import Detector
with Detector.load({str(tiny_bundle)!r}, backend='onnxruntime-cpu') as d:
    r = d.predict(np.full((64, 64, 3), 128, np.uint8))
    print(r.anomaly_map.shape, type(r.is_anomalous).__name__)
"""
    r = run(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(64, 64) bool"


def test_every_method_pipeline_imports_without_torch():
    """Pipelines load lazily through the registry: import each one with the training stack blocked."""
    r = run(
        "from edgead.methods import all_methods\n"
        "for spec in all_methods():\n"
        "    spec.load('pipeline')\n"
        "print(len(all_methods()))"
    )
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) >= 4


def test_a_command_whose_extra_is_missing_names_the_install_command(method_bundle, tmp_path):
    """`pip install -e ".[train]"` alone has no ONNX Runtime: `edgead export` says which extra brings it,
    in one line, instead of a ModuleNotFoundError traceback."""
    root, _ = method_bundle("patchcore")
    missing = """
import sys, importlib.abc
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'onnxruntime':
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Missing())
from edgead.cli import main
main()
"""
    r = subprocess.run(
        [sys.executable, "-c", missing, "export", str(root.parent / "run"), "--out", str(tmp_path / "b.edgead")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.strip().splitlines() if not line.startswith("export [")]  # its step lines
    assert "\n".join(errors) == (
        "error: this command needs the Python package 'onnxruntime', which is not installed: "
        'pip install "edgead[cpu]" (or "edgead[gpu]" on an NVIDIA GPU)'
    )
    assert not (tmp_path / "b.edgead").exists()


def test_fleet_client_needs_no_onnxruntime():
    """A camera PC with edgead[client] only: RemoteDetector and edgead run --server import without ONNX Runtime."""
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "import edgead.runtime.detector, edgead.line.runner, edgead.line.sinks, edgead.runtime.sources\n"
        "from edgead import RemoteDetector; print('ok')"
    )
    r = run(code)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
