"""The wheel a user installs: built from this tree, holding the package (and nothing else), runnable on its own."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgead.core.version import __version__

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_holds_the_package_and_runs_from_itself(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), ROOT],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("edgead-*.whl")
    assert wheel.name == f"edgead-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(f"edgead-{__version__}.dist-info/METADATA").decode()
        entry_points = z.read(f"edgead-{__version__}.dist-info/entry_points.txt").decode()
        z.extractall(tmp_path / "site")
    assert {"edgead/py.typed", "edgead/cli/__main__.py", "edgead/runtime/detector.py"} <= set(names)
    assert not [n for n in names if n.split("/")[0] not in ("edgead", f"edgead-{__version__}.dist-info")]
    assert "edgead = edgead.cli:main" in entry_points
    extras = {line.split(": ")[1] for line in meta.splitlines() if line.startswith("Provides-Extra: ")}
    assert {"cpu", "gpu", "train", "serve", "client", "line"} <= extras
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    code = "import edgead; from edgead.cli import main; print(edgead.__file__); main()"
    ran = subprocess.run(
        [sys.executable, "-c", code, "methods"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[0].startswith(str(tmp_path / "site"))  # this wheel's copy, not the clone's
    assert all(m in ran.stdout for m in ("patchcore", "d3ad", "diad", "diffusionad"))
