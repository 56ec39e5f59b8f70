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


@pytest.mark.parametrize("args, message", [
    (["train", "--out", "x", "--data", "nowhere"], "error: dataset folder not found: nowhere"),
    (["train", "--out", "x", "--set", "train.steps=0"], "error: train.steps must be >= 1"),
    (["train", "--out", "x"], "error: no training data"),
    (["predict", "--bundle", "nope.edgead", "img.png"], "error: no such file or folder: img.png"),
    (["evaluate", "nope.edgead", "--data", "."], "error: bundle not found: nope.edgead"),
    (["export", "not-a-run", "--out", "b.edgead"], "is not a training run"),
])
def test_bad_input_gives_one_line(tmp_path, args, message):
    r = edgead(*args, cwd=tmp_path)
    assert_clean_error(r, message)
    assert len([line for line in r.stderr.splitlines() if line.strip()]) == 1


def test_an_unknown_backend_is_a_usage_error_that_lists_the_table(tiny_bundle):
    r = edgead("predict", "--bundle", tiny_bundle, "--backend", "openvino", "x.png")
    assert_clean_error(r, "Invalid value for '--backend': 'openvino' is not one of auto, tensorrt, onnxruntime, "
                          "onnxruntime-tensorrt, onnxruntime-cuda, onnxruntime-cpu", code=2)


def test_predict_and_evaluate(tiny_bundle, demo_data, tmp_path):
    jsonl = tmp_path / "out.jsonl"
    r = edgead("predict", "--bundle", tiny_bundle, "--jsonl", jsonl, "--out", tmp_path / "ov",
               demo_data / "test" / "hole", f"{demo_data}/test/good/*.png")
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
