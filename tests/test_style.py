"""The code's form: ruff's lint rules and its formatter, configured in pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")


@pytest.mark.skipif(RUFF is None, reason='ruff is not installed (pip install -e ".[dev]")')
@pytest.mark.parametrize("check", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff(check):
    r = subprocess.run(
        [RUFF, *check, "edgead", "tests", "benchmarks", "examples"], capture_output=True, text=True, cwd=REPO
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
