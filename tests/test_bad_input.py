"""The bad-input catalogue: every case of the "nothing lost, nothing silently wrong" review and the
class of failures it stands for. Each case asserts the one-line message, the exit code, and that
nothing the user already had was changed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edgead import load_bundle
from edgead.bundle import INTEGRITY
from edgead.methods import method_names


METHODS = method_names()


def edgead(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "edgead.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})})


def one_error_line(r, message, code=1):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], r.stderr


def digest(path: Path) -> str:
    if path.is_dir():
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def bundle(tiny_bundle, tmp_path):
    dst = tmp_path / "b.edgead"
    shutil.copytree(tiny_bundle, dst)
    return dst


def _manifest(b: Path) -> dict:
    return yaml.safe_load((b / "manifest.yaml").read_text().rpartition(INTEGRITY)[0])


def _rewrite(b: Path, data: dict) -> None:
    body = yaml.safe_dump(data, sort_keys=False)
    (b / "manifest.yaml").write_text(body + INTEGRITY + hashlib.sha256(body.encode()).hexdigest() + "\n")


# 1 ------------------------------------------------------------ garbage where YAML is expected
def test_garbage_config_file(tmp_path, demo_data):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(bytes(range(256)) * 4)
    one_error_line(edgead("train", "--config", cfg, "--out", tmp_path / "r", "--data", demo_data),
                   "is not a YAML file: it is not UTF-8 text", code=2)
    assert not (tmp_path / "r").exists()


def test_garbage_manifest(bundle, demo_data):
    (bundle / "manifest.yaml").write_bytes(b"\x00\xff\xfe" * 300)
    one_error_line(edgead("predict", "--bundle", bundle, demo_data / "test/good/000.png"), "is corrupt: not a text file")


# 2 ------------------------------------------------------------------ the manifest is covered
def test_edited_threshold_is_refused(bundle, demo_data):
    text = (bundle / "manifest.yaml").read_text()
    (bundle / "manifest.yaml").write_text(text.replace("threshold: ", "threshold: 1000", 1))
    one_error_line(edgead("predict", "--bundle", bundle, demo_data / "test/hole/000.png"),
                   "was changed after edgead wrote it")


def test_manifest_without_integrity_line(bundle, demo_data):
    (bundle / "manifest.yaml").write_text((bundle / "manifest.yaml").read_text().rpartition(INTEGRITY)[0])
    one_error_line(edgead("validate", bundle), "has no integrity line")


# 3 ------------------------------------------------------------- paths must stay in the bundle
@pytest.mark.parametrize("where", ["../../outside.onnx", "/etc/passwd", "graphs/../../x.onnx"])
def test_paths_outside_the_bundle(bundle, where, demo_data):
    data = _manifest(bundle)
    data["stages"][0]["file"] = where
    _rewrite(bundle, data)
    one_error_line(edgead("validate", bundle), "not a path inside the bundle")


def test_symlink_out_of_the_bundle(bundle, tmp_path):
    outside = tmp_path / "evil.onnx"
    shutil.copy(bundle / "graphs" / "segmenter.onnx", outside)
    (bundle / "graphs" / "segmenter.onnx").unlink()
    (bundle / "graphs" / "segmenter.onnx").symlink_to(outside)
    one_error_line(edgead("validate", bundle), "points outside the bundle")


def test_graph_that_does_not_match_its_contract(bundle):
    shutil.copy(bundle / "graphs" / "segmenter.onnx", bundle / "graphs" / "denoiser_step.onnx")
    data = _manifest(bundle)
    data["stages"][0]["sha256"] = digest(bundle / "graphs" / "denoiser_step.onnx")
    _rewrite(bundle, data)
    one_error_line(edgead("validate", bundle, "--backend", "onnxruntime-cpu"),
                   "the graph's inputs are ['image', 'reconstruction'], the bundle's contract says ['x_t', 't']")


def test_truncated_extra(bundle):
    f = bundle / "extras" / "noise_s.npy"
    f.write_bytes(f.read_bytes()[:100])
    data = _manifest(bundle)
    next(e for e in data["extras"] if e["name"] == "noise_s")["sha256"] = digest(f)
    _rewrite(bundle, data)
    one_error_line(edgead("validate", bundle), "cannot read extras/noise_s.npy")


# 4 ------------------------------------------------------------------ outputs never overwritten
@pytest.mark.parametrize("command", [
    lambda b, d, out: ["evaluate", b, "--data", d, "--out", out],
    lambda b, d, out: ["validate", b, "--out", out],
    lambda b, d, out: ["benchmark", b, "--runs", "1", "--batch", "1", "--out", out],
    lambda b, d, out: ["predict", "--bundle", b, d / "test/good", "--jsonl", out],
])
def test_existing_report_is_kept(bundle, demo_data, tmp_path, command):
    out = tmp_path / "mine.json"
    out.write_text("my results")
    one_error_line(edgead(*command(bundle, demo_data, out)), "already exists; pass --overwrite", code=2)
    assert out.read_text() == "my results"


def test_existing_sheet_folder_is_kept(bundle, demo_data, tmp_path):
    (tmp_path / "sheets").mkdir()
    (tmp_path / "sheets" / "notes.txt").write_text("mine")
    one_error_line(edgead("evaluate", bundle, "--data", demo_data, "--sheet", tmp_path / "sheets"),
                   "is not empty; pass --overwrite", code=2)
    assert (tmp_path / "sheets" / "notes.txt").read_text() == "mine"


def test_output_below_a_file_fails_before_the_work(bundle, demo_data, tmp_path):
    (tmp_path / "afile").write_text("x")
    one_error_line(edgead("evaluate", bundle, "--data", demo_data, "--out", tmp_path / "afile" / "r.json"),
                   "is a file, not a folder", code=2)


# 5 -------------------------------------------------------- --overwrite replaces exactly one path
def test_overwrite_replaces_only_the_named_bundle(tiny_run, tmp_path):
    out = tmp_path / "x.edgead"
    notes = tmp_path / "x.edgead.old"
    notes.mkdir()
    (notes / "notes.txt").write_text("the line's notes")
    out.mkdir()
    (out / "stale.txt").write_text("old bundle")
    r = edgead("export", tiny_run, "--out", out, "--overwrite", "--parity-images", "2")
    assert r.returncode == 0, r.stderr
    assert (notes / "notes.txt").read_text() == "the line's notes"
    assert not (out / "stale.txt").exists() and load_bundle(out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".x.edgead")]  # no leftovers


# 6 ------------------------------------------------------------- --resume keeps the run's config
def test_resume_with_a_conflicting_option(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = (run / "config.yaml").read_text()
    one_error_line(edgead("train", "--out", run, "--resume", "--preset", "s", "--steps", "40"),
                   "was trained with model.preset='tiny', the option gives 's'", code=2)
    one_error_line(edgead("train", "--out", run, "--resume", "--set", "data.foreground=true"),
                   "was trained with data.foreground=False", code=2)
    assert (run / "config.yaml").read_text() == before
    r = edgead("train", "--out", run, "--resume", "--steps", "32", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    meta = yaml.safe_load((run / "config.yaml").read_text())
    assert meta["steps_done"] == 32 and meta["config"]["model"]["preset"] == "tiny"
    assert meta["config"]["data"]["image_size"] == 64  # not the 256-px default


# 7 ------------------------------------------------------------- batch commands go on past bad items
def test_predict_goes_on_past_an_unreadable_image(bundle, demo_data, tmp_path):
    folder = tmp_path / "imgs"
    shutil.copytree(demo_data / "test" / "good", folder)
    (folder / "003.png").write_bytes(b"broken")
    r = edgead("predict", "--bundle", bundle, folder, "--jsonl", tmp_path / "out.jsonl")
    one_error_line(r, "cannot decode image")
    assert len(r.stdout.strip().splitlines()) == 5 and len((tmp_path / "out.jsonl").read_text().splitlines()) == 5
    assert "5 images scored, " in r.stderr and "1 could not be read" in r.stderr


def test_predict_goes_on_past_a_missing_path(bundle, demo_data, tmp_path):
    good = sorted((demo_data / "test" / "good").glob("*.png"))
    r = edgead("predict", "--bundle", bundle, good[0], tmp_path / "gone.png", good[1])
    one_error_line(r, f"no such file or folder: {tmp_path / 'gone.png'}")
    assert [line.split("\t")[0] for line in r.stdout.strip().splitlines()] == [str(good[0]), str(good[1])]
    assert "2 images scored, " in r.stderr and "1 could not be read" in r.stderr


# 8 ------------------------------------------------------------- damaged video: skip and count
def _damaged_video(demo_data: Path, path: Path) -> int:
    frames = [cv2.imread(str(p)) for p in sorted((demo_data / "test").rglob("*.png"))]
    frames = (frames * 4)[:100]
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10, (64, 64))
    for f in frames:
        w.write(f)
    w.release()
    data = bytearray(path.read_bytes())
    n = len(data)
    data[int(n * 0.4):int(n * 0.5)] = np.random.default_rng(0).integers(0, 256, int(n * 0.5) - int(n * 0.4),
                                                                       dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return len(frames)


def test_damaged_video_is_read_past_the_damage(bundle, demo_data, tmp_path):
    total = _damaged_video(demo_data, tmp_path / "line.mkv")
    r = edgead("run", "--bundle", bundle, "--source", tmp_path / "line.mkv", "--jsonl", tmp_path / "out.jsonl")
    one_error_line(r, "frames of")
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    stats = json.loads(r.stdout)["source"]
    assert stats["lost_frames"] > 0 and len(lines) + stats["lost_frames"] == total
    assert max(x["frame_index"] for x in lines) >= total - 5  # the frames after the damage were processed


# 9 -------------------------------------------------------------- a failed start leaves nothing
def test_run_that_fails_at_start_leaves_no_output(bundle, tmp_path):
    out = tmp_path / "out.jsonl"
    one_error_line(edgead("run", "--bundle", bundle, "--source", tmp_path / "missing.mp4", "--jsonl", out),
                   "is not a camera index")
    assert not out.exists()


# 10 ------------------------------------------------------ calibration says how sure it is
def test_few_calibration_images_give_a_warning_with_the_interval(bundle, demo_data):
    r = edgead("calibrate", bundle, "--good", demo_data / "validation/good/000.png",
               "--good", demo_data / "validation/good/001.png", "--good", demo_data / "validation/good/002.png")
    assert r.returncode == 0, r.stderr
    assert "warning: only 3 anomaly-free images calibrated the threshold" in r.stderr and "90% bootstrap interval" in r.stderr
    one_error_line(edgead("calibrate", bundle, "--good", demo_data / "validation/good/000.png"),
                   "needs at least 3 anomaly-free images")


# 11 ------------------------------------------------------------- bundles readable by the service user
@pytest.mark.parametrize("method", METHODS)
def test_bundles_and_runs_follow_the_umask(method, method_bundle):
    bundle, _ = method_bundle(method)
    mask = os.umask(os.umask(0))
    for root in (bundle, bundle.parent / "run"):  # every method's bundle and its training run
        assert stat.S_IMODE(root.stat().st_mode) & 0o055 == 0o055 & ~mask
        for p in root.rglob("*"):  # safetensors and torch.save create 0600 files unless edgead fixes them
            assert stat.S_IMODE(p.stat().st_mode) & 0o044 == 0o044 & ~mask, p


# 12 ------------------------------------------------------- training images are not test images
def test_evaluate_leaves_out_training_images(method_bundle, demo_data, tmp_path):
    root, _ = method_bundle("patchcore")
    folder = tmp_path / "folder"  # plain layout whose good/ is the training set
    shutil.copytree(demo_data / "train" / "good", folder / "good")
    shutil.copytree(demo_data / "test" / "hole", folder / "hole")
    shutil.copy(demo_data / "test" / "good" / "000.png", folder / "good" / "new.png")
    r = edgead("evaluate", root, "--data", folder, "--out", tmp_path / "r.json")
    assert r.returncode == 0, r.stderr
    assert "test images were training images of this model" in r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["test_images"]["good"] < 17 and report["excluded_training_images"] > 0


# signatures ----------------------------------------------------------------------------------
def test_signed_bundles_for_a_fleet(bundle, demo_data, tmp_path):
    keys = tmp_path / "keys"
    assert edgead("keygen", "--out", keys / "owner").returncode == 0
    assert stat.S_IMODE((keys / "owner.key").stat().st_mode) == 0o600
    one_error_line(edgead("keygen", "--out", keys / "owner"), "already exists", code=2)  # keys are never replaced
    trusted = {"EDGEAD_TRUSTED_KEYS": str(keys / "owner.pub")}
    image = demo_data / "test/good/000.png"
    one_error_line(edgead("predict", "--bundle", bundle, image, env=trusted), "is not signed")
    assert edgead("sign", bundle, "--key", keys / "owner.key").returncode == 0
    assert edgead("predict", "--bundle", bundle, image, env=trusted).returncode == 0
    r = edgead("verify", bundle, "--key", keys / "owner.pub")
    assert r.returncode == 0 and json.loads(r.stdout)["signed_by_trusted_key"]
    edgead("keygen", "--out", keys / "other")
    one_error_line(edgead("predict", "--bundle", bundle, image, env={"EDGEAD_TRUSTED_KEYS": str(keys / "other.pub")}),
                   "not among the trusted keys")
    r = edgead("calibrate", bundle, "--good", demo_data / "validation/good", env=trusted)  # changes the manifest
    assert r.returncode == 0 and "invalidated the signature" in r.stderr
    one_error_line(edgead("predict", "--bundle", bundle, image, env=trusted), "is not signed")
    r = edgead("calibrate", bundle, "--good", demo_data / "validation/good", "--sign-key", keys / "owner.key")
    assert r.returncode == 0, r.stderr
    assert edgead("predict", "--bundle", bundle, image, env=trusted).returncode == 0


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    from edgead.outputs import atomic_write, atomic_write_with

    target = atomic_write(tmp_path / "weights.safetensors", b"old")

    def half_written(p):
        p.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_with(target, half_written)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]
