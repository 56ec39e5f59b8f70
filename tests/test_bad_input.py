"""The bad-input catalogue: every case of the "nothing lost, nothing silently wrong" review and the
class of failures it stands for. Each case asserts the one-line message, the exit code, and that
nothing the user already had was changed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edgead import load_bundle
from edgead.core.bundle import INTEGRITY
from edgead.methods import method_names

from .conftest import edgead_cli

METHODS = method_names()


def edgead(*args, cwd=None, env=None):
    return edgead_cli(*args, cwd=cwd, env=env)


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
    one_error_line(
        edgead("train", "--config", cfg, "--out", tmp_path / "r", "--data", demo_data),
        "is not a YAML file: it is not UTF-8 text",
        code=2,
    )
    assert not (tmp_path / "r").exists()


def test_garbage_manifest(bundle, demo_data):
    (bundle / "manifest.yaml").write_bytes(b"\x00\xff\xfe" * 300)
    one_error_line(
        edgead("predict", "--bundle", bundle, demo_data / "test/good/000.png"), "is corrupt: not a text file"
    )


# 2 ------------------------------------------------------------------ the manifest is covered
def test_edited_threshold_is_refused(bundle, demo_data):
    text = (bundle / "manifest.yaml").read_text()
    (bundle / "manifest.yaml").write_text(text.replace("threshold: ", "threshold: 1000", 1))
    one_error_line(
        edgead("predict", "--bundle", bundle, demo_data / "test/hole/000.png"), "was changed after edgead wrote it"
    )


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
    one_error_line(
        edgead("validate", bundle, "--backend", "onnxruntime-cpu"),
        "the graph's inputs are ['image', 'reconstruction'], the bundle's contract says ['x_t', 't']",
    )


def test_truncated_extra(bundle):
    f = bundle / "extras" / "noise_s.npy"
    f.write_bytes(f.read_bytes()[:100])
    data = _manifest(bundle)
    next(e for e in data["extras"] if e["name"] == "noise_s")["sha256"] = digest(f)
    _rewrite(bundle, data)
    one_error_line(edgead("validate", bundle), "cannot read extras/noise_s.npy")


# 4 ------------------------------------------------------------------ outputs never overwritten
@pytest.mark.parametrize(
    "command",
    [
        lambda b, d, out: ["evaluate", b, "--data", d, "--out", out],
        lambda b, d, out: ["validate", b, "--out", out],
        lambda b, d, out: ["benchmark", b, "--runs", "1", "--batch", "1", "--out", out],
        lambda b, d, out: ["predict", "--bundle", b, d / "test/good", "--jsonl", out],
    ],
)
def test_existing_report_is_kept(bundle, demo_data, tmp_path, command):
    out = tmp_path / "mine.json"
    out.write_text("my results")
    one_error_line(edgead(*command(bundle, demo_data, out)), "already exists; pass --overwrite", code=2)
    assert out.read_text() == "my results"


def test_existing_sheet_folder_is_kept(bundle, demo_data, tmp_path):
    (tmp_path / "sheets").mkdir()
    (tmp_path / "sheets" / "notes.txt").write_text("mine")
    one_error_line(
        edgead("evaluate", bundle, "--data", demo_data, "--sheet", tmp_path / "sheets"),
        "is not empty; pass --overwrite",
        code=2,
    )
    assert (tmp_path / "sheets" / "notes.txt").read_text() == "mine"


def test_output_below_a_file_fails_before_the_work(bundle, demo_data, tmp_path):
    (tmp_path / "afile").write_text("x")
    one_error_line(
        edgead("evaluate", bundle, "--data", demo_data, "--out", tmp_path / "afile" / "r.json"),
        "is a file, not a folder",
        code=2,
    )


# 5 -------------------------------------------------------- --overwrite replaces exactly one path
def test_overwrite_replaces_only_the_named_bundle(tiny_run, tiny_bundle, tmp_path):
    out = tmp_path / "x.edgead"
    notes = tmp_path / "x.edgead.old"
    notes.mkdir()
    (notes / "notes.txt").write_text("the line's notes")
    shutil.copytree(tiny_bundle, out)  # a previous bundle
    (out / "stale.txt").write_text("old bundle")
    r = edgead("export", tiny_run, "--out", out, "--overwrite", "--parity-images", "2")
    assert r.returncode == 0, r.stderr
    assert (notes / "notes.txt").read_text() == "the line's notes"
    assert not (out / "stale.txt").exists() and load_bundle(out)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".x.edgead")]
    assert leftovers == [".x.edgead.lock"]  # the lock (empty; kept, as lock files are); no temporaries


# 6 ------------------------------------------------------------- --resume keeps the run's config
@pytest.mark.slow
def test_resume_with_a_conflicting_option(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = (run / "config.yaml").read_text()
    one_error_line(
        edgead("train", "--out", run, "--resume", "--preset", "s", "--steps", "40"),
        "was trained with model.preset='tiny', the option gives 's'",
        code=2,
    )
    one_error_line(
        edgead("train", "--out", run, "--resume", "--set", "data.foreground=true"),
        "was trained with data.foreground=False",
        code=2,
    )
    assert (run / "config.yaml").read_text() == before
    r = edgead("train", "--out", run, "--resume", "--steps", "32", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    meta = yaml.safe_load((run / "config.yaml").read_text())
    assert meta["steps_done"] == 32 and meta["config"]["model"]["preset"] == "tiny"
    assert meta["config"]["data"]["image_size"] == 64  # not the 256-px default


@pytest.mark.slow
def test_resume_with_other_data_is_refused_unless_asked_and_the_record_keeps_its_history(tiny_run, demo_data, tmp_path):
    """Data given again with the same images (moved) continues; other images are refused with nothing changed;
    --allow-changes trains on and the run's history names what it was trained on before and what changed."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    moved = tmp_path / "moved"
    shutil.copytree(demo_data, moved)
    other = tmp_path / "other"
    shutil.copytree(demo_data, other)
    (other / "train" / "good" / "000.png").write_bytes((other / "test" / "good" / "000.png").read_bytes())
    before = (run / "config.yaml").read_text()
    one_error_line(
        edgead("train", "--out", run, "--resume", "--data", other, "--steps", "31"),
        f"was trained on '{demo_data}'; '{other}' holds other images",
        code=2,
    )
    assert (run / "config.yaml").read_text() == before
    r = edgead("train", "--out", run, "--resume", "--data", moved, "--steps", "31", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    r = edgead(
        "train", "--out", run, "--resume", "--data", other, "--steps", "32", "--device", "cpu", "--allow-changes"
    )
    assert r.returncode == 0, r.stderr
    meta = yaml.safe_load((run / "config.yaml").read_text())
    first, second = meta["history"]
    assert first["how"] == "resume" and first["changed"]["data.path"] == [str(demo_data), str(moved)]
    assert "trained_on_before" in first  # a moved data set is recorded too
    assert second["changed"]["data.path"] == [str(moved), str(other)] and second["changed"]["train.steps"] == [31, 32]
    assert second["trained_on_before"]["fingerprint"] != meta["dataset"]["fingerprint"]
    assert meta["dataset"]["root"] == str(other) and meta["steps_done"] == 32
    one_error_line(
        edgead("train", "--out", run, "--resume", "--set", "model.preset=s", "--allow-changes"),
        "would make another model",
        code=2,
    )


def test_symbolic_link_loops_neither_repeat_images_nor_hang(bundle, demo_data, tmp_path):
    """Folders and globs over links that loop (a link to a parent, two folders linking each other): every image
    once, in bounded time; a link to a folder elsewhere is still followed."""
    import time

    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    good = sorted((demo_data / "test" / "good").glob("*.png"))
    shutil.copy(good[0], tree / "a" / "0.png")
    shutil.copy(good[1], tree / "a" / "b" / "1.png")
    (tree / "a" / "b" / "up").symlink_to(tree / "a")
    (tree / "a" / "b" / "root").symlink_to(tree)
    (tree / "a" / "again.png").symlink_to(tree / "a" / "0.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(good[2], elsewhere / "2.png")
    (tree / "ext").symlink_to(elsewhere)
    t0 = time.monotonic()
    r = edgead("predict", "--bundle", bundle, f"{tree}/**/*.png", tree / "a")
    assert r.returncode == 0 and time.monotonic() - t0 < 60, r.stderr
    scored = [line.split("\t")[0] for line in r.stdout.strip().splitlines()]
    assert sorted(Path(p).name for p in scored) == ["0.png", "1.png", "2.png"]  # again.png is 0.png
    assert "the same files again" in r.stderr


def test_an_image_too_small_to_judge_is_refused_by_predict_as_by_the_server(bundle, tmp_path):
    cv2.imwrite(str(tmp_path / "line.png"), np.full((1, 640, 3), 128, np.uint8))
    r = edgead("predict", "--bundle", bundle, tmp_path / "line.png")
    one_error_line(r, "is too small: images of at least 8x8 pixels are judged")


def test_a_budget_that_is_not_a_number_is_one_error_line(demo_data, tmp_path):
    for value in ("nan", "inf", "-inf"):
        one_error_line(
            edgead(
                "train", "--method", "patchcore", "--data", demo_data, "--out", tmp_path / "r", "--max-minutes", value
            ),
            "train.max_minutes must be",
            code=2,
        )
    one_error_line(
        edgead(
            "train",
            "--method",
            "patchcore",
            "--data",
            demo_data,
            "--out",
            tmp_path / "r",
            "--set",
            "train.learning_rate=.nan",
        ),
        "train.learning_rate must be a finite number",
        code=2,
    )
    assert not (tmp_path / "r").exists()


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
    data[int(n * 0.4) : int(n * 0.5)] = (
        np.random.default_rng(0).integers(0, 256, int(n * 0.5) - int(n * 0.4), dtype=np.uint8).tobytes()
    )
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
    one_error_line(
        edgead("run", "--bundle", bundle, "--source", tmp_path / "missing.mp4", "--jsonl", out), "is not a camera index"
    )
    assert not out.exists()


# 10 ------------------------------------------------------ calibration says how sure it is
def test_few_calibration_images_give_a_warning_with_the_interval(bundle, demo_data):
    r = edgead(
        "calibrate",
        bundle,
        "--good",
        demo_data / "validation/good/000.png",
        "--good",
        demo_data / "validation/good/001.png",
        "--good",
        demo_data / "validation/good/002.png",
    )
    assert r.returncode == 0, r.stderr
    assert (
        "warning: only 3 anomaly-free images calibrated the threshold" in r.stderr
        and "90% bootstrap interval" in r.stderr
    )
    one_error_line(
        edgead("calibrate", bundle, "--good", demo_data / "validation/good/000.png"),
        "needs at least 3 anomaly-free images",
    )


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
    one_error_line(
        edgead("predict", "--bundle", bundle, image, env={"EDGEAD_TRUSTED_KEYS": str(keys / "other.pub")}),
        "not among the trusted keys",
    )
    r = edgead("calibrate", bundle, "--good", demo_data / "validation/good", env=trusted)  # changes the manifest
    assert r.returncode == 0 and "invalidated the signature" in r.stderr
    one_error_line(edgead("predict", "--bundle", bundle, image, env=trusted), "is not signed")
    r = edgead("calibrate", bundle, "--good", demo_data / "validation/good", "--sign-key", keys / "owner.key")
    assert r.returncode == 0, r.stderr
    assert edgead("predict", "--bundle", bundle, image, env=trusted).returncode == 0


def test_every_file_in_a_bundle_is_vouched_for(bundle, tmp_path, monkeypatch):
    from edgead.core.errors import BundleError
    from edgead.runtime.detector import Detector

    stage = _manifest(bundle)["stages"][0]["file"]
    (bundle / f"{stage}.data").write_bytes(b"\0" * 64)  # ONNX external weights: read by the runtime, listed nowhere
    with pytest.raises(BundleError, match=rf"holds {stage}.data, a file its manifest does not list"):
        load_bundle(bundle)
    (bundle / f"{stage}.data").unlink()
    (bundle / "graphs/x.runtime-cache").write_bytes(b"kernels")  # TensorRT for RTX's cache may sit there
    assert load_bundle(bundle)

    pytest.importorskip("cryptography")
    from edgead.core.signing import generate_keys, sign

    private, public = generate_keys(tmp_path / "owner")
    sign(bundle, private)
    extra = bundle / _manifest(bundle)["extras"][0]["file"]
    extra.write_bytes(extra.read_bytes()[:-8] + b"\1" * 8)  # changed after signing; the manifest is untouched
    monkeypatch.setenv("EDGEAD_TRUSTED_KEYS", str(public))
    with pytest.raises(BundleError, match="does not match the manifest"):
        Detector.load(bundle, verify=False)  # no flag skips the check on a machine that trusts only signed bundles
    monkeypatch.delenv("EDGEAD_TRUSTED_KEYS")
    assert load_bundle(bundle, verify=False)  # without trusted keys the caller may skip the hashes


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    from edgead.core.outputs import atomic_write, atomic_write_with

    target = atomic_write(tmp_path / "weights.safetensors", b"old")

    def half_written(p):
        p.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_with(target, half_written)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]


# 13 ----------------------------------------------- values that load but make no sense are refused
@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda m: m["calibration"]["image"].update(threshold=float("nan")),
            "manifest.calibration.image.threshold must be a finite number, got nan",
        ),
        (
            lambda m: m["calibration"]["image"].update(threshold=float("inf")),
            "manifest.calibration.image.threshold must be a finite number, got inf",
        ),
        (lambda m: m["scoring"].update(smoothing_sigma=1e9), "manifest.scoring.smoothing_sigma must lie in [0, 100]"),
        (lambda m: m["scoring"].update(top_k=0), "manifest.scoring.top_k must lie in [1, "),
        (lambda m: m["calibration"].update(target_frr=3.0), "manifest.calibration.target_frr must lie in [0, 0.5]"),
        (lambda m: m["preprocess"].update(std=[0.5, 0.0, 0.5]), "manifest.preprocess needs std > 0"),
        (
            lambda m: m["params"].update(alpha_bar_s=float("-inf")),
            "manifest.params.alpha_bar_s must be a finite number",
        ),
    ],
)
def test_a_value_that_makes_no_sense_is_refused_by_name(bundle, demo_data, edit, message):
    """A NaN threshold compares False with every score: every part would pass and validate say PASSED."""
    data = _manifest(bundle)
    edit(data)
    _rewrite(bundle, data)
    one_error_line(edgead("predict", "--bundle", bundle, demo_data / "test/hole/000.png"), message)
    one_error_line(edgead("validate", bundle), message)


def test_a_score_that_is_not_finite_is_an_error_for_that_frame_never_a_pass(tiny_bundle, demo_data):
    from edgead import Detector
    from edgead.core.errors import InputError
    from edgead.runtime.sources import ImageFilesSource

    with Detector.load(tiny_bundle, backend="onnxruntime-cpu") as det:
        real = det.pipeline.run
        det.pipeline.run = lambda x: type(real(x))(np.full((x.shape[0], 64, 64), np.nan, np.float32))
        with pytest.raises(InputError, match=r"the anomaly score of the image is not finite \(nan\)"):
            det.predict(demo_data / "test/hole/000.png")
        src = ImageFilesSource(sorted((demo_data / "test/good").glob("*.png"))[:3], "three")
        assert list(det.stream(src)) == [] and src.stats.refused_frames == 3 and src.stats.unjudged == 3
        assert "not finite" in src.stats.first_error  # counted among the frames without a verdict


def test_nested_yaml_and_os_errors_are_one_line(tmp_path, demo_data):
    cfg = tmp_path / "deep.yaml"
    cfg.write_text("a: " + "[" * 20000 + "]" * 20000 + "\n")
    one_error_line(
        edgead("train", "--config", cfg, "--out", tmp_path / "r", "--data", demo_data),
        "is nested too deeply to be a configuration",
        code=2,
    )
    huge = tmp_path / "huge.edgead"
    huge.mkdir()
    with (huge / "manifest.yaml").open("wb") as f:
        f.truncate(17 << 20)  # sparse: no disk used
    one_error_line(edgead("validate", huge), "more than a manifest can be")


def test_an_os_error_anywhere_is_one_line(monkeypatch, tiny_bundle, tmp_path):
    """A full disk or a vanished folder mid-command: the system's own words on one line, exit 1."""
    import errno

    from click.testing import CliRunner

    from edgead import cli
    from edgead.runtime import sources

    def full(specs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out.jsonl"))

    monkeypatch.setattr(sources, "expand_images", full)
    r = CliRunner().invoke(cli.main, ["predict", "--bundle", str(tiny_bundle), "x.png"])
    assert r.exit_code == 1 and r.output.strip() == f"error: {tmp_path / 'out.jsonl'}: No space left on device"


# 14 -------------------------------- --overwrite replaces only what edgead made; outputs created exclusively
def test_overwrite_never_replaces_a_folder_edgead_did_not_make(tiny_run, demo_data, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "tiny")
    (runs / "notes.txt").write_text("the line's notes")
    before = digest(runs)
    one_error_line(edgead("export", runs / "tiny", "--out", runs, "--overwrite"), "holds the training run", code=2)
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.txt").write_text("keep")
    one_error_line(
        edgead("export", runs / "tiny", "--out", other, "--overwrite"),
        "is not an edgead bundle (a folder edgead made); --overwrite replaces only that",
        code=2,
    )
    one_error_line(edgead("demo", "--out", other, "--overwrite"), "is not a previous demo", code=2)
    one_error_line(
        edgead("train", "--data", demo_data, "--out", other, "--steps", "1"),
        "holds other files and no training run",
        code=2,
    )
    assert digest(runs) == before and (other / "a.txt").read_text() == "keep" and len(list(other.iterdir())) == 1


def test_a_file_that_appears_after_the_check_is_never_replaced(tmp_path):
    from edgead.core.errors import ConfigError
    from edgead.core.outputs import atomic_write_with, publish_dir
    from edgead.line.sinks import JsonlSink

    out = tmp_path / "report.json"

    def slow_write(tmp):  # another process creates the file while edgead writes its own
        tmp.write_text("edgead's")
        out.write_text("someone else's")

    with pytest.raises(ConfigError, match="appeared while edgead was writing it; it was left as it is"):
        atomic_write_with(out, slow_write, exclusive=True)
    assert out.read_text() == "someone else's" and [p.name for p in tmp_path.iterdir()] == ["report.json"]
    atomic_write_with(out, lambda tmp: tmp.write_text("edgead's"))  # --overwrite: replaced
    assert out.read_text() == "edgead's"

    new, taken = tmp_path / "new", tmp_path / "taken.edgead"
    new.mkdir()
    taken.mkdir()  # appeared (empty) after BundleWriter's check: rename() would silently replace it
    with pytest.raises(ConfigError, match="appeared while edgead was writing it"):
        publish_dir(new, taken)
    assert new.is_dir() and taken.is_dir()

    sink = JsonlSink(tmp_path / "frames.jsonl")
    (tmp_path / "frames.jsonl").write_text("the line's own log\n")
    with pytest.raises(ConfigError, match="appeared after the check; it was left as it is"):
        sink.write(None)
    assert (tmp_path / "frames.jsonl").read_text() == "the line's own log\n"


def test_a_private_key_is_never_readable_by_others(tmp_path):
    pytest.importorskip("cryptography")
    from edgead.core.errors import ConfigError
    from edgead.core.outputs import atomic_write_with
    from edgead.core.signing import generate_keys

    private, public = generate_keys(tmp_path / "line")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    modes = []
    atomic_write_with(tmp_path / "k", lambda tmp: (tmp.write_text("x"), modes.append(tmp.stat().st_mode)), mode=0o600)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    with pytest.raises(ConfigError, match="already exists"):
        generate_keys(tmp_path / "line")


def test_an_image_too_large_to_decode_is_one_error_and_the_batch_goes_on(bundle, demo_data, tmp_path):
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((300, 200, 3), np.uint8))
    good = demo_data / "test/good/000.png"
    r = edgead("predict", "--bundle", bundle, big, good, env={"EDGEAD_MAX_IMAGE_PIXELS": "50000"})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "is 200x300 pixels, more than the limit of 50,000 (set EDGEAD_MAX_IMAGE_PIXELS" in r.stderr
    assert len(r.stdout.strip().splitlines()) == 1 and "000.png" in r.stdout
    tif = tmp_path / "big.tif"  # a format whose header is not read first: checked after decoding
    cv2.imwrite(str(tif), np.zeros((300, 200, 3), np.uint8))
    one_error_line(
        edgead("predict", "--bundle", bundle, tif, env={"EDGEAD_MAX_IMAGE_PIXELS": "50000"}),
        "is 200x300 pixels, more than the limit",
    )
    one_error_line(
        edgead("predict", "--bundle", bundle, good, env={"EDGEAD_MAX_IMAGE_PIXELS": "lots"}),
        "EDGEAD_MAX_IMAGE_PIXELS must be a whole number of pixels, got 'lots'",
    )


def test_calibration_screens_its_good_images(method_bundle, demo_data, tmp_path):
    bundle = tmp_path / "b.edgead"
    shutil.copytree(
        method_bundle("patchcore")[0], bundle
    )  # scores that follow the image (the tiny DiffusionAD's barely do)
    good = sorted((demo_data / "validation/good").glob("*.png")) + sorted((demo_data / "test/good").glob("*.png"))
    same = tmp_path / "same"
    same.mkdir()
    for i in range(5):  # one image given five times counts once
        shutil.copy(good[0], same / f"copy{i}.png")
    r = edgead("calibrate", bundle, "--good", same, "--good", good[1], "--good", good[2])
    assert r.returncode == 1 and "the images that raise it most: all 3 (too few to leave one out)" in r.stderr
    r = edgead("calibrate", bundle, "--good", same, "--good", good[1], "--good", good[2], "--accept-misses")
    assert r.returncode == 0, r.stderr
    assert "counted 4 repeated images once" in r.stderr and json.loads(r.stdout)["images"] == 3
    defect = tmp_path / "mixed"
    defect.mkdir()
    for i, p in enumerate(good):
        shutil.copy(p, defect / f"{i:02d}.png")
    rng = np.random.default_rng(0)
    for i in range(2):  # something else entirely among the "good" parts
        cv2.imwrite(str(defect / f"zz_{i}.png"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    before = digest(bundle)
    one_error_line(
        edgead("calibrate", bundle, "--good", defect, "--refuse-outliers"),
        "2 of the 14 given images look like defective parts",
    )
    assert digest(bundle) == before
    r = edgead("calibrate", bundle, "--good", defect)
    assert r.returncode == 0 and "look like defective parts" in r.stderr and "zz_" in r.stderr, r.stderr
    assert "left out of the threshold" in r.stderr and json.loads(r.stdout)["images"] == 12


def test_outlier_rule_and_constant_scores():
    from edgead.core.config import CalibrationConfig
    from edgead.runtime.calibration import calibration_from_scores, outliers

    rng = np.random.default_rng(0)
    scores = rng.normal(10, 1, 40)
    assert len(outliers(scores)) == 0
    assert list(outliers(np.r_[scores, 30.0, 31.0])) == [40, 41]
    assert len(outliers(np.r_[scores[:5], 30.0])) == 0  # too few to screen
    cal = calibration_from_scores(np.full(25, 2.0), np.full(25, 3.0), 0.0, CalibrationConfig(), "x")
    assert any("all 25 good images score the same" in w for w in cal.warnings)


def test_commands_that_change_a_bundle_take_turns_and_clean_up_after_killed_ones(tmp_path, caplog):
    import threading

    from edgead.core.outputs import exclusive

    bundle = tmp_path / "line.edgead"
    bundle.mkdir()
    stale = tmp_path / ".line.edgead.writing-k1ll3d"  # an export that was killed half-way
    (stale / "graphs").mkdir(parents=True)
    order, held = [], threading.Event()

    def first():
        with exclusive(bundle, "calibrate"):
            held.set()
            order.append("first in")
            threading.Event().wait(0.5)
            order.append("first out")

    t = threading.Thread(target=first)
    t.start()
    held.wait(5)
    with caplog.at_level("WARNING"), exclusive(bundle, "export --engine"):
        order.append("second in")
    t.join()
    assert order == ["first in", "first out", "second in"]
    assert "export --engine: waiting for another edgead command" in caplog.text
    assert not stale.exists()
    with exclusive(tmp_path / "mistyped.edgead", "calibrate"):  # calibrate on a bundle that is not there
        pass
    assert not (tmp_path / ".mistyped.edgead.lock").exists()


def test_a_yaml_alias_bomb_is_refused_before_it_expands(bundle, tmp_path):
    bomb = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10))
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text("l0: &l0 [lol]\n" + bomb)  # 1 kB that safe_load would expand to 9^9 strings
    one_error_line(
        edgead("train", "--config", cfg, "--out", tmp_path / "r"), "uses a YAML alias (*name, line 2)", code=2
    )
    data = _manifest(bundle)
    body = yaml.safe_dump(data, sort_keys=False).replace("method:", "x: &x [1]\ny: *x\nmethod:", 1)
    (bundle / "manifest.yaml").write_text(body + INTEGRITY + hashlib.sha256(body.encode()).hexdigest() + "\n")
    one_error_line(edgead("validate", bundle), "uses a YAML alias")


def test_one_writer_per_json_lines_file(tmp_path):
    from edgead.core.errors import ConfigError
    from edgead.line.sinks import JsonlSink

    class R:  # the part of a Result the sink reads
        timestamp = None

        def to_dict(self):
            return {"score": 1.0}

    path = tmp_path / "e.jsonl"
    path.write_text("old run\n")
    first, second = JsonlSink(path, overwrite=True), JsonlSink(path, overwrite=True)
    first.write(R())
    with pytest.raises(ConfigError, match="is being written by another edgead run"):
        second.write(R())
    first.write(R())
    first.close()
    assert path.read_text().splitlines() == ['{"score": 1.0, "time": null}'] * 2


def test_a_full_disk_leaves_no_half_line_and_no_truncated_image(tmp_path, monkeypatch):
    import errno

    from edgead.data.io import write_image
    from edgead.line.sinks import JsonlSink

    class R:
        timestamp = None

        def to_dict(self):
            return {"score": 2.0}

    sink = JsonlSink(tmp_path / "e.jsonl")
    sink.write(R())

    class FullDisk:  # the file object of a disk that fills after 10 bytes of the next line
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[:10])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

    sink.file = FullDisk(sink.file)
    with pytest.raises(OSError, match="No space left"):
        sink.write(R())
    sink.file = sink.file.f
    sink.close()
    assert (tmp_path / "e.jsonl").read_text() == '{"score": 2.0, "time": null}\n'  # every line whole

    def fill(tmp):
        tmp.write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    from edgead.core import outputs

    real = outputs.atomic_write_with
    monkeypatch.setattr(outputs, "atomic_write_with", lambda path, write, *a, **k: real(path, fill, *a, **k))
    with pytest.raises(OSError, match="No space left"):
        write_image(tmp_path / "overlay.png", np.zeros((8, 8, 3), np.uint8))
    assert list(tmp_path.iterdir()) == [tmp_path / "e.jsonl"]  # no 0-byte or half image, no temporary
