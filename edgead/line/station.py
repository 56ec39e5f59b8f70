"""One line station: its cameras, each with its bundle (or served model), product, smoothing and sinks.

``edgead run`` is one camera given by flags; ``edgead station station.yaml`` runs every camera of a station file,
each on a thread of its own, until SIGTERM (systemd's stop), Ctrl-C or the end of every source. Both open a camera
with ``open_camera`` and report it with ``summary``. A station restarted by systemd appends to its JSON-lines
files and puts the anomalies of each start in a folder of their own: nothing of an earlier run is overwritten.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.bundle import bundle_pin
from ..core.errors import BundleError, ConfigError, EdgeadError
from ..runtime.interface import AnomalyDetector
from ..runtime.sources import FrameSource, open_source
from ..runtime.stream import Roi
from ..runtime.temporal import Smoothing
from .runner import RunStats, run_stream
from .sinks import SINKS, Sink, SinkOptions, open_sinks


@dataclass
class CameraSpec:
    """What one camera of a line runs: the options of ``edgead run``, one key each in a station file."""

    name: str = "camera"
    bundle: str | None = None
    server: str | None = None
    model: str | None = None
    camera: int | None = None
    source: str | None = None
    backend: str = "auto"
    int8: bool = False
    product: str | None = None
    stride: int = 1
    roi: str | None = None
    smoothing: Smoothing = field(default_factory=Smoothing)
    sinks: list[tuple[str, str]] = field(default_factory=list)
    expect_bundle: str | None = None
    reconnect_attempts: int | None = None
    loop: bool = False
    max_frames: int | None = None
    max_unjudged: float = 0.05
    pipeline: bool = False

    def check(self) -> None:
        if (self.camera is None) == (self.source is None):
            raise ConfigError("give exactly one of --camera N or --source SPEC (camera or source in a station file)")
        if (self.bundle is None) == (self.server is None):
            raise ConfigError("give exactly one of BUNDLE or --server URL (bundle or server in a station file)")
        if self.server is not None and self.product is not None:
            raise ConfigError("--product picks thresholds of a local bundle; a served product is its own --model")
        if self.server is not None and self.int8:
            raise ConfigError("--int8 chooses a local bundle's graphs; the server decides what it runs")
        if self.server is None and self.model is not None:
            raise ConfigError("--model names a served model; it goes with --server")
        Roi.parse(self.roi)

    @property
    def deciding(self) -> bool:
        """Events and parts need a decider, even unsmoothed."""
        return self.smoothing.active or any(name in ("events", "mqtt") for name, _ in self.sinks)


@dataclass
class OpenCamera:
    spec: CameraSpec
    detector: Any
    source: FrameSource
    sinks: list[Sink]
    stop: threading.Event

    def run(self, status_every_s: float, echo: Callable[[str], None]) -> RunStats:
        s = self.spec
        with self.detector:
            return run_stream(
                self.detector,
                self.source,
                self.sinks,
                stride=s.stride,
                roi=Roi.parse(s.roi),
                max_frames=s.max_frames,
                status_every_s=status_every_s,
                echo=echo,
                stop=self.stop,
                pipeline=s.pipeline,
                smoothing=s.smoothing if s.deciding else None,
            )


Connect = Callable[[CameraSpec, Callable[[str], None]], AnomalyDetector]
"""Opens a served model for a camera with ``server`` (the commands pass serving's RemoteDetector; the line
application does not import the fleet's client)."""


def open_camera(
    spec: CameraSpec, options: SinkOptions, echo: Callable[[str], None], connect: Connect | None = None
) -> OpenCamera:
    """Sinks first (outputs are checked before anything loads), then the detector and the source; whatever was
    opened is closed again when a later step fails."""
    from ..runtime.detector import Detector

    spec.check()
    sinks = open_sinks(spec.sinks, options)
    det = None
    try:
        if spec.server is not None:
            if connect is None:
                raise ConfigError("this application cannot reach a server (no client given to open_camera)")
            det = connect(spec, echo)
        else:
            det = Detector.load(spec.bundle, backend=spec.backend, product=spec.product, int8=spec.int8)
            if spec.expect_bundle is not None and bundle_pin(spec.expect_bundle) != det.bundle_id:
                raise BundleError(
                    f"bundle {spec.bundle} is {det.bundle_id}, not the expected {bundle_pin(spec.expect_bundle)} "
                    "(expect_bundle)"
                )
        where = spec.camera if spec.camera is not None else spec.source
        src = open_source(where, reconnect_attempts=spec.reconnect_attempts, loop=spec.loop)
    except BaseException:
        for s in sinks:
            s.close()
        if det is not None:
            det.close()
        raise
    return OpenCamera(spec, det, src, sinks, options.stop)


def summary(camera: OpenCamera, stats: RunStats) -> dict[str, Any]:
    """The run's record: one JSON object, what the decisions are traced to included."""
    spec, det = camera.spec, camera.detector
    return {
        **({"camera": spec.name} if spec.name != "camera" else {}),
        "stopped_by": stats.stopped_by,
        "frames": stats.frames,
        "anomalies": stats.anomalies,
        **({"smoothing": asdict(spec.smoothing), "events": stats.events} if spec.deciding else {}),
        **({"parts": stats.parts, "rejected_parts": stats.rejected_parts} if stats.parts else {}),
        "unjudged": stats.unjudged,
        "bundle_id": det.bundle_id,
        "threshold": None if det.bundle_id is None else det.threshold,
        "fps": round(stats.fps, 2),
        "latency_ms": stats.latency_ms,
        "source": stats.source,
        **({"sinks": stats.sinks} if stats.sinks else {}),
        **({"server": asdict(det.stats)} if spec.server is not None else {}),
    }


def failure(camera: OpenCamera, stats: RunStats) -> str | None:
    """Why this camera's run must end non-zero, or None."""
    lost = stats.source.get("lost_frames", 0)
    if lost and not camera.source.live:
        return f"{lost} frames of {camera.source.name} could not be decoded (damaged file); the others were processed"
    return stats.failure(camera.spec.max_unjudged)


# ------------------------------------------------------------------------------------------- station file
CAMERA_KEYS = {f.name for f in dataclasses.fields(CameraSpec)}
STATION_KEYS = {"cameras", "status_every"}


def _typed(where: str, value: Any, kinds: tuple[type, ...], what: str) -> Any:
    """``value`` if it is one of ``kinds`` (YAML's true is not a number here), else one error naming the key."""
    if value is None:
        return None
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ConfigError(f"{where}: must be {what}, got {value!r}")
    return value


def load_station(path: str | Path) -> tuple[list[CameraSpec], float]:
    """The cameras of a station file and its status interval; any mistake is one ConfigError naming the key
    (``station.yaml: cameras[1].smoothing: ...``)."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise ConfigError(f"station file {p}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"station file {p} is not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    name = p.name
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: a station file is a mapping with 'cameras' (a list)")
    unknown = sorted(set(data) - STATION_KEYS)
    if unknown:
        raise ConfigError(f"{name}: unknown key {unknown[0]!r} (known: {', '.join(sorted(STATION_KEYS))})")
    cameras = data.get("cameras")
    if not isinstance(cameras, list) or not cameras:
        raise ConfigError(f"{name}: cameras must be a list of at least one camera")
    status_every = _typed(f"{name}: status_every", data.get("status_every", 10.0), (int, float), "seconds")
    if status_every is None:
        raise ConfigError(f"{name}: status_every must be seconds, got nothing")
    if not 0 < status_every < 86400:
        raise ConfigError(f"{name}: status_every must be seconds between 0 and a day, got {status_every}")
    specs, names = [], set()
    for i, entry in enumerate(cameras):
        at = f"{name}: cameras[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{at}: each camera is a mapping (bundle, camera or source, sinks ...)")
        unknown = sorted(set(entry) - CAMERA_KEYS)
        if unknown:
            raise ConfigError(f"{at}: unknown key {unknown[0]!r} (known: {', '.join(sorted(CAMERA_KEYS))})")
        spec = _camera(at, entry, i)
        if spec.name in names:
            raise ConfigError(f"{at}.name: {spec.name!r} names two cameras")
        names.add(spec.name)
        specs.append(spec)
    return specs, float(status_every)


def _camera(at: str, entry: dict[str, Any], index: int) -> CameraSpec:
    text = (str,)
    kinds: dict[str, tuple[tuple[type, ...], str]] = {
        "name": (text, "a name"),
        "bundle": (text, "a bundle path"),
        "server": (text, "a server URL"),
        "model": (text, "a served model's name"),
        "camera": ((int,), "a camera index"),
        "source": (text, "a file, URL, pipeline, folder or glob"),
        "backend": (text, "a backend name"),
        "int8": ((bool,), "true or false"),
        "product": (text, "a product name"),
        "stride": ((int,), "a whole number >= 1"),
        "roi": (text, "x,y,width,height"),
        "expect_bundle": (text, "a bundle id or path"),
        "reconnect_attempts": ((int,), "a whole number"),
        "loop": ((bool,), "true or false"),
        "max_frames": ((int,), "a whole number"),
        "max_unjudged": ((int, float), "a share between 0 and 1"),
        "pipeline": ((bool,), "true or false"),
    }
    values: dict[str, Any] = {}
    for key, (kind, what) in kinds.items():
        if key in entry:
            values[key] = _typed(f"{at}.{key}", entry[key], kind, what)
    values.setdefault("name", f"camera{index}")
    if values.get("stride") is not None and values["stride"] < 1:
        raise ConfigError(f"{at}.stride: must be a whole number >= 1, got {values['stride']}")
    if values.get("max_unjudged") is not None and not 0 <= values["max_unjudged"] <= 1:
        raise ConfigError(f"{at}.max_unjudged: must be a share between 0 and 1, got {values['max_unjudged']}")
    try:
        values["smoothing"] = Smoothing.parse(entry.get("smoothing"))
    except ConfigError as exc:
        raise ConfigError(f"{at}.smoothing: {str(exc).removeprefix('smoothing: ')}") from None
    sinks = entry.get("sinks") or {}
    if not isinstance(sinks, dict):
        raise ConfigError(f"{at}.sinks: a mapping of sink name to its argument (jsonl: FILE, mqtt: URL, ...)")
    for sink, argument in sinks.items():
        if sink not in SINKS:
            raise ConfigError(f"{at}.sinks.{sink}: unknown sink (known: {', '.join(SINKS.names())})")
        if not isinstance(argument, (str, int)) or isinstance(argument, bool):
            raise ConfigError(f"{at}.sinks.{sink}: its argument is a file, folder, URL or port, got {argument!r}")
    values["sinks"] = [(sink, str(argument)) for sink, argument in sinks.items()]
    spec = CameraSpec(**{k: v for k, v in values.items() if v is not None})
    try:
        spec.check()
    except ConfigError as exc:
        raise ConfigError(f"{at}: {exc}") from None
    return spec


def run_station(
    specs: list[CameraSpec],
    status_every_s: float,
    echo: Callable[[str], None],
    web_token: str | None = None,
    connect: Connect | None = None,
) -> list[tuple[OpenCamera, RunStats | None, str | None]]:
    """Every camera on a thread of its own until SIGTERM, Ctrl-C or the end of every source. Returns, per camera,
    its run's stats and why it failed (None: it did its job)."""
    stop = threading.Event()
    stopped_by: list[str] = []
    opened: list[OpenCamera] = []
    try:
        for spec in specs:
            options = SinkOptions(
                append=True, token=web_token, echo=_prefixed(echo, spec.name), title=spec.name, stop=stop
            )
            try:
                opened.append(open_camera(spec, options, _prefixed(echo, spec.name), connect))
            except EdgeadError as exc:
                raise type(exc)(f"camera {spec.name}: {exc}") from None
    except BaseException:
        for camera in opened:
            for sink in camera.sinks:
                sink.close()
            camera.detector.close()
            camera.source.close()
        raise
    results: dict[int, tuple[RunStats | None, str | None]] = {}

    def work(i: int, camera: OpenCamera) -> None:
        try:
            say = _prefixed(echo, camera.spec.name)
            det = camera.detector
            say(f"running {det.method} on {camera.source.name} with {det.backend_name}")
            stats = camera.run(status_every_s, say)
            say(stats.status_line())
            results[i] = (stats, failure(camera, stats))
        except EdgeadError as exc:
            results[i] = (None, str(exc))
        except Exception as exc:  # one camera's fault does not take the others down
            results[i] = (None, f"{type(exc).__name__}: {exc}")

    def on_signal(signum, frame) -> None:
        stopped_by.append("SIGTERM" if signum == signal.SIGTERM else "Ctrl-C")
        stop.set()
        for camera in opened:
            camera.source.interrupt()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    threads = [
        threading.Thread(target=work, args=(i, c), name=f"edgead-{c.spec.name}", daemon=True)
        for i, c in enumerate(opened)
    ]
    try:
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(0.1)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    out = []
    for i, camera in enumerate(opened):
        stats, why = results.get(i, (None, "the camera's thread ended without a result"))
        if stats is not None and stopped_by and stats.stopped_by in ("stop request (q)", "end of source"):
            stats.stopped_by = stopped_by[0]  # what the stop request was
        out.append((camera, stats, why))
    return out


def _prefixed(echo: Callable[[str], None], name: str) -> Callable[[str], None]:
    return lambda message: echo(f"[{name}] {message}")


def sink_requests(named: list[tuple[str, str | None]], specs: tuple[str, ...]) -> list[tuple[str, str]]:
    """``edgead run``'s named options (short for --sink NAME=ARG) and its --sink NAME=ARG, in order."""
    requests = [(name, arg) for name, arg in named if arg is not None]
    return requests + [(spec.partition("=")[0], spec.partition("=")[2]) for spec in specs]
