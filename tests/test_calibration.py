"""Operating points from good images only: re-calibration, synthetic check, no training images in tests."""

import json
import shutil
import subprocess
import sys

import pytest

from edgead import load_bundle


def test_export_records_the_operating_point(tiny_bundle):
    cal = load_bundle(tiny_bundle).manifest.calibration
    assert cal.rule == "tolerance" and cal.target_frr == 0.01 and cal.confidence == 0.95
    assert cal.transform == "logit"  # DiffusionAD's scores are mask probabilities
    assert cal.n_images == 6 and cal.k > 3 and 0 < cal.image.threshold < 1
    lo, hi = cal.threshold_interval
    assert lo <= hi and 0.0 <= cal.synthetic_miss_rate <= 1.0
    assert "only 6 anomaly-free images" in cal.warnings[0]


def test_calibrate_replaces_thresholds_and_keeps_the_history(tiny_bundle, demo_data, tmp_path):
    b = tmp_path / "b.edgead"
    shutil.copytree(tiny_bundle, b)
    before = load_bundle(b).manifest.calibration
    r = subprocess.run([sys.executable, "-m", "edgead.cli", "calibrate", str(b), "--good", str(demo_data / "train" / "good"),
                        "--target-frr", "0.05", "--backend", "onnxruntime-cpu"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["images"] == 16 and out["previous_image_threshold"] == pytest.approx(before.image.threshold)
    m = load_bundle(b).manifest  # still loads and verifies
    assert m.calibration.n_images == 16 and m.calibration.target_frr == 0.05
    assert m.calibration.image.threshold == pytest.approx(out["image_threshold"])
    (old,) = m.provenance["calibration_history"]
    assert old["image_threshold"] == pytest.approx(before.image.threshold) and old["n_images"] == 6


def test_calibrate_on_a_live_source_needs_a_frame_count(tiny_bundle, tmp_path):
    from edgead.config import CalibrationConfig
    from edgead.errors import DataError
    from edgead.runtime import calibration, sources

    class Live(sources.FrameSource):
        live = True

        def frames(self):
            yield from ()

    orig = sources.open_source
    sources.open_source = lambda spec: Live("camera 0")
    try:
        with pytest.raises(DataError, match="live source: give --max-frames"):
            calibration.calibrate(load_bundle(tiny_bundle), calibration.good_frames(["0"]), CalibrationConfig(), "0")
    finally:
        sources.open_source = orig


def test_evaluation_leaves_out_training_images(demo_data, tmp_path, caplog):
    """Plain folder layout: good/ holds the training images too; they must not count as test images."""
    from edgead import Detector
    from edgead.config import load_config
    from edgead.data.datasets import load_dataset
    from edgead.evaluation.evaluate import evaluate
    from edgead.export.flow import export_run
    from edgead.training import train

    folder = tmp_path / "folder"
    shutil.copytree(demo_data / "train" / "good", folder / "good")
    shutil.copytree(demo_data / "test" / "hole", folder / "hole")
    cfg = load_config(None, ["method=patchcore", f"data.path={folder}", "data.image_size=64", "data.validation_fraction=0.25",
                             "patchcore.coreset_fraction=0.05"])
    train(cfg, tmp_path / "run", progress=False)
    bundle, _ = export_run(tmp_path / "run", tmp_path / "pc.edgead", parity_images=2, progress=False)
    ds = load_dataset(folder, validation_fraction=0.0)
    with Detector.load(bundle.root, backend="onnxruntime-cpu") as det:
        report = evaluate(det, ds, progress=False).report
    n_train = len(load_dataset(folder, validation_fraction=0.25).train)
    assert report["excluded_training_images"] == n_train
    assert report["test_images"]["good"] == 16 - n_train
    assert f"{n_train} of 19 test images were training images" in caplog.text


@pytest.mark.parametrize("miss, flagged", [(0.0, False), (0.49, False), (0.5, True), (1.0, True), (float("nan"), False)])
def test_a_threshold_blind_to_synthetic_anomalies_is_flagged(miss, flagged, caplog):
    from types import SimpleNamespace

    from edgead.export.flow import warn_if_blind

    cal = SimpleNamespace(synthetic_miss_rate=miss, n_images=3, warnings=[])
    warn_if_blind(cal, "grid")
    assert bool(cal.warnings) == flagged
    if flagged:
        assert f"the threshold of grid misses {miss:.0%} of the synthetic anomalies" in cal.warnings[0]
        assert "edgead calibrate BUNDLE --good DIR" in caplog.text
