"""The line view (``edgead run --web``): what it serves, who may see it, and a real browser loading it."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from edgead import Detector
from edgead.core.errors import ConfigError
from edgead.line.runner import run_stream
from edgead.line.sinks import Sink
from edgead.line.web import BOUNDARY, WebAddress, WebView
from edgead.runtime.sources import ImageFilesSource

TOKEN = "line-7-secret"


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_addresses():
    assert WebAddress.parse("8080") == WebAddress("127.0.0.1", 8080) and WebAddress.parse("8080").loopback
    assert not WebAddress.parse("0.0.0.0:9000").loopback
    assert WebAddress.parse("[::1]:80") == WebAddress("::1", 80) and WebAddress.parse("localhost:1").loopback
    for bad in ("port", "127.0.0.1:99999", ":80", "1.2.3.4:x"):
        with pytest.raises(ConfigError, match="give PORT or HOST:PORT"):
            WebAddress.parse(bad)
    with pytest.raises(ConfigError, match="at least 8 characters"):
        WebView("127.0.0.1:0", token="short")
    from edgead.line.metrics import parse_address  # the same rule for the servers a plant points at, port 0 refused

    assert parse_address("0.0.0.0:9100", "--metrics") == ("0.0.0.0", 9100)
    with pytest.raises(ConfigError, match="--metrics '0': give a port number 1-65535"):
        parse_address("0", "--metrics")
    with pytest.raises(ConfigError, match="opcua sink 'x': give PORT or HOST:PORT"):
        parse_address("x", "opcua sink")


@pytest.fixture(scope="module")
def line_bundle(method_bundle, demo_data, tmp_path_factory):
    """The tiny PatchCore bundle with a threshold that flags the demo's defects (mean + 1 sd of good scores:
    the export's threshold from 6 images passes every part)."""
    from edgead import load_bundle
    from edgead.core.config import CalibrationConfig
    from edgead.runtime.calibration import recalibrate

    root = tmp_path_factory.mktemp("web") / "line.edgead"
    shutil.copytree(method_bundle("patchcore")[0], root)
    recalibrate(
        load_bundle(root),
        [str(demo_data / "validation/good")],
        CalibrationConfig(rule="k_sigma", k_sigma=1.0),
        backend="onnxruntime-cpu",
    )
    return root


@pytest.fixture(scope="module")
def detector(line_bundle):
    with Detector.load(line_bundle, backend="onnxruntime-cpu") as d:
        yield d


class _Open(Sink):
    """The view, kept serving after the stream ends (run_stream closes its sinks)."""

    def __init__(self, view):
        self.view = view

    def write(self, result):
        self.view.write(result)


def test_line_view_serves_frames_scores_and_anomalies(detector, demo_data):
    files = sorted(demo_data.glob("test/*/*.png"))
    view = WebView("127.0.0.1:0", token=TOKEN, title="tire <line 7>")
    try:
        assert _get(view.url.replace(TOKEN, "wrong"))[0] == 403
        stats = run_stream(detector, ImageFilesSource(files, "test"), [_Open(view)], echo=lambda m: None)
        code, page = _get(view.url)
        assert code == 200 and b"tire &lt;line 7&gt; line view" in page
        base = view.url.split("?")[0]
        s = json.loads(_get(f"{base}stats.json?token={TOKEN}")[1])
        assert s["frames"] == len(files) == stats.frames and s["anomalies"] == stats.anomalies > 0
        assert s["bundle_id"] == detector.bundle_id and s["raw_threshold"] == pytest.approx(detector.threshold)
        assert s["source"] == files[-1].name  # the file's name, never its path
        assert len(s["scores"]) == len(files) and s["threshold"] == 0.5 and s["fps"] > 0
        assert [a for _, _, a in s["scores"]].count(True) == stats.anomalies and s["latency_ms"]["p50"] > 0
        frame = cv2.imdecode(np.frombuffer(_get(f"{base}frame.jpg?token={TOKEN}")[1], np.uint8), cv2.IMREAD_COLOR)
        assert frame.shape == (64, 64, 3)
        latest = s["gallery"][0]
        for kind in ("overlay", "map"):
            code, jpg = _get(f"{base}gallery/{latest['id']}/{kind}.jpg?token={TOKEN}")
            assert code == 200 and cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR).shape == (64, 64, 3)
        with urllib.request.urlopen(f"{base}stream.mjpg?token={TOKEN}", timeout=10) as r:  # MJPEG: the latest frame
            assert r.headers["Content-Type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}"
            head = r.read(200)
            assert head.startswith(b"--" + BOUNDARY) and b"Content-Type: image/jpeg" in head
    finally:
        view.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(view.url, timeout=2)


def test_the_view_shows_parts_yield_and_the_connections_of_the_run(detector, demo_data):
    from edgead.runtime.temporal import Smoothing

    class Open(_Open):
        def write_event(self, event):
            self.view.write_event(event)

        def on_status(self, stats):
            self.view.on_status(stats)

    class Broker(Sink):  # a sink with a connection, as the MQTT sink reports it
        def write(self, result):
            pass

        def status(self):
            return {"connected": False, "queued": 7, "dropped": 2}

    files = sorted(demo_data.glob("test/*/*.png"))
    view = WebView("127.0.0.1:0")
    try:
        stats = run_stream(
            detector,
            ImageFilesSource(files, "test"),
            [Open(view), Broker()],
            echo=lambda m: None,
            smoothing=Smoothing(part_frames=3),
        )
        s = json.loads(_get(view.url + "stats.json")[1])
        assert (s["parts"], s["rejected_parts"], s["events"]) == (stats.parts, stats.rejected_parts, stats.events)
        assert s["parts"] == -(-len(files) // 3) and s["rejected_parts"] > 0
        assert s["connections"] == {"broker": {"connected": False, "queued": 7, "dropped": 2}}
        assert b'id="yield"' in _get(view.url)[1]
    finally:
        view.close()


def test_a_token_with_url_characters_opens_the_view_it_printed(detector, demo_data):
    """A token with '+', '&' or '%' works with the URL the view prints (it is encoded there)."""
    token = "a+b&c=d%e f/g"
    view = WebView("127.0.0.1:0", token=token)
    try:
        assert "%2B" in view.url and "&c=" not in view.url
        assert _get(view.url)[0] == 200
        base, query = view.url.split("?")
        assert _get(f"{base}stats.json?{query}")[0] == 200
        assert _get(f"{base}stats.json?token=a+b%26c=d")[0] == 403  # not encoded: another token
    finally:
        view.close()


def test_the_view_never_shows_a_path_of_the_machine(detector, demo_data):
    files = sorted(demo_data.glob("test/*/*.png"))
    view = WebView("127.0.0.1:0", token=TOKEN)
    try:
        run_stream(detector, ImageFilesSource(files, str(demo_data / "test")), [_Open(view)], echo=lambda m: None)
        base = view.url.split("?")[0]
        body = _get(f"{base}stats.json?token={TOKEN}")[1].decode() + _get(view.url)[1].decode()
        assert str(demo_data) not in body and "/tmp" not in body
        names = {a["source"] for a in json.loads(_get(f"{base}stats.json?token={TOKEN}")[1])["gallery"]}
        assert names and names <= {f.name for f in files}
    finally:
        view.close()


def test_beyond_loopback_the_view_needs_a_token_or_the_named_opt_out(tiny_bundle, demo_data):
    from edgead.line.sinks import SinkOptions
    from edgead.line.web import web_sink

    port = _free_port()
    with pytest.raises(ConfigError, match="exposes the line view beyond this machine: give it a --web-token"):
        web_sink(f"0.0.0.0:{port}", SinkOptions())
    said = []
    view = web_sink(f"0.0.0.0:{port}", SinkOptions(web_public=True, echo=said.append))
    try:
        assert "open to every machine" in said[0]
    finally:
        view.close()
    view = web_sink(f"0.0.0.0:{port}", SinkOptions(token=TOKEN, echo=said.append))
    view.close()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgead.cli",
            "run",
            "--bundle",
            str(tiny_bundle),
            "--source",
            str(demo_data / "test/good"),
            "--web",
            f"0.0.0.0:{port}",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--web-public" in r.stderr


def test_a_browser_that_resets_its_connection_leaves_no_traceback(detector, demo_data, caplog, capfd):
    import logging

    view = WebView("127.0.0.1:0")
    try:
        run_stream(
            detector,
            ImageFilesSource(sorted(demo_data.glob("test/good/*.png"))[:2], "g"),
            [_Open(view)],
            echo=lambda m: None,
        )
        host, port = view.server.server_address[:2]
        with caplog.at_level(logging.DEBUG, logger="edgead.line.web"):
            for path in ("/stream.mjpg", "/frame.jpg", "/stats.json"):
                s = socket.create_connection((host, port))
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.close()  # RST instead of FIN: the browser resets the connection
            s = socket.create_connection((host, port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.sendall(b"GET /stats.json HTT")  # reset mid-request
            s.close()
            time.sleep(1.0)
        assert _get(view.url)[0] == 200  # still serving
    finally:
        view.close()
    assert "Traceback" not in capfd.readouterr().err


def test_a_busy_port_is_one_error_line(tiny_bundle, demo_data):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "edgead.cli",
                "run",
                "--bundle",
                str(tiny_bundle),
                "--source",
                str(demo_data / "test/good"),
                "--web",
                f"127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
        )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"error: cannot serve the line view on 127.0.0.1:{port}: Address already in use" in r.stderr


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (CI installs the distribution's package)")
def test_the_line_view_in_a_real_browser(line_bundle, demo_data, tmp_path):
    """`edgead run --source VIDEO --loop --web`: a headless Chromium loads the page, its script fills in
    frames, scores and the anomaly gallery from the running line."""
    files = sorted(demo_data.glob("test/*/*.png"))
    video = tmp_path / "line.mkv"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"FFV1"), 5, (64, 64))
    for f in files:
        w.write(cv2.imread(str(f)))
    w.release()
    port = _free_port()
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgead.cli",
            "run",
            "--bundle",
            str(line_bundle),
            "--source",
            str(video),
            "--loop",
            "--web",
            f"127.0.0.1:{port}",
            "--web-token",
            TOKEN,
            "--backend",
            "onnxruntime-cpu",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/?token={TOKEN}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if json.loads(_get(url.replace("/?", "/stats.json?"))[1])["anomalies"] > 0:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.3)
        shot = tmp_path / "line-view.png"
        browser = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=3000",
            "--window-size=1100,800",
        ]
        dom = subprocess.run([*browser, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
        frames = re.search(r'id="frames">(\d+)<', dom)
        assert frames and int(frames.group(1)) > 0, dom[-2000:]
        assert re.search(r'id="fps">[0-9.]+<', dom) and 'figure data-id="' in dom  # the anomaly gallery
        assert 'src="stream.mjpg?token=' in dom
        assert re.search(r'id="judged">[^<]* · bundle [0-9a-f]+ · threshold [0-9.]+<', dom), dom[:3000]
        assert re.search(r'id="t1">[^<]+<', dom)  # the chart's time axis
        subprocess.run([*browser, f"--screenshot={shot}", url], capture_output=True, timeout=120)
        assert shot.is_file() and cv2.imread(str(shot)).shape[:2] == (800, 1100)
        if os.environ.get("EDGEAD_SCREENSHOT"):  # docs/line-view.png is made this way
            shutil.copy(shot, os.environ["EDGEAD_SCREENSHOT"])
    finally:
        p.send_signal(signal.SIGTERM)
        stdout, stderr = p.communicate(timeout=30)
    assert p.returncode == 0, stderr
    assert f"line view: http://127.0.0.1:{port}/?token={TOKEN}" in stderr and json.loads(stdout)["frames"] > 0
