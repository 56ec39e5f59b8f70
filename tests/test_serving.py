"""Serving a fleet: bundles behind Triton Inference Server (edgead serve), RemoteDetector, run --server.

The server tests start a real tritonserver on loopback ports with the session's tiny bundles and check
every answer against the local Detector on the same frames; they skip where the nvidia-pytriton wheel
(the tritonserver binary) is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edgead.serving.server import free_ports
from tests.conftest import edgead_cli

SERVE_PYTHON = os.path.abspath(os.environ.get("EDGEAD_SERVE_PYTHON") or sys.executable)  # not resolved: a venv's link
"""The interpreter edgead serve runs under. The test command gives it a virtualenv of its own with the [serve]
pins (Triton's Python backend exchanges arrays only with numpy 1) while the tests and the clients run with what
users of the demo get (numpy 2), as a fleet does: the server's environment is not the line PC's."""

pytestmark = pytest.mark.slow  # the inner loop, pytest -m "not slow", leaves these out


def _frames(demo_data: Path, n: int) -> list[np.ndarray]:
    import cv2

    files = sorted((demo_data / "test").rglob("*.png"))[:n]
    return [cv2.imread(str(f)) for f in files]


SAME = {"rel": 1e-5, "abs": 1e-6}
"""Served and local answers agree to this: the server runs under numpy 1 and OpenCV 4.11 (the [serve] pins), the
tests and clients under numpy 2 and OpenCV 5, whose blurs and resizes round float32 a little differently (1e-7)."""


def _rgb(bgr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(bgr[..., ::-1])


# ------------------------------------------------------------------------- without a server
def test_served_model_answers_each_request_on_its_own(method_bundle, demo_data):
    """Frames of all valid requests are scored together; a bad request gets its own error, the others
    exactly the local Detector's answer for the same batch."""
    from edgead import Detector
    from edgead.core.errors import InputError
    from edgead.serving.model import Request, ServedModel

    det = Detector.load(method_bundle("patchcore")[0])
    model = ServedModel(det)
    frames = [_rgb(f) for f in _frames(demo_data, 3)]
    big = np.ascontiguousarray(np.repeat(np.repeat(frames[2], 2, 0), 3, 1))  # another size, same request batch
    requests = [
        Request(np.stack(frames[:2])),
        Request(np.zeros((1, 0, 0, 3), np.uint8)),
        Request(np.zeros((1, 4, 4, 3), np.uint8)),
        Request(frames[0][None].astype(np.float32)),
        Request(np.stack(frames[:1]), map_size=0),
        Request(big[None], map_size=16),
        Request(frames[2][None], outputs=["score", "nonsense"]),
    ]
    answers = model.answer(requests)
    errors = {i: str(a) for i, a in enumerate(answers) if isinstance(a, InputError)}
    assert sorted(errors) == [1, 2, 3, 4, 6]
    assert "(0, 0, 3) is too small: images of at least 8x8 pixels are judged" in errors[1]
    assert "(4, 4, 3) is too small" in errors[2]
    assert "must be uint8, got float32" in errors[3]
    assert "'map_size' must be a whole number >= 1, got 0" in errors[4]
    assert "unknown outputs ['nonsense']" in errors[6]
    local = det.predict_rgb([frames[0], frames[1], big])  # the same batch the server formed
    got = np.concatenate([answers[0]["score"], answers[5]["score"]])[:, 0]
    assert got.tolist() == [r.score for r in local]
    assert answers[0]["is_anomalous"][:, 0].tolist() == [r.is_anomalous for r in local[:2]]
    assert answers[0]["anomaly_map"].shape[1:] == det.image_size  # model resolution by default
    assert max(answers[5]["anomaly_map"].shape[1:]) == 16
    assert answers[0]["bundle_id"][0, 0].decode() == model.bundle_id and len(model.bundle_id) == 16
    model.close()


def export_repository(bundles: list[Path], out: Path) -> list[str]:
    r = edgead_cli(
        "export",
        bundles[0],
        "--triton-repo",
        out,
        *sum((["--also", b] for b in bundles[1:]), []),
        "--max-batch",
        "4",
        "--queue-delay-ms",
        "1.5",
    )
    assert r.returncode == 0, r.stderr
    names = json.loads(r.stdout)["models"]
    assert names == [b.name.removesuffix(".edgead") for b in bundles]
    return names


def test_repository_for_a_stock_tritonserver(method_bundle, tiny_bundle, tmp_path):
    """What export --triton-repo writes: the bundles inside, their paths relative (tested served below)."""
    from edgead.core.bundle import load_bundle
    from edgead.core.errors import ConfigError
    from edgead.serving.repository import Batching, plan_models, write_repository

    pc = method_bundle("patchcore")[0]
    names = export_repository([pc, tiny_bundle], tmp_path / "models")
    for name in names:
        config = (tmp_path / "models" / name / "config.pbtxt").read_text()
        assert f'name: "{name}"' in config and "max_batch_size: 4" in config
        assert "max_queue_delay_microseconds: 1500" in config and "allow_ragged_batch: true" in config
        assert 'key: "bundle" value: { string_value: "bundle" }' in config
        assert "edgead.serving.triton_model" in (tmp_path / "models" / name / "1" / "model.py").read_text()
        load_bundle(tmp_path / "models" / name / "1" / "bundle")  # a whole, verified copy
    again = edgead_cli("export", pc, "--triton-repo", tmp_path / "models")
    assert again.returncode != 0 and "not empty; pass --overwrite" in again.stderr
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="not a Triton model repository"):
        write_repository(tmp_path / "mine", plan_models([pc]), Batching(), overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    with pytest.raises(ConfigError, match="two models would be named 'same'"):
        plan_models([pc, tiny_bundle], ["same", "same"])


_SERVE_REPOSITORY = """
import sys
from pathlib import Path
from edgead.serving.server import Endpoints, TritonServer
with TritonServer(Path(sys.argv[1]), Endpoints("127.0.0.1", *map(int, sys.argv[2:5]))):
    print("ready", flush=True)
    sys.stdin.read()
"""


@pytest.mark.slow
def test_exported_repository_serves_after_a_move(triton, method_bundle, tiny_bundle, demo_data, tmp_path):
    from edgead import Detector, RemoteDetector

    names = export_repository([method_bundle("patchcore")[0], tiny_bundle], tmp_path / "made")
    moved = shutil.move(tmp_path / "made", tmp_path / "elsewhere")  # relative bundle paths: the repository is movable
    http, grpc, metrics = free_ports(3)
    frame = _frames(demo_data, 1)[0]
    server = subprocess.Popen(
        [SERVE_PYTHON, "-c", _SERVE_REPOSITORY, str(moved), str(http), str(grpc), str(metrics)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout.readline() == "ready\n"
        with RemoteDetector(f"grpc://127.0.0.1:{grpc}", model=names[1]) as remote:
            assert remote.predict(frame).score == pytest.approx(Detector.load(tiny_bundle).predict(frame).score, **SAME)
            assert [r.score for r in remote.stream(demo_data / "test" / "hole")] == pytest.approx(
                [r.score for r in Detector.load(tiny_bundle).stream(demo_data / "test" / "hole")], **SAME
            )
    finally:
        server.stdin.close()
        assert server.wait(60) == 0


def test_run_needs_one_of_bundle_or_server(tiny_bundle, demo_data):
    r = edgead_cli("run", "--bundle", tiny_bundle, "--server", "grpc://127.0.0.1:1", "--source", demo_data / "test")
    assert r.returncode == 2 and "exactly one of BUNDLE or --server URL" in r.stderr
    r = edgead_cli("run", "--server", "ftp://x", "--source", demo_data / "test")
    assert r.returncode == 2 and "expected grpc://HOST:PORT or http://HOST:PORT" in r.stderr


def test_serve_says_why_triton_would_not_start(method_bundle, tmp_path):
    """One port given twice is refused before Triton starts; a reason Triton prints after its usage text (an
    option it refuses) reaches the user instead of "no reason in its log"."""
    bundle = method_bundle("patchcore")[0]
    http, grpc, metrics = free_ports(3)
    r = edgead_cli(
        "serve", bundle, "--host", "127.0.0.1", "--http-port", http, "--grpc-port", http, "--metrics-port", metrics
    )
    assert r.returncode != 0 and "--http-port and --grpc-port are both" in r.stderr and "Traceback" not in r.stderr
    fake = tmp_path / "tritonserver"
    fake.write_text(
        "#!/bin/sh\necho 'Usage: tritonserver [options]'\necho '  --model-repository <path>'\necho\n"
        "echo 'The server cannot listen to HTTP requests and GRPC requests at the same address'\nexit 1\n"
    )
    fake.chmod(0o755)
    r = edgead_cli(
        "serve",
        bundle,
        "--host",
        "127.0.0.1",
        "--http-port",
        http,
        "--grpc-port",
        grpc,
        "--metrics-port",
        metrics,
        "--tritonserver",
        fake,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert "Triton stopped (exit code 1): The server cannot listen to HTTP requests and GRPC requests" in r.stderr


# ----------------------------------------------------------------------------- with a server
@pytest.fixture(scope="module")
def triton():
    """Triton in the serving environment: where the test command names one, it must have the wheel."""
    if subprocess.run([SERVE_PYTHON, "-c", "import pytriton"], capture_output=True).returncode != 0:
        if os.environ.get("EDGEAD_SERVE_PYTHON"):
            pytest.fail(f"EDGEAD_SERVE_PYTHON={SERVE_PYTHON} has no nvidia-pytriton: pip install -e '.[serve]' there")
        pytest.skip('needs the Triton server wheel: pip install "edgead[serve]" (or EDGEAD_SERVE_PYTHON)')
    pytest.importorskip("tritonclient.grpc", reason='needs the Triton client: pip install "edgead[client]"')


class Server:
    def __init__(self, bundles: list[Path], names: list[str], log: Path, ports: list[int] | None = None, *extra: str):
        self.ports = ports or free_ports(3)
        self.grpc, self.http = f"grpc://127.0.0.1:{self.ports[1]}", f"http://127.0.0.1:{self.ports[0]}"
        args = [
            SERVE_PYTHON,
            "-m",
            "edgead.cli",
            "serve",
            *map(str, bundles),
            "--host",
            "127.0.0.1",
            "--http-port",
            str(self.ports[0]),
            "--grpc-port",
            str(self.ports[1]),
            "--metrics-port",
            str(self.ports[2]),
            "--log",
            str(log),
            *extra,
        ]
        for name in names:
            args += ["--name", name]
        self.err = log.with_suffix(".stderr")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(self.err, "w"), text=True)
        line = self.proc.stdout.readline()  # the endpoints, once every model is ready
        if not line:
            self.proc.wait(30)
            raise AssertionError(f"edgead serve did not start: {self.err.read_text()}")
        self.info = json.loads(line)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


@pytest.fixture(scope="module")
def served(triton, method_bundle, tiny_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    pc = root / "pc.edgead"
    shutil.copytree(method_bundle("patchcore")[0], pc)  # replaced on disk by a test
    server = Server(
        [pc, tiny_bundle],
        ["patchcore", "diffusionad"],
        root / "triton.log",
        None,
        "--max-pixels",
        "1000000",
        "--reload-every",
        "0.5",
        "--max-batch",
        "4",
    )
    yield server, {"patchcore": pc, "diffusionad": tiny_bundle}
    assert server.stop() == 0, server.err.read_text()


@pytest.mark.slow
def test_remote_detector_equals_local(served, demo_data):
    from edgead import Detector, RemoteDetector
    from edgead.core.errors import ConfigError
    from edgead.serving.client import ServerError

    server, bundles = served
    frames = _frames(demo_data, 4)
    frames[3] = np.ascontiguousarray(frames[3][:50, :60])  # a frame of another size
    for name, url in (("patchcore", server.grpc), ("diffusionad", server.http)):
        with Detector.load(bundles[name]) as local, RemoteDetector(url, model=name) as remote:
            assert remote.method == local.method
            for frame in frames:
                a, b = local.predict(frame), remote.predict(frame)
                assert (b.score, b.normalised_score) == pytest.approx((a.score, a.normalised_score), **SAME)
                assert (b.is_anomalous, b.threshold) == (a.is_anomalous, a.threshold)
                np.testing.assert_allclose(b.anomaly_map, a.anomaly_map, rtol=1e-5, atol=1e-5)
                assert np.mean(b.mask != a.mask) < 1e-3  # a pixel within 1e-6 of the pixel threshold may differ
                assert b.pixel_stats == a.pixel_stats and b.overlay().shape == frame.shape
            same_size = frames[:3]
            assert [r.score for r in remote.predict_batch(same_size)] == pytest.approx(
                [r.score for r in local.predict_batch(same_size)], **SAME
            )  # one request, the local batch
    with pytest.raises(ConfigError, match="serves 2 models .*name one"):
        RemoteDetector(server.grpc)
    with pytest.raises(ServerError, match="serves no model 'nonexistent'; it serves: diffusionad, patchcore"):
        RemoteDetector(server.grpc, model="nonexistent")
    with pytest.raises(ServerError, match="unreachable"):
        RemoteDetector(f"grpc://127.0.0.1:{free_ports(1)[0]}", model="patchcore")


@pytest.mark.slow
def test_bad_payloads_get_errors_and_the_server_keeps_serving(served, demo_data):
    import tritonclient.grpc as grpc

    from edgead import Detector

    server, bundles = served
    client = grpc.InferenceServerClient(server.grpc.removeprefix("grpc://"))
    good = _rgb(_frames(demo_data, 1)[0])
    expected = Detector.load(bundles["patchcore"]).predict_rgb([good])[0].score

    def send(x, dtype="UINT8", params=None):
        tensor = grpc.InferInput("image", list(x.shape), dtype)
        tensor.set_data_from_numpy(x)
        try:
            return client.infer("patchcore", [tensor], parameters=params).as_numpy("score")[0, 0]
        except Exception as exc:
            return exc

    bad = {
        "dtype": (
            np.zeros((1, 64, 64, 3), np.float32),
            "FP32",
            None,
            "data-type is 'FP32', but model 'patchcore' expects 'UINT8'",
        ),
        "rank": (np.zeros((1, 64, 64), np.uint8), "UINT8", None, "unexpected shape for input 'image'"),
        "empty": (np.zeros((1, 0, 0, 3), np.uint8), "UINT8", None, "images of at least 8x8 pixels are judged"),
        "too large": (np.zeros((1, 1001, 1000, 3), np.uint8), "UINT8", None, "exceed the server's limit of 1,000,000"),
        "map_size": (good[None], "UINT8", {"map_size": -2}, "'map_size' must be a whole number >= 1"),
    }
    for case, (x, dtype, params, message) in bad.items():
        answer = send(x, dtype, params)
        assert isinstance(answer, Exception) and message in str(answer), (case, answer)
        assert "INVALID_ARGUMENT" in str(answer), (case, answer)
    with pytest.raises(Exception, match="(?i)restricted|permission|unauthenticated|edgead-admin"):
        client.unload_model("patchcore")  # what is served is not a client's to change
    assert client.is_model_ready("patchcore")
    gone = grpc.InferenceServerClient(server.grpc.removeprefix("grpc://"))  # a client that leaves mid-request
    tensor = grpc.InferInput("image", [4, *good.shape], "UINT8")
    tensor.set_data_from_numpy(np.repeat(good[None], 4, 0))
    with pytest.raises(Exception, match="Deadline"):
        gone.infer("patchcore", [tensor], client_timeout=0.0001)  # far below any round trip
    gone.close()
    answers: dict[int, object] = {}
    threads = [
        threading.Thread(
            target=lambda k=k: answers.__setitem__(
                k, send(good[None]) if k % 2 else send(np.zeros((1, 2, 2, 3), np.uint8))
            )
        )
        for k in range(16)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(k for k, a in answers.items() if isinstance(a, Exception)) == list(range(0, 16, 2))
    for k in range(1, 16, 2):  # batched with bad requests or not: every good one answered
        assert abs(answers[k] - expected) <= 1e-4 * abs(expected), (k, answers[k], expected)


@pytest.mark.slow
def test_run_server_gives_the_local_run(served, demo_data, tmp_path):
    server, bundles = served
    src = demo_data / "test" / "scratch"
    local = edgead_cli("run", "--bundle", bundles["diffusionad"], "--source", src, "--jsonl", tmp_path / "local.jsonl")
    remote = edgead_cli(
        "run", "--server", server.grpc, "--model", "diffusionad", "--source", src, "--jsonl", tmp_path / "remote.jsonl"
    )
    assert local.returncode == 0 and remote.returncode == 0, remote.stderr
    rows = [
        [json.loads(line) for line in (tmp_path / f).read_text().splitlines()] for f in ("local.jsonl", "remote.jsonl")
    ]
    assert len(rows[0]) == len(rows[1]) > 0
    for a, b in zip(*rows):
        assert (a["source"], a["frame_index"], a["score"], a["is_anomalous"], a["anomalous_pixels"]) == (
            b["source"],
            b["frame_index"],
            b["score"],
            b["is_anomalous"],
            b["anomalous_pixels"],
        )
    summary = json.loads(remote.stdout.strip().splitlines()[-1])
    assert summary["server"]["frames"] == len(rows[1]) and summary["server"]["reconnects"] == 0
    ident = rows[1][0]["bundle_id"]
    assert {r["bundle_id"] for r in rows[0] + rows[1]} == {ident} and len(ident) == 16  # every line names it
    assert {r["threshold"] for r in rows[1]} == {summary["threshold"]}
    pinned = edgead_cli(
        "run",
        "--server",
        server.grpc,
        "--model",
        "diffusionad",
        "--source",
        src,
        "--expect-bundle",
        bundles["diffusionad"],
    )  # a copy of the bundle pins its id
    assert pinned.returncode == 0, pinned.stderr
    other = edgead_cli(
        "run",
        "--server",
        server.grpc,
        "--model",
        "diffusionad",
        "--source",
        src,
        "--expect-bundle",
        "0123456789abcdef",
        "--jsonl",
        tmp_path / "other.jsonl",
    )
    assert other.returncode == 1 and "Traceback" not in other.stderr
    assert f"answered with bundle {ident}, but this client expects bundle 0123456789abcdef" in other.stderr
    assert not (tmp_path / "other.jsonl").exists()  # no verdict of the wrong bundle was written


@pytest.mark.slow
def test_a_client_whose_frames_are_all_refused_fails(served, tmp_path):
    """Frames the server refuses (here: too small to judge) are no verdicts: the run says so and ends 1."""
    import cv2

    server, _ = served
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((4, 64, 3), 90, np.uint8))
    r = edgead_cli(
        "run", "--server", server.grpc, "--model", "patchcore", "--source", tmp_path, "--jsonl", tmp_path / "out.jsonl"
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "error: no frame was judged: all 3 frames read got no verdict (first: the server refused" in r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["unjudged"] == 3


@pytest.mark.slow
def test_health_and_metrics(served, demo_data):
    """Triton's metrics, and edgead's decisions per served model and bundle beside them."""
    from edgead import RemoteDetector

    server, _ = served

    def scrape() -> tuple[str, dict[str, float]]:
        with urllib.request.urlopen(server.info["metrics"], timeout=5) as r:
            text = r.read().decode()
        counts = {"pass": 0.0, "reject": 0.0}
        for line in text.splitlines():
            if line.startswith("edgead_decisions_total{") and 'model="patchcore"' in line:
                counts[line.split('decision="')[1].split('"')[0]] += float(line.rsplit(" ", 1)[1])
        return text, counts

    for kind in ("live", "ready"):
        with urllib.request.urlopen(server.info["health"][kind], timeout=5) as r:
            assert r.status == 200
    _, before = scrape()
    with RemoteDetector(server.grpc, model="patchcore") as remote:
        results = [remote.predict(f) for f in sorted(demo_data.glob("test/*/*.png"))]
    metrics, after = scrape()
    assert 'nv_inference_count{model="patchcore",version="1"}' in metrics
    rejected = sum(r.is_anomalous for r in results)
    assert 0 < rejected < len(results)
    assert (after["pass"] - before["pass"], after["reject"] - before["reject"]) == (len(results) - rejected, rejected)
    with urllib.request.urlopen(f"{server.http}/v2/models/diffusionad/ready", timeout=5) as r:
        assert r.status == 200


@pytest.mark.slow
def test_bundle_replaced_on_disk_is_swapped_whole_or_refused(served, demo_data, tmp_path):
    """A damaged replacement is refused (the old bundle serves on); a whole one is swapped in; while it
    happens every answer is entirely the old bundle's or entirely the new one's."""
    from edgead import Detector, RemoteDetector
    from edgead.core.bundle import load_bundle

    server, bundles = served
    pc = bundles["patchcore"]
    frame = _frames(demo_data, 1)[0]
    events: list[str] = []
    remote = RemoteDetector(server.grpc, model="patchcore", on_event=events.append)
    old = (remote.predict(frame).normalised_score, remote.bundle_id)
    pinned = RemoteDetector(server.grpc, model="patchcore", expect_bundle=old[1])
    assert pinned.predict(frame).bundle_id == old[1]
    new_root = tmp_path / "new.edgead"
    shutil.copytree(pc, new_root)
    b = load_bundle(new_root)
    b.manifest.calibration.image.threshold *= 1.5  # a recalibrated bundle: same stages, other verdicts
    b.save_manifest()
    new = (Detector.load(new_root).predict(frame).normalised_score, load_bundle(new_root).id)
    assert new != old
    damaged = tmp_path / "damaged.edgead"
    shutil.copytree(new_root, damaged)
    graph = next(damaged.rglob("*.onnx"))
    graph.write_bytes(graph.read_bytes() + b"\0")

    def swap(folder: Path) -> None:
        shutil.rmtree(pc)
        shutil.copytree(folder, pc)

    swap(damaged)
    seen = set()
    for _ in range(12):  # the watcher looks every 0.5 s
        seen.add((remote.predict(frame).normalised_score, remote.bundle_id))
        time.sleep(0.15)
    assert seen == {old}
    swap(new_root)
    deadline = time.monotonic() + 30
    while (remote.predict(frame).normalised_score, remote.bundle_id) != new and time.monotonic() < deadline:
        seen.add((remote.predict(frame).normalised_score, remote.bundle_id))
    seen.add((remote.predict(frame).normalised_score, remote.bundle_id))
    assert seen == {old, new}  # never a mixture
    deadline = time.monotonic() + 20  # serve says so once Triton's configuration API shows the new bundle
    while f"reloaded: {old[1]} -> {new[1]}" not in server.err.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = server.err.read_text()
    assert "changed on disk but was refused" in log and f"reloaded: {old[1]} -> {new[1]}" in log
    assert remote.stats.bundle_changes == 1 and f"changed: {old[1]} -> {new[1]}" in " ".join(events)
    from edgead.serving.client import BundleMismatch

    with pytest.raises(BundleMismatch, match=f"answered with bundle {new[1]}, but this client expects bundle {old[1]}"):
        pinned.predict(frame)  # a pinned client never uses the new bundle's verdict


TAKEOVER = r"""
import base64, json, os, sys, urllib.request
pid, http, model = sys.argv[1], sys.argv[2], sys.argv[3]
out = {"uid": os.getuid()}
argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
out["cmdline_read"] = True
try:
    open(f"/proc/{pid}/environ", "rb").read()
    out["environ_read"] = True
except OSError:
    out["environ_read"] = False
headers = [{}]
for a in argv:  # whatever guards the restricted APIs, as the command line shows it
    text = a.decode(errors="replace")
    if "restricted" in text and ":" in text and "=" in text:
        key, _, value = text.split(":", 1)[1].partition("=")
        headers.append({key: value.strip()})
repo = next(a.decode().split("=", 1)[1] for a in argv if a.startswith(b"--model-repository="))
marker = f"/tmp/edgead-takeover-{pid}"
code = f"open({marker!r}, 'w').write('taken')\nclass TritonPythonModel:\n    def execute(self, r): return []\n"
config = json.dumps({"name": model, "backend": "python", "max_batch_size": 0,
                     "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1]}],
                     "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}]})
body = json.dumps({"parameters": {"config": config,
                                  "file:1/model.py": base64.b64encode(code.encode()).decode()}}).encode()
answers = []
for h in headers:
    for path in (f"/v2/repository/models/{model}/load", f"/v2/repository/models/{model}/unload",
                 "/v2/logging", "/v2/trace/setting"):
        req = urllib.request.Request(http + path, data=body if path.endswith("load") else b"{}", method="POST")
        for k, v in h.items():
            try:
                req.add_header(k, v)
            except ValueError:
                pass
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                answers.append([path, r.status])
        except urllib.error.HTTPError as e:
            answers.append([path, e.code])
        except (OSError, ValueError) as e:
            answers.append([path, str(e)[:80]])
out["answers"] = answers
try:
    open(os.path.join(repo, model, "config.pbtxt"), "a").close()
    out["repository_writable"] = True
except OSError:
    out["repository_writable"] = False
shm = [f for f in os.listdir("/dev/shm") if f.startswith("triton_python_backend")]
writable = []
for f in shm:
    try:
        open(os.path.join("/dev/shm", f), "r+b").close()
        writable.append(f)
    except OSError:
        pass
out["shm_regions"], out["shm_writable"] = len(shm), writable
out["marker"] = os.path.exists(marker)
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0 or not Path("/usr/bin/python3").is_file(),
    reason="needs root to run a process as another user (nobody) with the system's python3",
)
def test_another_user_of_the_machine_cannot_take_over_the_server(served, demo_data):
    """A local user reads Triton's command line (anyone may) and environment, then tries the model-repository
    (load with its own Python code, unload), logging and trace APIs with every header that command line shows:
    all refused, neither the repository nor the shared memory Triton exchanges frames through is theirs to write,
    and the served bundle is unchanged."""
    import psutil

    from edgead import RemoteDetector

    server, _ = served
    (triton_process,) = psutil.Process(server.proc.pid).children()
    before = RemoteDetector(server.grpc, model="patchcore")
    before.predict(_frames(demo_data, 1)[0])  # shared-memory regions exist once a request ran
    r = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", TAKEOVER, str(triton_process.pid), server.http, "patchcore"],
        capture_output=True,
        text=True,
        timeout=120,
        user=65534,
        group=65534,
        extra_groups=[],
        cwd="/",
    )
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout)
    assert seen["uid"] == 65534 and seen["cmdline_read"] and not seen["environ_read"]
    assert len(seen["answers"]) >= 8  # with no header and with the one the command line shows
    assert all(status in (400, 403) for _, status in seen["answers"]), seen["answers"]
    assert not seen["repository_writable"] and not seen["marker"]
    assert seen["shm_regions"] > 0 and seen["shm_writable"] == [], seen
    after = RemoteDetector(server.grpc, model="patchcore")
    after.predict(_frames(demo_data, 1)[0])
    assert after.bundle_id == before.bundle_id and triton_process.is_running()


@pytest.mark.slow
def test_server_restart_while_a_client_streams(triton, method_bundle, demo_data, tmp_path):
    """Killed and restarted under a streaming client: every frame answered once, in order, as locally; the
    client reports the gap."""
    from edgead import Detector, RemoteDetector

    bundle = method_bundle("patchcore")[0]
    server = Server([bundle], ["pc"], tmp_path / "a.log")
    frames = _frames(demo_data, 6) * 5
    expected = [r.score for r in map(Detector.load(bundle).predict, frames)]
    events: list[str] = []
    remote = RemoteDetector(server.grpc, reconnect_attempts=None, on_event=events.append)  # the only model
    assert remote.model == "pc"
    got: list[float] = []

    def stream():
        for f in frames:
            got.append(remote.predict(f).score)
            time.sleep(0.05)

    client = threading.Thread(target=stream)
    client.start()
    while len(got) < 5:
        time.sleep(0.05)
    import psutil

    (triton,) = psutil.Process(server.proc.pid).children()
    os.killpg(triton.pid, signal.SIGKILL)  # the server crashes: Triton and its Python backends, no clean stop
    assert server.proc.wait(60) == 1 and "Triton stopped with exit code -9" in server.err.read_text()
    again = Server([bundle], ["pc"], tmp_path / "b.log", server.ports)
    client.join(120)
    try:
        assert got == pytest.approx(expected, **SAME)
        assert remote.stats.reconnects == 1 and remote.stats.gap_s > 0.5
        assert any("unreachable" in e for e in events) and any("answers again after a gap" in e for e in events)
    finally:
        assert again.stop() == 0


@pytest.mark.slow
def test_no_orphaned_triton_when_serve_is_killed(triton, method_bundle, tmp_path):
    import psutil

    server = Server([method_bundle("patchcore")[0]], ["pc"], tmp_path / "k.log")
    (triton_process,) = psutil.Process(server.proc.pid).children()
    server.proc.kill()  # SIGKILL: no handler runs in edgead serve
    server.proc.wait()
    triton_process.wait(30)  # raises psutil.TimeoutExpired if Triton outlived it
    assert not triton_process.is_running()


@pytest.mark.slow
def test_a_model_that_cannot_load_stops_serve_with_the_reason(method_bundle, served, tmp_path):
    bundle = method_bundle("patchcore")[0]
    r = subprocess.run(
        [
            SERVE_PYTHON,
            "-m",
            "edgead.cli",
            "serve",
            str(bundle),
            "--host",
            "127.0.0.1",
            *sum(([f"--{k}-port", str(p)] for k, p in zip(("http", "grpc", "metrics"), free_ports(3))), []),
            "--backend",
            "tensorrt",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "error: Triton stopped (exit code 1): model patchcore did not load: edgead: " in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 2, r.stderr  # "starting ..." and the one error line
    server, _ = served  # a port in use
    r = edgead_cli(
        "serve",
        bundle,
        "--host",
        "127.0.0.1",
        "--http-port",
        server.ports[0],
        "--grpc-port",
        free_ports(1)[0],
        "--metrics-port",
        free_ports(1)[0],
    )
    assert r.returncode != 0 and f"cannot listen on 127.0.0.1:{server.ports[0]} (--http-port)" in r.stderr, r.stderr
