"""A line view in the browser: ``edgead run ... --web 127.0.0.1:8080``.

What an engineer at the line looks at, served by the standard library's threaded HTTP server (no
GUI OpenCV, any install): the live annotated frame as MJPEG, the score over time against the
threshold, frames per second and latency, counts, and the latest anomalies with their maps.
Loopback only unless a host is given, and then only with ``--web-token`` (every request carries
``?token=``) or the named opt-out ``--web-public``. No page or JSON names a path of the machine (sources
appear by file name). A browser that goes away mid-answer is a debug line, never a traceback. The server
thread only reads what ``write`` last published, so a slow browser never slows the line.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import PurePath
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, urlsplit

import cv2
import numpy as np

from ..core.errors import ConfigError
from ..runtime.overlay import heat_map
from ..runtime.temporal import LineOutput, PartDecision
from .sinks import Sink, SinkOptions
from .web_page import PAGE

if TYPE_CHECKING:
    from ..runtime.result import Result

log = logging.getLogger(__name__)
BOUNDARY = b"edgeadframe"


@dataclass(frozen=True)
class WebAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, option: str = "--web") -> WebAddress:
        """``PORT`` (loopback), ``HOST:PORT`` or ``[IPv6]:PORT`` of a server the run opens (``option`` names it in
        the error: the line view, the metrics, the OPC UA server)."""
        host, sep, port = text.rpartition(":") if ":" in text else ("", "", text)
        host = host.strip("[]")
        try:
            number = int(port)
        except ValueError:
            number = -1
        if not 0 <= number <= 65535 or (sep and not host):
            raise ConfigError(f"{option} {text!r}: give PORT or HOST:PORT, e.g. 127.0.0.1:8080")
        return cls(host or "127.0.0.1", number)

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def public_name(source: str | None) -> str | None:
    """What the line view may show of a frame's source: a URL as the source redacted it, a file by its name
    (never the folders above it)."""
    if source is None or "://" in source or source.startswith("camera"):
        return source
    return PurePath(source).name


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A browser that resets or closes its connection mid-answer: one debug line (the base prints a traceback)."""
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("web: %s went away (%s)", client_address[0], exc)
        else:
            log.warning("web: a request from %s failed: %s", client_address[0], exc)


def _jpeg(bgr: np.ndarray, quality: int = 80) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ConfigError("OpenCV cannot encode JPEG frames for the line view")
    return buf.tobytes()


class WebView(Sink):
    """A sink that serves the latest results to browsers while the stream runs."""

    def __init__(
        self,
        address: str | WebAddress,
        token: str | None = None,
        history: int = 600,
        gallery: int = 12,
        title: str = "edgead",
    ):
        self.address = address if isinstance(address, WebAddress) else WebAddress.parse(address)
        if token is not None and len(token) < 8:
            raise ConfigError("--web-token must have at least 8 characters")
        self.token, self.title = token, title
        self.frame: bytes | None = None
        self.frame_id = 0
        self.changed = threading.Condition()
        self.closed = False
        self.scores: deque[tuple[float, float, bool]] = deque(maxlen=history)
        self.gallery: deque[dict] = deque(maxlen=gallery)
        self.images: dict[str, bytes] = {}
        self.counts = {"frames": 0, "anomalies": 0, "events": 0, "parts": 0, "rejected_parts": 0}
        self.judged_by: dict[str, object] = {}
        """The bundle, raw threshold and source of the latest frame (shown in the page's header)."""
        self.connections: dict[str, dict] = {}
        self.latency: deque[float] = deque(maxlen=100)
        self.times: deque[float] = deque(maxlen=50)
        self.started = time.time()
        try:
            self.server = _Server((self.address.host, self.address.port), _handler(self))
        except OSError as exc:
            raise ConfigError(
                f"cannot serve the line view on {self.address.host}:{self.address.port}: {exc.strerror or exc}"
            ) from None
        self.thread = threading.Thread(target=self.server.serve_forever, name="edgead-web", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/" + (f"?token={quote(self.token, safe='')}" if self.token else "")

    def write(self, result: Result) -> None:
        jpeg = _jpeg(result.overlay(color="bgr"))
        now = result.timestamp or time.time()
        with self.changed:
            self.frame, self.frame_id = jpeg, self.frame_id + 1
            self.counts["frames"] += 1
            self.counts["anomalies"] += bool(result.is_anomalous)
            self.judged_by = {
                "bundle_id": result.bundle_id,
                "raw_threshold": round(float(result.threshold), 6),
                "source": public_name(result.source),
            }
            self.scores.append((now, float(result.normalised_score), bool(result.is_anomalous)))
            self.latency.append(float(result.latency_ms.get("total", 0.0)))
            self.times.append(time.monotonic())
            if result.is_anomalous:
                key = str(self.frame_id)
                self.images[f"{key}/overlay"] = jpeg
                heat = heat_map(result.anomaly_map, result.pixel_stats)  # the pixel threshold mid-scale
                self.images[f"{key}/map"] = _jpeg(cv2.cvtColor(heat, cv2.COLOR_RGB2BGR))
                if len(self.gallery) == self.gallery.maxlen:
                    old = self.gallery[0]["id"]
                    self.images.pop(f"{old}/overlay", None)
                    self.images.pop(f"{old}/map", None)
                self.gallery.append(
                    {
                        "id": key,
                        "frame": result.frame_index,
                        "time": now,
                        "score": round(float(result.score), 6),
                        "source": public_name(result.source),
                    }
                )
            self.changed.notify_all()

    def write_event(self, event: LineOutput) -> None:
        with self.changed:
            if isinstance(event, PartDecision):
                self.counts["parts"] += 1
                self.counts["rejected_parts"] += bool(event.is_anomalous)
            else:
                self.counts["events"] += 1

    def on_status(self, stats) -> None:
        with self.changed:  # the sinks with a connection (MQTT): connected, queued, dropped
            self.connections = {
                name: {k: s.get(k) for k in ("connected", "queued", "dropped")} for name, s in stats.sinks.items()
            }

    def stats(self) -> dict:
        with self.changed:
            lat = np.asarray(self.latency) if self.latency else np.zeros(1)
            span = self.times[-1] - self.times[0] if len(self.times) > 1 else 0.0
            return {
                "title": self.title,
                "frames": self.counts["frames"],
                "anomalies": self.counts["anomalies"],
                "events": self.counts["events"],
                "parts": self.counts["parts"],
                "rejected_parts": self.counts["rejected_parts"],
                "connections": self.connections,
                **self.judged_by,
                "fps": round((len(self.times) - 1) / span, 2) if span > 0 else 0.0,
                "latency_ms": {f"p{q}": round(float(np.percentile(lat, q)), 2) for q in (50, 90, 99)},
                "threshold": 0.5,  # scores are normalised: the bundle's threshold sits at 0.5
                "scores": [[round(t, 3), round(s, 4), a] for t, s, a in self.scores],
                "gallery": list(reversed(self.gallery)),
                "frame_id": self.frame_id,
                "uptime_s": round(time.time() - self.started, 1),
            }

    def next_frame(self, after: int, timeout: float = 5.0) -> tuple[int, bytes | None]:
        with self.changed:
            self.changed.wait_for(lambda: self.frame_id > after or self.closed, timeout)
            return self.frame_id, self.frame

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()
        self.server.shutdown()
        self.server.server_close()


def web_sink(address: str, options: SinkOptions) -> WebView:
    """The SINKS entry ``web`` (``--web [HOST:]PORT``)."""
    where = WebAddress.parse(address)
    if not where.loopback and not options.token and not options.web_public:
        raise ConfigError(
            f"--web {address} exposes the line view beyond this machine: give it a --web-token "
            "(or $EDGEAD_WEB_TOKEN), or pass --web-public to show the line's frames to anyone who "
            f"reaches {where.host}"
        )
    view = WebView(where, options.token, title=options.title)
    if not view.address.loopback and not options.token:
        options.echo(
            f"warning: the line view is open to every machine that reaches {view.address.host} "
            "(--web-public, no --web-token)"
        )
    options.echo(f"line view: {view.url}")
    return view


def _handler(view: WebView) -> type[BaseHTTPRequestHandler]:
    page = PAGE.replace("__TITLE__", html.escape(view.title)).encode()

    class Handler(BaseHTTPRequestHandler):
        server_version = "edgead"

        def log_message(self, format, *args):
            log.debug("web: " + format, *args)

        def _send(self, code: int, body: bytes, kind: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            try:
                self.wfile.write(body)
            except (ConnectionError, TimeoutError):
                log.debug("web: %s went away", self.client_address[0])

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            given = parse_qs(url.query).get("token", [""])[0]
            if view.token and not hmac.compare_digest(given.encode(), view.token.encode()):
                return self._send(403, b"a valid ?token= is needed\n", "text/plain")
            route = url.path.rstrip("/") or "/"
            if route == "/":
                return self._send(200, page, "text/html; charset=utf-8")
            if route == "/stats.json":
                return self._send(200, json.dumps(view.stats()).encode(), "application/json")
            if route == "/frame.jpg":
                frame = view.frame
                return (
                    self._send(200, frame, "image/jpeg") if frame else self._send(404, b"no frame yet\n", "text/plain")
                )
            if route.startswith("/gallery/") and route.endswith(".jpg"):
                image = view.images.get(route[len("/gallery/") : -len(".jpg")])
                return self._send(200, image, "image/jpeg") if image else self._send(404, b"gone\n", "text/plain")
            if route == "/stream.mjpg":
                return self._stream()
            return self._send(404, b"not found\n", "text/plain")

        def _stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            seen = 0
            try:
                while not view.closed:
                    seen, frame = view.next_frame(seen)
                    if frame is None or view.closed:
                        continue
                    self.wfile.write(
                        b"--"
                        + BOUNDARY
                        + b"\r\nContent-Type: image/jpeg\r\nContent-Length: "
                        + str(len(frame)).encode()
                        + b"\r\n\r\n"
                        + frame
                        + b"\r\n"
                    )
                    self.wfile.flush()
            except (ConnectionError, TimeoutError):
                pass  # the browser went away

    return Handler
