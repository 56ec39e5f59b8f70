"""Shared fixtures: a tiny DiffusionAD trained once per session on the generated data set.

Real data lives outside the repository (../shared/data, licence); tests using it skip cleanly
when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEAD_SHARED", REPO.parent / "shared"))
TINY = ["model.preset=tiny", "data.image_size=64", "train.batch_size=4", "train.device=cpu",
        "train.learning_rate=1e-3", "train.checkpoint_every=1000"]


def shared_dataset(name: str) -> Path:
    p = SHARED / "data" / name
    if not (p / "train" / "good").is_dir():
        pytest.skip(f"real data {p} is not available (it is never copied into the repository)")
    return p


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    from edgead.data.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "data", size=64, n_train=16, n_val=6,
                             n_test_good=6, n_per_defect=3)


@pytest.fixture(scope="session")
def tiny_run(demo_data, tmp_path_factory) -> Path:
    from edgead.config import load_config
    from edgead.training import train

    run = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = load_config(None, [f"data.path={demo_data}", "train.steps=30", *TINY])
    train(cfg, run, progress=False)
    return run


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run, tmp_path_factory) -> Path:
    from edgead.export.flow import export_run

    out = tmp_path_factory.mktemp("bundles") / "tiny.edgead"
    bundle, _ = export_run(tiny_run, out, parity_images=8, progress=False)
    return bundle.root


@pytest.fixture(scope="session")
def method_bundle(demo_data, tmp_path_factory):
    """A calibrated tiny bundle per registered method, trained on the generated data set (cached)."""
    cache = {}

    from edgead.config import load_config
    from edgead.export.flow import export_run
    from edgead.methods import get_method
    from edgead.training import train

    def build(name):
        if name not in cache:
            spec = get_method(name)
            root = tmp_path_factory.mktemp(name)
            cfg = load_config(None, [f"method={name}", f"data.path={demo_data}", "data.image_size=64",
                                     "train.device=cpu", "train.steps=20", *spec.tiny])
            train(cfg, root / "run", progress=False)
            bundle, parity = export_run(root / "run", root / f"{name}.edgead", parity_images=6, progress=False)
            cache[name] = (bundle.root, parity)
        return cache[name]

    return build
