"""Every registered method, through the same path: train (tiny) -> export -> load -> predict.

Parametrised over the registry, so a new method is tested by registering it. A method that exists
only in the tests (tests/dummy_method/, one folder as every method) proves the registry alone is enough to add one.
"""

import numpy as np
import pytest

from edgead import Detector, load_bundle
from edgead.core.config import load_config
from edgead.core.errors import BundleError, ConfigError
from edgead.export.flow import export_run
from edgead.methods import get_method, method_names, register, unregister
from edgead.training import train

METHODS = method_names()


@pytest.mark.parametrize("name", METHODS)
def test_train_export_predict(name, method_bundle, demo_data):
    root, parity = method_bundle(name)
    spec = get_method(name)
    b = load_bundle(root)
    assert b.manifest.method == name and [s.name for s in b.manifest.stages] == list(spec.stages)
    assert {e.name for e in b.manifest.extras} >= set(spec.extras)
    assert isinstance(b.manifest.params, spec.params)
    assert parity["passed"] and parity["decision_mismatches"] == []
    frame = np.random.default_rng(0).integers(0, 255, (80, 96, 3), dtype=np.uint8)
    with Detector.load(root, backend="onnxruntime-cpu") as det:
        a, again = det.predict(frame), det.predict(frame.copy())
        good = det.predict(next((demo_data / "test" / "good").iterdir()))
    assert a.score == again.score and np.array_equal(a.anomaly_map, again.anomaly_map)  # deterministic
    assert a.anomaly_map.shape == (80, 96) and np.isfinite(good.score)


@pytest.mark.parametrize("name", METHODS)
def test_bundle_without_a_required_extra_is_refused(name, method_bundle, tmp_path):
    import shutil

    root, _ = method_bundle(name)
    copy = tmp_path / "b.edgead"
    shutil.copytree(root, copy)
    from .test_bundle import _read, _rewrite

    manifest = _read(copy)
    extra = get_method(name).extras[0]
    manifest["extras"] = [e for e in manifest["extras"] if e["name"] != extra]
    _rewrite(copy, manifest)
    with pytest.raises(BundleError, match=f"needs the extras {extra}"):
        load_bundle(copy, verify=False)


def test_unknown_method_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="unknown method 'nope'; registered methods: " + ", ".join(METHODS)):
        load_config(None, ["method=nope"])


def test_a_method_added_through_the_registry_alone(demo_data, tmp_path):
    from tests.dummy_method import SPEC

    register(SPEC)
    try:
        assert "dummy" in method_names()
        cfg = load_config(None, ["method=dummy", f"data.path={demo_data}", "data.image_size=64", "dummy.scale=2"])
        with pytest.raises(ConfigError, match="dummy.scale must be > 0"):
            load_config(None, ["method=dummy", "dummy.scale=-1"])
        train(cfg, tmp_path / "run", progress=False)
        bundle, parity = export_run(tmp_path / "run", tmp_path / "dummy.edgead", parity_images=4, progress=False)
        assert parity["passed"] and load_bundle(bundle.root).manifest.params.scale == 2.0
        with Detector.load(bundle.root, backend="onnxruntime-cpu") as det:
            hole = det.predict(next((demo_data / "test" / "hole").iterdir()))
            good = det.predict(next((demo_data / "test" / "good").iterdir()))
        assert hole.score > good.score
    finally:
        unregister("dummy")
    with pytest.raises(BundleError, match="unknown method 'dummy'"):
        load_bundle(tmp_path / "dummy.edgead")
