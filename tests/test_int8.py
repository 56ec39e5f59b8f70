"""INT8 graphs: export --quantize int8 calibrates on good images, keeps a stage fp32 when its scores move,
records the set in the manifest, and the runtime runs it on request (--int8)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.conftest import edgead_cli

pytestmark = pytest.mark.slow  # the inner loop, pytest -m "not slow", leaves these out

pytest.importorskip("onnxruntime.quantization")


@pytest.fixture(scope="module")
def int8_bundle(method_bundle, demo_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("int8") / "d3ad.edgead"
    shutil.copytree(method_bundle("d3ad")[0], root)
    r = edgead_cli(
        "export", root, "--quantize", "int8", "--calibration", demo_data / "train" / "good", "--int8-tolerance", "1.0"
    )
    assert r.returncode == 0, r.stderr
    return root, json.loads(r.stdout)


def test_quantized_stages_are_recorded_verified_and_run(int8_bundle, demo_data):
    from edgead import Detector
    from edgead.core.bundle import load_bundle

    root, report = int8_bundle
    int8 = load_bundle(root).manifest.int8  # every INT8 graph checked against its sha256
    assert int8 is not None and int8.stages and int8.n_calibration + int8.n_held_out >= 6
    assert {q.stage for q in int8.stages} | set(int8.kept_fp32) == set(report["stages"])
    for q in int8.stages:
        assert (root / q.file).is_file() and q.file.startswith("graphs-int8/")
        assert "kept_fp32" not in report["stages"][q.stage]
    assert int8.score_change == report["score_change"] <= 1.0
    from edgead.runtime.sources import expand_images

    held = expand_images([str(demo_data / "train" / "good")])[2::3]  # the images export checked with
    cal = load_bundle(root).manifest.calibration
    with Detector.load(root) as fp32, Detector.load(root, int8=True) as q8:
        a = np.array([fp32.predict(f).score for f in held])
        b = np.array([q8.predict(f).score for f in held])
        assert not np.array_equal(a, b)  # other graphs really ran
        change = np.abs(a - b).max() / abs(cal.image.threshold - cal.image.mean)
        assert change == pytest.approx(int8.score_change, abs=1e-3)  # what the manifest says is what runs
        assert q8.bundle.manifest.stage(int8.stages[0].stage).file == int8.stages[0].file
    images = sorted((demo_data / "test").rglob("*.png"))[:4]
    r = edgead_cli("predict", images[0], "--bundle", root, "--int8")
    assert r.returncode == 0 and r.stdout.count("\t") == 3, r.stderr


def test_int8_files_are_part_of_the_bundle(int8_bundle, tmp_path):
    from edgead.core.bundle import load_bundle
    from edgead.core.errors import BundleError

    root, _ = int8_bundle
    copy = tmp_path / "b.edgead"
    shutil.copytree(root, copy)
    graph = next((copy / "graphs-int8").glob("*.onnx"))
    graph.write_bytes(graph.read_bytes() + b"\0")
    with pytest.raises(BundleError, match="sha256 of graphs-int8/"):
        load_bundle(copy)
    again = edgead_cli("export", root, "--quantize", "int8", "--calibration", tmp_path)
    assert again.returncode != 0 and "already has INT8 graphs; pass --overwrite" in again.stderr


def test_a_tolerance_no_stage_meets_changes_nothing(method_bundle, demo_data, tmp_path):
    from edgead.core.bundle import load_bundle

    root = tmp_path / "p.edgead"
    shutil.copytree(method_bundle("d3ad")[0], root)
    before = (root / "manifest.yaml").read_bytes()
    r = edgead_cli(
        "export", root, "--quantize", "int8", "--calibration", demo_data / "train" / "good", "--int8-tolerance", "1e-9"
    )
    assert r.returncode == 1 and "no stage keeps its scores in INT8 within the tolerance" in r.stderr
    assert "INT8 moves scores by" in r.stderr and "Traceback" not in r.stderr
    assert (root / "manifest.yaml").read_bytes() == before and not (root / "graphs-int8").exists()
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".lock"] == ["p.edgead"]  # no temporary folder left
    load_bundle(root)


def test_int8_needs_graphs_and_calibration_images(tiny_bundle, demo_data, tmp_path):
    r = edgead_cli("predict", next((demo_data / "test" / "good").iterdir()), "--bundle", tiny_bundle, "--int8")
    assert r.returncode != 0 and "has no INT8 graphs; make them with: edgead export" in r.stderr
    r = edgead_cli("export", tiny_bundle, "--quantize", "int8")
    assert r.returncode == 2 and "--quantize int8 needs --calibration GOOD_IMAGES" in r.stderr
    (tmp_path / "few").mkdir()
    r = edgead_cli("export", tiny_bundle, "--quantize", "int8", "--calibration", tmp_path / "few")
    assert r.returncode != 0 and "error:" in r.stderr and "Traceback" not in r.stderr


def test_int8_tensorrt_engines_from_qdq_graphs(int8_bundle, demo_data, tmp_path):
    """Real TensorRT-for-RTX engines: the INT8 set's stages from symmetric QDQ graphs, the others fp32."""
    pytest.importorskip("tensorrt_rtx", reason='TensorRT-RTX is not installed (pip install "edgead[rtx]")')
    from edgead.core.bundle import load_bundle
    from edgead.export.tensorrt import build_engines
    from edgead.runtime.backends.trt_env import read_engine

    root, _ = int8_bundle
    b = tmp_path / "b.edgead"
    shutil.copytree(root, b)
    es, report = build_engines(b, "int8", flavour="rtx", calibration=demo_data / "train" / "good")
    bundle = load_bundle(b)
    int8 = {q.stage for q in bundle.manifest.int8.stages}
    assert es.precision == "int8" and bundle.manifest.engines == [es] and set(report["int8_stages"]) == int8
    for f in es.files:
        st = report["stages"][f.stage]
        header, _ = read_engine(b / f.file)
        assert header.precision == "int8" and header.onnx_sha256 == bundle.manifest.stage(f.stage).sha256
        if f.stage in int8:
            assert st["obtained_precision"].startswith("int8") and 0 < st["int8_layers"] <= st["layers"], st
        else:
            assert st["obtained_precision"].startswith("fp32"), st
    with pytest.raises(Exception, match="needs --calibration"):
        build_engines(b, "int8", flavour="rtx")


def test_a_narrower_margin_rechecks_the_int8_stages_and_drops_those_that_no_longer_hold(
    int8_bundle, demo_data, tmp_path
):
    """INT8 was accepted against the margin of its day; a calibration that narrows it measures the stages again:
    a margin as wide as before keeps them, one that is all but gone drops them (graphs removed, said, still a
    whole bundle)."""
    from edgead.core.bundle import load_bundle
    from edgead.core.config import CalibrationConfig
    from edgead.runtime.calibration import recalibrate

    root, _ = int8_bundle
    b = tmp_path / "b.edgead"
    shutil.copytree(root, b)
    stages = {q.stage for q in load_bundle(b).manifest.int8.stages}
    good = [str(demo_data / "test" / "good"), str(demo_data / "validation" / "good")]
    _, new, _ = recalibrate(
        load_bundle(b),
        good,
        CalibrationConfig(rule="k_sigma", k_sigma=1e4),
        backend="onnxruntime-cpu",
        accept_misses=True,  # the threshold rises past the synthetic anomalies the bundle catches: allowed here
    )  # a wider margin: the changes matter less
    assert {q.stage for q in load_bundle(b).manifest.int8.stages} == stages
    assert any("re-checked" in w and "kept" in w for w in new.warnings)
    _, new, _ = recalibrate(
        load_bundle(b), good, CalibrationConfig(rule="k_sigma", k_sigma=1e-6), backend="onnxruntime-cpu"
    )  # threshold at the good mean: any change flips decisions
    m = load_bundle(b).manifest  # verified: no graph left that the manifest does not list
    assert m.int8 is None and not (b / "graphs-int8").exists()
    assert any("dropped" in w and "fp32 runs instead" in w for w in new.warnings)
    assert any("no INT8 graphs left" in w and "--quantize int8" in w for w in new.warnings)
    r = edgead_cli("predict", next((demo_data / "test" / "good").iterdir()), "--bundle", b, "--int8")
    assert r.returncode != 0 and "has no INT8 graphs" in r.stderr
