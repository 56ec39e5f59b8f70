"""Sources, sinks and the run loop, driven by every source kind that can exist without a camera."""

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgead import Detector
from edgead.core.errors import InputError, SourceError
from edgead.line.runner import run_stream
from edgead.line.sinks import AnomalySaver, JsonlSink, VideoSink
from edgead.runtime.sources import ImageFilesSource, LiveSource, open_source
from edgead.runtime.stream import Roi

from .conftest import edgead_cli


@pytest.fixture(scope="module")
def detector(tiny_bundle):
    with Detector.load(tiny_bundle, backend="onnxruntime-cpu") as d:
        yield d


@pytest.fixture(scope="module")
def video(demo_data, tmp_path_factory):
    """A lossless video of the demo test images (decoded frames equal the PNG files)."""
    files = sorted(demo_data.glob("test/*/*.png"))
    path = tmp_path_factory.mktemp("video") / "line.mkv"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 5, (64, 64))
    for f in files:
        w.write(cv2.imread(str(f)))
    w.release()
    return path, files


@pytest.mark.parametrize("pipeline", [False, True])
def test_video_run_matches_predict(detector, video, tmp_path, pipeline):
    """With --pipeline the sinks write on their own thread: the same lines, video and saved anomalies."""
    path, files = video
    jsonl, out = tmp_path / "e.jsonl", tmp_path / "out.mp4"
    sinks = [JsonlSink(jsonl), VideoSink(out, fps=5), AnomalySaver(tmp_path / "bad")]
    stats = run_stream(detector, open_source(str(path)), sinks, echo=lambda m: None, pipeline=pipeline)
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert stats.frames == len(lines) == len(files) and stats.stopped_by == "end of source"
    assert [x["frame_index"] for x in lines] == list(range(len(files)))
    for line, f in zip(lines, files):
        assert line["score"] == pytest.approx(detector.predict(f).score, abs=1e-6)
    cap = cv2.VideoCapture(str(out))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == len(files)
    saved = list((tmp_path / "bad").glob("*_overlay.png"))
    assert len(saved) == stats.anomalies == sum(x["is_anomalous"] for x in lines)


def test_folder_stride_and_roi(detector, demo_data):
    src = open_source(str(demo_data / "test" / "good"))
    results = list(detector.stream(src, stride=2, roi="8,4,40,48"))
    assert [r.frame_index for r in results] == [0, 2, 4]
    assert results[0].anomaly_map.shape == (48, 40)
    with pytest.raises(InputError, match="outside the 64x64 frame"):
        list(detector.stream(str(demo_data / "test" / "good"), roi="40,40,40,40"))


def test_corrupt_image_is_skipped_and_counted(detector, demo_data, tmp_path):
    good = sorted((demo_data / "test" / "good").glob("*.png"))[:2]
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"broken")
    src = ImageFilesSource([good[0], junk, good[1]], "mixed")
    results = list(detector.stream(src))
    assert len(results) == 2 and src.stats.bad_frames == 1


def test_camera_that_does_not_open():
    with pytest.raises(SourceError, match="cannot open camera 97"):
        open_source(97)
    with pytest.raises(SourceError) as err:
        open_source("no/such/video.mp4")
    assert str(err.value) == (
        "source 'no/such/video.mp4' is not a camera index, a GStreamer pipeline (with '!'), "
        "a URL (rtsp://, http://, ...), an image, folder or glob or an existing video file"
    )


class FakeCapture:
    """Delivers ``n`` frames (optionally a corrupt one), then fails like a dropped stream."""

    def __init__(self, n, bad_at=None, delay=0.0):
        self.n, self.bad_at, self.delay, self.i = n, bad_at, delay, 0

    def isOpened(self):
        return True

    def read(self):
        time.sleep(self.delay)
        if self.i >= self.n:
            return False, None
        self.i += 1
        if self.i == self.bad_at:
            return True, np.zeros((5, 5, 2), np.uint8)
        return True, np.full((64, 64, 3), self.i % 255, np.uint8)

    def release(self):
        pass


class ClosedCapture(FakeCapture):
    def isOpened(self):
        return False


def test_stream_that_fails_mid_way_reports_and_gives_up(detector):
    opened = [FakeCapture(5, bad_at=2, delay=0.01)]
    src = LiveSource("fake cam", lambda: opened.pop() if opened else ClosedCapture(0), reconnect_attempts=2)
    got = []
    with pytest.raises(SourceError, match="gave up after 2 reconnect attempts"):
        for r in detector.stream(src):
            got.append(r)
    assert len(got) >= 1 and src.stats.bad_frames == 1


def test_stream_reconnects_and_reports_the_gap(detector):
    caps = [FakeCapture(3, delay=0.01), FakeCapture(3, delay=0.01)]
    src = LiveSource("flaky", lambda: caps.pop(0) if caps else ClosedCapture(0), reconnect_attempts=1)
    results = []
    with pytest.raises(SourceError):
        for r in detector.stream(src):
            results.append(r)
    assert src.stats.reconnects == 1 and len(src.stats.gaps_s) == 1 and len(results) >= 2


def test_live_source_keeps_only_the_newest_frame(detector):
    src = LiveSource("fast cam", lambda: FakeCapture(10_000, delay=0.001))
    seen = []
    for r in detector.stream(src, max_frames=5):
        seen.append(r.frame_index)
        time.sleep(0.05)  # a slow consumer
    src.close()
    assert src.stats.dropped_live_frames > 20
    assert all(b - a > 1 for a, b in zip(seen, seen[1:]))  # always the newest, never a backlog


def test_stop_event_ends_the_run(detector, video):
    stop = threading.Event()
    stop.set()
    stats = run_stream(detector, open_source(str(video[0]), loop=True), [], stop=stop, echo=lambda m: None)
    assert stats.frames == 0 and stats.stopped_by == "stop request (q)"


class StalledCapture(FakeCapture):
    """One frame, then a read that blocks like a camera whose cable was pulled."""

    def read(self):
        if self.i:
            time.sleep(0.05)
            return False, None
        self.i += 1
        return True, np.full((64, 64, 3), 7, np.uint8)


def test_interrupt_ends_a_stalled_live_source_promptly(detector):
    caps = [StalledCapture(1)]
    src = LiveSource("stalled", lambda: caps.pop(0) if caps else ClosedCapture(0), reconnect_attempts=1000)
    got = []
    t = threading.Timer(0.5, src.interrupt)  # what the SIGTERM handler calls
    t.start()
    t0 = time.perf_counter()
    for r in detector.stream(src):
        got.append(r)
    src.close()
    assert len(got) == 1 and time.perf_counter() - t0 < 5  # not stuck in the reconnect back-off


def test_sigterm_closes_outputs_cleanly(tiny_bundle, video, tmp_path):
    jsonl, out = tmp_path / "e.jsonl", tmp_path / "o.avi"
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgead.cli",
            "run",
            "--bundle",
            str(tiny_bundle),
            "--source",
            str(video[0]),
            "--loop",
            "--jsonl",
            str(jsonl),
            "--save",
            str(out),
            "--backend",
            "onnxruntime-cpu",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline and (not jsonl.exists() or len(jsonl.read_text().splitlines()) < 40):
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=30)
    assert p.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["stopped_by"] == "SIGTERM" and summary["frames"] >= 40  # looped past the 15-frame file
    lines = jsonl.read_text().splitlines()
    assert len(lines) == summary["frames"] and all(json.loads(x)["score"] >= 0 for x in lines)
    cap = cv2.VideoCapture(str(out))
    assert cap.isOpened() and cap.read()[0]


def test_run_cli_errors_are_one_line(tiny_bundle, tmp_path):
    def run(*args):
        return edgead_cli("run", "--bundle", tiny_bundle, *args)

    r = run("--camera", "97")
    assert (
        r.returncode == 1
        and r.stderr.strip() == "error: cannot open camera 97 (not connected, wrong index/URL, or in use)"
    )
    r = run("--camera", "0", "--source", "x.mp4")
    assert r.returncode == 2 and "exactly one of --camera" in r.stderr
    r = run("--source", "x", "--roi", "1,2,3")
    assert "error: --roi must be x,y,width,height" in r.stderr
    (tmp_path / "e.jsonl").write_text("keep me\n")
    r = run("--source", str(tmp_path), "--jsonl", str(tmp_path / "e.jsonl"))
    assert "already exists; pass --overwrite" in r.stderr
    assert (tmp_path / "e.jsonl").read_text() == "keep me\n"


def test_roi_parsing():
    assert Roi.parse("1,2,30,40") == Roi(1, 2, 30, 40)
    assert Roi.parse(None) is None


def test_example_integration_script(tiny_bundle, video, tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "examples/reject_on_anomaly.py",
            "--bundle",
            str(tiny_bundle),
            "--source",
            str(video[0]),
            "--dry-run",
            "--evidence",
            str(tmp_path / "ev"),
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert r.returncode == 0, r.stderr
    n_rejects = int(r.stderr.strip().splitlines()[-1].split()[-2])
    assert n_rejects == len(list((tmp_path / "ev").glob("*.jpg")))


def test_a_sink_that_fails_on_its_thread_ends_the_run_with_its_error(detector, video, tmp_path):
    from edgead.line.sinks import Sink

    class Full(Sink):
        closed = False

        def write(self, result):
            raise OSError(28, "No space left on device")

        def close(self):
            Full.closed = True

    jsonl = tmp_path / "e.jsonl"
    with pytest.raises(OSError, match="No space left on device"):
        run_stream(detector, open_source(str(video[0])), [JsonlSink(jsonl), Full()], echo=lambda m: None, pipeline=True)
    assert Full.closed and len(jsonl.read_text().splitlines()) >= 1  # the other sink closed with whole lines


def test_status_line_says_how_many_live_frames_were_skipped():
    from edgead.line.runner import RunStats

    slow = RunStats(frames=10, source={"dropped_live_frames": 7, "lost_frames": 0})
    assert slow.status_line().endswith("| skipped (slower than the camera) 7")
    assert "skipped" not in RunStats(frames=10, source={"dropped_live_frames": 0}).status_line()


def test_a_run_that_judges_too_few_frames_ends_with_an_error(tiny_bundle, demo_data, tmp_path):
    """Frames the model refuses (too small) are no verdicts: all refused, or more than --max-unjudged of them,
    is exit 1 with one line naming the first reason; every JSON line names the bundle and threshold."""
    from edgead.core.bundle import load_bundle

    tiny = tmp_path / "tiny"
    tiny.mkdir()
    for i in range(2):
        cv2.imwrite(str(tiny / f"{i}.png"), np.full((64, 5, 3), 90, np.uint8))
    r = edgead_cli("run", "--bundle", tiny_bundle, "--source", tiny)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert (
        r.stderr.strip().splitlines()[-1]
        == "error: no frame was judged: all 2 frames read got no verdict (first: image of shape (64, 5, 3) is too "
        "small: images of at least 8x8 pixels are judged)"
    )
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in sorted((demo_data / "test" / "good").glob("*.png"))[:6]:
        (mixed / f.name).write_bytes(f.read_bytes())
    cv2.imwrite(str(mixed / "zz.png"), np.full((64, 5, 3), 90, np.uint8))
    r = edgead_cli("run", "--bundle", tiny_bundle, "--source", mixed, "--jsonl", tmp_path / "m.jsonl")
    assert r.returncode == 1 and "error: 1 of 7 frames (14.3%) got no verdict, more than the 5% allowed" in r.stderr
    ident = load_bundle(tiny_bundle).id
    lines = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and {x["bundle_id"] for x in lines} == {ident} and len({x["threshold"] for x in lines}) == 1
    r = edgead_cli("run", "--bundle", tiny_bundle, "--source", mixed, "--max-unjudged", "0.2")
    assert r.returncode == 0, r.stderr
    r = edgead_cli("run", "--bundle", tiny_bundle, "--source", mixed, "--expect-bundle", "0123456789abcdef")
    assert r.returncode == 1 and f"is {ident}, not the expected 0123456789abcdef" in r.stderr


def test_a_stream_of_refused_frames_gives_up_instead_of_running_on(detector):
    from edgead.line.runner import NOTHING_JUDGED_AFTER

    tiny = [np.full((4, 64, 3), 90, np.uint8)] * (NOTHING_JUDGED_AFTER + 50)
    src = ImageFilesSource([Path("x")], "tiny frames")
    src.frames = lambda: iter(
        __import__("edgead.runtime.sources", fromlist=["Frame"]).Frame(i, im, 0.0, "t") for i, im in enumerate(tiny)
    )
    with pytest.raises(SourceError, match=f"the first {NOTHING_JUDGED_AFTER} frames of tiny frames were all refused"):
        run_stream(detector, src, [], echo=lambda m: None)


def test_loop_repeats_an_image_folder_and_is_refused_for_a_live_source(tiny_bundle, demo_data, tmp_path):
    files = sorted((demo_data / "test" / "good").glob("*.png"))
    src = open_source(str(demo_data / "test" / "good"), loop=True)
    frames = []
    for frame in src.frames():
        frames.append(frame)
        if len(frames) == 2 * len(files) + 1:
            src.interrupt()
    assert [f.index for f in frames] == list(range(2 * len(files) + 1))
    assert [Path(f.source).name for f in frames[: len(files)]] == [Path(f.source).name for f in frames[len(files) : -1]]
    r = edgead_cli("run", tiny_bundle, "--camera", "97", "--loop")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    hole = sorted((demo_data / "test" / "hole").glob("*.png"))[1]
    with Detector.load(tiny_bundle, backend="onnxruntime-cpu") as det:
        result = det.predict(hole)
    result.is_anomalous, result.frame_index = True, 7  # judged anomalous, the 8th frame of a folder source
    saver = AnomalySaver(tmp_path / "bad")
    saver.write(result)
    assert sorted(p.name for p in (tmp_path / "bad").iterdir()) == [
        f"00000007_{hole.stem}_{kind}.png" for kind in ("frame", "mask", "overlay")
    ]  # the source file's name kept


def test_a_run_whose_first_frames_all_score_high_says_it_may_be_another_setup(method_bundle, demo_data, tmp_path):
    """Frames unlike the calibration images (here: noise) are most of them anomalous from the start: said once,
    with what to do; a run of the calibration's kind of frames says nothing."""
    rng = np.random.default_rng(0)
    for i in range(32):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    said = []
    with Detector.load(method_bundle("patchcore")[0], backend="onnxruntime-cpu") as det:
        run_stream(det, open_source(str(tmp_path)), [], echo=said.append, status_every_s=1e9)
        warned = [m for m in said if "of the first 30 frames" in m]
        assert len(warned) == 1 and "edgead calibrate BUNDLE --good SOURCE" in warned[0]
        said.clear()
        good = str(demo_data / "train" / "good")
        run_stream(det, open_source(good, loop=True), [], echo=said.append, status_every_s=1e9, max_frames=30)
        assert not [m for m in said if "of the first" in m]
