"""Shared fixtures: a tiny DiffusionAD trained once per session on the generated data set.

Real data lives outside the repository (../shared/data, licence); tests using it skip cleanly
when it is absent.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEAD_SHARED", REPO.parent / "shared"))
TINY = [
    "model.preset=tiny",
    "data.image_size=64",
    "train.batch_size=4",
    "train.device=cpu",
    "train.learning_rate=1e-3",
    "train.checkpoint_every=1000",
]


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def edgead_cli(*args, cwd=None, env: dict[str, str] | None = None) -> CliResult:
    """``edgead ARGS`` in this process (click's runner): what a subprocess would print and return, a second
    faster. A bug's traceback lands in stderr as it would in a terminal, so "no Traceback" checks still bite.
    The few tests about processes (signals, imports blocked, extras missing) keep real subprocesses."""
    from click.testing import CliRunner

    from edgead.cli import main

    before = os.getcwd()
    os.chdir(cwd or before)  # contextlib.chdir is Python 3.11+; edgead supports 3.10
    try:
        r = CliRunner(env=env).invoke(main, [str(a) for a in args])
    finally:
        os.chdir(before)
    stderr = r.stderr
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        stderr += "Traceback (most recent call last):\n" + "".join(traceback.format_exception(r.exception))
    return CliResult(r.exit_code, r.stdout, stderr)


def shared_dataset(name: str) -> Path:
    p = SHARED / "data" / name
    if not (p / "train" / "good").is_dir():
        pytest.skip(f"real data {p} is not available (it is never copied into the repository)")
    return p


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    from edgead.data.demo import make_demo_dataset

    return make_demo_dataset(
        tmp_path_factory.mktemp("demo") / "data", size=64, n_train=16, n_val=6, n_test_good=6, n_per_defect=3
    )


@pytest.fixture(scope="session")
def tiny_run(demo_data, tmp_path_factory) -> Path:
    from edgead.core.config import load_config
    from edgead.training import train

    run = tmp_path_factory.mktemp("diffusionad") / "run"  # the layout method_bundle gives the others
    cfg = load_config(None, [f"data.path={demo_data}", "train.steps=30", *TINY])
    train(cfg, run, progress=False)
    return run


@pytest.fixture(scope="session")
def tiny_export(tiny_run) -> tuple[Path, dict]:
    from edgead.export.flow import export_run

    out = tiny_run.parent / "tiny.edgead"
    bundle, parity = export_run(tiny_run, out, parity_images=8, progress=False)
    return bundle.root, parity


@pytest.fixture(scope="session")
def tiny_bundle(tiny_export) -> Path:
    return tiny_export[0]


@pytest.fixture(scope="session")
def method_bundle(demo_data, tmp_path_factory, request):
    """A calibrated tiny bundle per registered method, trained on the generated data set (cached; the
    default method's is ``tiny_bundle``, trained once)."""
    cache = {}

    from edgead.core.config import load_config
    from edgead.export.flow import export_run
    from edgead.methods import get_method
    from edgead.training import train

    def build(name):
        if name not in cache and name == "diffusionad":
            cache[name] = request.getfixturevalue("tiny_export")
        if name not in cache:
            spec = get_method(name)
            root = tmp_path_factory.mktemp(name)
            cfg = load_config(
                None,
                [
                    f"method={name}",
                    f"data.path={demo_data}",
                    "data.image_size=64",
                    "train.device=cpu",
                    "train.steps=20",
                    *spec.tiny,
                ],
            )
            train(cfg, root / "run", progress=False)
            bundle, parity = export_run(root / "run", root / f"{name}.edgead", parity_images=6, progress=False)
            cache[name] = (bundle.root, parity)
        return cache[name]

    return build


SLOW_FIXTURE_METHODS = ("d3ad", "diad")
"""Methods whose tiny bundle trains five stages and fits a fusion weight before a test can use it."""


def _strings(code) -> set[str]:
    """The string constants of a function, nested functions included."""
    found = set()
    for c in code.co_consts:
        if isinstance(c, str):
            found.add(c)
        elif hasattr(c, "co_consts"):
            found |= _strings(c)
    return found


def _uses_latent_bundle(item) -> bool:
    """A test that builds a latent method's tiny bundle: parametrised by one, or asking for it by name."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    if any(v in SLOW_FIXTURE_METHODS for v in params.values() if isinstance(v, str)):
        return True
    code = getattr(getattr(item, "function", None), "__code__", None)
    return (
        code is not None
        and "method_bundle" in getattr(item, "fixturenames", ())
        and bool(_strings(code) & set(SLOW_FIXTURE_METHODS))
    )


def pytest_collection_modifyitems(items):
    """The inner loop (``pytest -m "not slow"``) leaves out the tests that build a latent method's bundle, besides
    the ones marked slow where they are written (servers, browsers, engine builds, several processes, real data)."""
    for item in items:
        if _uses_latent_bundle(item):
            item.add_marker(pytest.mark.slow)


def scored_frame(i: int, normalised: float, bundle_id: str = "b"):
    """A judged frame whose raw score is its normalised score (threshold 0.5), for decisions over time."""
    import numpy as np

    from edgead.runtime.result import Result

    return Result(
        score=normalised,
        normalised_score=normalised,
        is_anomalous=normalised > 0.5,
        anomaly_map=np.zeros((4, 4), np.float32),
        mask=np.zeros((4, 4), bool),
        threshold=0.5,
        latency_ms={},
        image=np.zeros((4, 4, 3), np.uint8),
        frame_index=i,
        bundle_id=bundle_id,
    )


def status_probe(probe):
    """A sink that calls ``probe(stats)`` at every status of a run; the last comes before the run's sinks close,
    so it reads what a connected sink (metrics, OPC UA) serves while it still serves it."""
    from edgead.line.sinks import Sink

    class Probe(Sink):
        def write(self, result):
            pass

        def on_status(self, stats):
            probe(stats)

    return Probe()


def free_port() -> int:
    """A loopback port nobody listens on now (for a broker or a sink's server)."""
    from edgead.serving.server import free_ports

    return free_ports(1)[0]
