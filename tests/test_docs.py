"""The documentation: the site builds with warnings as errors, the results page is what the results give, and
the README stays two screens."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_readme_stays_short_and_names_the_two_commands():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    assert "edgead demo" in text and "python -m pytest -q" in text
    run = (REPO / ".ci" / "run").read_text()
    test_command = next(line.strip() for line in text.splitlines() if "python -m pytest -q" in line and "pip" in line)
    assert test_command in run  # CI runs exactly the README's test command


def test_the_results_page_is_what_the_results_give():
    r = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "results_page.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_the_documentation_site_builds_without_warnings(tmp_path):
    pytest.importorskip("mkdocs", reason='the documentation tools: pip install -e ".[docs]"')
    pytest.importorskip("mkdocstrings", reason='the documentation tools: pip install -e ".[docs]"')
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    r = subprocess.run(
        [mkdocs, "build", "--strict", "-d", str(tmp_path / "site")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": str(Path(sys.executable).parent)},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    pages = list((tmp_path / "site").rglob("index.html"))
    assert len(pages) >= 20  # every page of the navigation, the API reference included
    assert "TrainResult" in (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
