"""The command line: each expected failure is one 'error:' line and a non-zero exit code."""

import json

import pytest

from .conftest import edgead_cli


def edgead(*args, cwd=None):
    return edgead_cli(*args, cwd=cwd)


def assert_clean_error(r, message, code=None):
    assert r.returncode != 0, r.stdout
    if code is not None:
        assert r.returncode == code
    assert "Traceback" not in r.stderr, r.stderr
    assert message in r.stderr, r.stderr


def test_help_documents_every_command():
    r = edgead("--help")
    assert r.returncode == 0
    for cmd in ("train", "export", "predict", "evaluate", "demo"):
        assert cmd in r.stdout
    r = edgead("train", "--help")
    for opt in ("--data", "--preset", "--steps", "--max-minutes", "--resume", "--set"):
        assert opt in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--out", "x", "--data", "nowhere"], "error: dataset folder not found: nowhere"),
        (["train", "--out", "x", "--set", "train.steps=0"], "error: train.steps must be >= 1"),
        (["train", "--out", "x"], "error: no training data"),
        (["predict", "--bundle", "nope.edgead", "img.png"], "error: no such file or folder: img.png"),
        (["evaluate", "nope.edgead", "--data", "."], "error: bundle not found: nope.edgead"),
        (["export", "not-a-run", "--out", "b.edgead"], "is not a training run"),
    ],
)
def test_bad_input_gives_one_line(tmp_path, args, message):
    r = edgead(*args, cwd=tmp_path)
    assert_clean_error(r, message)
    assert len([line for line in r.stderr.splitlines() if line.strip()]) == 1


def test_an_unknown_backend_is_a_usage_error_that_lists_the_table(tiny_bundle):
    r = edgead("predict", "--bundle", tiny_bundle, "--backend", "openvino", "x.png")
    assert_clean_error(
        r,
        "Invalid value for '--backend': 'openvino' is not one of auto, tensorrt, onnxruntime, "
        "onnxruntime-tensorrt, onnxruntime-cuda, onnxruntime-cpu",
        code=2,
    )


def test_predict_and_evaluate(tiny_bundle, demo_data, tmp_path):
    jsonl = tmp_path / "out.jsonl"
    r = edgead(
        "predict",
        "--bundle",
        tiny_bundle,
        "--jsonl",
        jsonl,
        "--out",
        tmp_path / "ov",
        demo_data / "test" / "hole",
        f"{demo_data}/test/good/*.png",
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 9 and len(jsonl.read_text().splitlines()) == 9
    assert len(list((tmp_path / "ov").glob("*_overlay.png"))) == 9
    report = tmp_path / "report.json"
    r = edgead("evaluate", tiny_bundle, "--data", demo_data, "--out", report, "--sheet", tmp_path / "sheet")
    assert r.returncode == 0, r.stderr
    assert "AUPRO@0.3" in r.stdout
    rep = json.loads(report.read_text())
    for key in ("auroc", "ap", "f1max"):
        assert 0 <= rep["image"][key] <= 1 and 0 <= rep["pixel"][key] <= 1
    assert 0 <= rep["pixel"]["aupro_0.3"] <= 1
    assert (tmp_path / "sheet" / "sheet.png").is_file()
    again = edgead("predict", "--bundle", tiny_bundle, "--jsonl", jsonl, demo_data / "test" / "good")
    assert_clean_error(again, "already exists; pass --overwrite")


def test_corrupt_bundle_is_one_line(tiny_bundle, demo_data, tmp_path):
    import shutil

    b = tmp_path / "b.edgead"
    shutil.copytree(tiny_bundle, b)
    (b / "graphs" / "denoiser_step.onnx").write_bytes(b"garbage")
    r = edgead("predict", "--bundle", b, demo_data / "test" / "good" / "000.png")
    assert_clean_error(r, "sha256 of graphs/denoiser_step.onnx does not match")


def test_unreadable_image_in_predict(tiny_bundle, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    r = edgead("predict", "--bundle", tiny_bundle, bad)
    assert_clean_error(r, "cannot decode image")


def test_the_bundle_is_the_first_argument_everywhere_and_the_old_option_still_works(tiny_bundle, demo_data):
    image = demo_data / "test" / "good" / "000.png"
    new, old = edgead("predict", tiny_bundle, image), edgead("predict", image, "--bundle", tiny_bundle)
    assert new.returncode == old.returncode == 0 and new.stdout == old.stdout
    r = edgead("run", tiny_bundle, "--source", demo_data / "test" / "good", "--bundle", tiny_bundle)
    assert_clean_error(r, "give the bundle once", code=2)
    assert_clean_error(edgead("predict", tiny_bundle), "give the images to score after the bundle", code=2)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--engine", "fp16", "--out", "x.edgead"], "--out does not apply to 'edgead export --engine'"),
        (["--engine", "fp16", "--quantize", "int8"], "choose one export mode: --engine or --quantize"),
        (
            ["--quantize", "int8", "--calibration", ".", "--sm", "86"],
            "--sm does not apply to 'edgead export --quantize'",
        ),
        (["--triton-repo", "m", "--sign-key", "k"], "--sign-key does not apply to 'edgead export --triton-repo'"),
        (
            ["--out", "x.edgead", "--int8-tolerance", "0.2", "--also", "y"],
            "--also, --int8-tolerance do not apply to 'edgead export' (it writes a new bundle",
        ),
    ],
)
def test_each_export_mode_refuses_the_options_of_the_others(tiny_bundle, tmp_path, args, message):
    r = edgead("export", tiny_bundle, *args, cwd=tmp_path)
    assert_clean_error(r, message, code=2)
    assert len([line for line in r.stderr.splitlines() if line.startswith("error:")]) == 1


def test_every_export_option_belongs_to_a_mode():
    from edgead.cli.export import EXPORT_MODES, export

    declared = {o for m in EXPORT_MODES for o in m.options} | {m.selector for m in EXPORT_MODES if m.selector}
    assert {p.name for p in export.params} - {"source"} == declared


def test_detector_and_remote_detector_share_one_interface():
    """Every member of AnomalyDetector exists on both, with the same parameters."""
    import inspect

    from edgead import AnomalyDetector, Detector, RemoteDetector

    members = [n for n in vars(AnomalyDetector) if not n.startswith("_") or n in ("__enter__", "__exit__")]
    members += list(AnomalyDetector.__annotations__)
    for cls in (Detector, RemoteDetector):
        for name in members:
            assert hasattr(cls, name) or name in ("method",), (cls.__name__, name)
            want, got = getattr(AnomalyDetector, name, None), getattr(cls, name, None)
            if inspect.isfunction(want):
                assert list(inspect.signature(got).parameters) == list(inspect.signature(want).parameters), (
                    cls.__name__,
                    name,
                )


def test_the_python_api_trains_exports_evaluates_and_calibrates(demo_data, tmp_path):
    """The whole path from Python, with a progress callback that hears every long step."""
    from edgead import api

    events = []
    run = api.train(
        demo_data,
        tmp_path / "run",
        method="patchcore",
        image_size=64,
        overrides=["patchcore.coreset_fraction=0.05"],
        progress=events.append,
    )
    assert run.summary["memory_bank"][0] > 0 and any(e.task == "coreset" for e in events)
    done = api.export(run.run_dir, tmp_path / "pc.edgead", parity_images=2, progress=events.append)
    assert done.stages == ["feature_extractor"] and done.parity["passed"] and done.image_threshold > 0
    report = api.evaluate(done.bundle, demo_data, backend="onnxruntime-cpu", progress=events.append)
    assert 0.0 <= report.image_auroc <= 1.0 and 0.0 <= report.aupro <= 1.0
    assert any(e.task.startswith("evaluate") and e.done == e.total for e in events)
    cal = api.calibrate(done.bundle, [demo_data / "test" / "good"], target_frr=0.05, backend="onnxruntime-cpu")
    assert cal.images == 6 and cal.previous_image_threshold == done.image_threshold
    assert cal.report["image_threshold"] == cal.image_threshold


@pytest.mark.slow
def test_plain_train_on_a_cpu_trains_what_a_cpu_can_and_says_so_first(demo_data, tmp_path):
    """No --method: D3AD on a CPU (DiffusionAD needs a GPU), and a plan line before the first step."""
    from edgead.api import default_method

    assert default_method("cpu") == "d3ad"
    r = edgead_cli(
        "train", "--data", demo_data, "--out", tmp_path / "run", "--image-size", "64", "--preset", "tiny",
        "--steps", "1", "--stage", "autoencoder",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    first = r.stderr.strip().splitlines()[0]
    assert first.startswith("training d3ad (preset tiny, 64 px, batch of the preset) on cpu from 16 training images")
    assert "method: d3ad" in (tmp_path / "run" / "config.yaml").read_text()
    r = edgead_cli("train", "--data", demo_data, "--out", tmp_path / "r2", "--set", "method=patchcore")
    assert r.returncode == 0 and r.stderr.startswith("training patchcore"), r.stderr
