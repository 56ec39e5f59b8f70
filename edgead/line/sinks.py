"""Where results go: window, annotated video, JSON lines, saved anomalous frames (and the line view,
line/web.py). ``SINKS`` is their table: ``edgead run --sink NAME=ARG`` opens any entry, and the
named options (--jsonl, --save, --save-anomalies, --show, --web) are short for the built-in ones.

Every sink writes as it goes and ``close()`` finalises its file, so an interrupted run still
leaves a valid video and a JSON-lines file with one complete line per processed frame. Files and
folders are created at the first result, so a run that fails at start leaves nothing behind
that would block the corrected rerun.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..core.errors import ConfigError
from ..core.outputs import check_new_dir, check_new_file
from ..core.registry import Registry
from ..data.io import IMAGE_SUFFIXES, write_image
from ..runtime.temporal import AnomalyEvent

if TYPE_CHECKING:
    from ..runtime.result import Result
    from ..runtime.temporal import LineOutput

FOURCC = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "FFV1", ".mov": "mp4v"}


class Sink(ABC):
    @abstractmethod
    def write(self, result: Result) -> None: ...

    def write_event(self, event: LineOutput) -> None:  # noqa: B027 - optional for subclasses
        """An anomaly event or a part decision, when the run decides over time (runtime/temporal.py)."""

    def on_status(self, stats) -> None:  # noqa: B027 - optional for subclasses
        """The run's counts (``RunStats``), refreshed with every status line and at the end."""

    def status(self) -> dict | None:
        """What the status line and the run's summary say of this sink (a connection's state); None: nothing."""
        return None

    def close(self) -> None:  # noqa: B027 - optional for subclasses
        """Flush and close files or windows."""


class JsonlSink(Sink):
    """One JSON object per processed frame, written line by line (unbuffered, whole lines only).
    ``events=True``: one per anomaly event and part decision instead (``"type": "event" | "part"``)."""

    def __init__(self, path: str | Path, overwrite: bool = False, events: bool = False, append: bool = False):
        self.path = check_new_file(path, overwrite or append, "JSON-lines file")
        self.mode = "a" if overwrite or append else "x"  # never truncate a file that appeared after the check
        self.append = append
        self.file = None
        self.events = events

    def write(self, result: Result) -> None:
        if self.events:
            return
        self._open()
        d = result.to_dict()
        ts = result.timestamp
        d["time"] = _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat() if ts else None
        self._write_line(d)

    def write_event(self, event: LineOutput) -> None:
        if not self.events:
            return
        self._open()
        d = event.to_dict()
        ts = event.best.timestamp if event.best is not None else None
        d["time"] = _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat() if ts else None
        self._write_line(d)

    def _open(self) -> None:
        if self.file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.file = self.path.open(self.mode + "b", buffering=0)  # each line reaches the disk whole
            except FileExistsError:
                raise ConfigError(
                    f"JSON-lines file {self.path} appeared after the check; it was left as it is "
                    "(pass --overwrite to replace it)"
                ) from None
            try:  # one writer per file: two runs told to --overwrite the same file would interleave lines
                fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.file.close()
                self.file = None
                raise ConfigError(f"JSON-lines file {self.path} is being written by another edgead run") from None
            if not self.append:
                self.file.truncate(0)  # --overwrite: replaced, once this run is its only writer

    def _write_line(self, d: dict) -> None:
        line = (json.dumps(d) + "\n").encode()
        at = self.file.seek(0, os.SEEK_END)  # where this line starts (append mode writes at the end)
        try:
            self.file.write(line)
        except OSError:  # a full disk: no half line is left for a reader to choke on
            with contextlib.suppress(OSError):
                os.ftruncate(self.file.fileno(), at)
            raise

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class VideoSink(Sink):
    """Annotated video; the codec follows the file extension (.mp4, .avi, .mkv)."""

    def __init__(self, path: str | Path, fps: float = 10.0, overwrite: bool = False):
        self.path = Path(path)
        if self.path.suffix.lower() not in FOURCC:
            raise ConfigError(f"--save {self.path}: use one of {', '.join(FOURCC)} as the extension")
        check_new_file(self.path, overwrite, "video")
        self.fps = fps
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, result: Result) -> None:
        frame = result.overlay(color="bgr")
        if self.writer is None:
            h, w = frame.shape[:2]
            self.size = (w, h)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter_fourcc(*FOURCC[self.path.suffix.lower()])
            self.writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, self.size)
            if not self.writer.isOpened():
                raise ConfigError(
                    f"OpenCV cannot write video {self.path} with codec {FOURCC[self.path.suffix.lower()]}"
                )
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size)
        self.writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


class AnomalySaver(Sink):
    """For each anomalous frame: the frame, its overlay and its mask as PNG files. When the run decides over time,
    once per anomaly event instead: its best frame (``event00003_00000412_...``)."""

    def __init__(self, folder: str | Path, overwrite: bool = False):
        self.folder = check_new_dir(folder, overwrite, "anomaly folder")
        self.saved = 0

    def write(self, result: Result) -> None:
        if result.line is None and result.is_anomalous:
            self._save(result, "")

    def write_event(self, event: LineOutput) -> None:
        if isinstance(event, AnomalyEvent):
            self._save(event.best, f"event{event.index:05d}_")

    def _save(self, result: Result, prefix: str) -> None:
        if result.image is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = prefix + f"{result.frame_index if result.frame_index is not None else self.saved:08d}"
        if result.source and Path(result.source).suffix.lower() in IMAGE_SUFFIXES:  # which file it was
            stem += f"_{Path(result.source).stem}"
        write_image(self.folder / f"{stem}_frame.png", result.image)
        write_image(self.folder / f"{stem}_overlay.png", result.overlay(color="rgb"))
        write_image(self.folder / f"{stem}_mask.png", result.mask.astype(np.uint8) * 255)
        self.saved += 1


class WindowSink(Sink):
    """An OpenCV window with overlay, verdict and FPS; pressing q asks the run to stop."""

    def __init__(self, stop: threading.Event, title: str = "edgead"):
        self.stop, self.title = stop, title
        self.fps = 0.0
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise ConfigError(
                f"--show needs a display and an OpenCV build with GUI support ({exc.err or exc}): "
                "pip uninstall opencv-python-headless && pip install opencv-python; or watch the line in a "
                "browser with --web 8080 (any install), or write --save / --jsonl"
            ) from None

    def write(self, result: Result) -> None:
        frame = result.overlay(color="bgr")
        cv2.putText(
            frame,
            f"{self.fps:.1f} fps",
            (4, frame.shape[0] - 8),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
        cv2.imshow(self.title, frame)
        if cv2.waitKey(1) & 0xFF == ord("q"):
            self.stop.set()

    def close(self) -> None:
        with contextlib.suppress(cv2.error):
            cv2.destroyWindow(self.title)


@dataclass(frozen=True)
class SinkOptions:
    """What a sink may need besides its own argument (the run's options)."""

    overwrite: bool = False
    append: bool = False
    """A station restarted by its service manager: JSON lines are appended to, anomalies of each start saved in
    a folder of their own (nothing of an earlier run is replaced)."""
    fps: float = 10.0
    """Frame rate of a written video."""
    token: str | None = None
    """Access token of the line view."""
    web_public: bool = False
    """The line view may be served beyond loopback without a token (``--web-public``)."""
    title: str = "edgead"
    stop: threading.Event = field(default_factory=threading.Event)
    """Set by a sink that asks the run to end (the window's q key)."""
    echo: Callable[[str], None] = field(default=lambda message: None)
    """Where a sink says something to the operator (the CLI: stderr)."""


SinkFactory = Callable[[str, SinkOptions], Sink]
"""``factory(argument, options) -> Sink``: checks its argument and outputs at once, writes from the first result."""


def jsonl_sink(path: str, options: SinkOptions) -> Sink:
    return JsonlSink(path, options.overwrite, append=options.append)


def events_sink(path: str, options: SinkOptions) -> Sink:
    return JsonlSink(path, options.overwrite, events=True, append=options.append)


def video_sink(path: str, options: SinkOptions) -> Sink:
    return VideoSink(path, options.fps, options.overwrite)


def anomaly_sink(folder: str, options: SinkOptions) -> Sink:
    if options.append:  # this start's own folder: frame numbers start at 0 again after a restart
        folder = str(Path(folder) / _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ"))
    return AnomalySaver(folder, options.overwrite)


def window_sink(title: str, options: SinkOptions) -> Sink:
    return WindowSink(options.stop, title or options.title)


SINKS: Registry[SinkFactory] = Registry(
    "sink",
    {
        "jsonl": "edgead.line.sinks:jsonl_sink",
        "events": "edgead.line.sinks:events_sink",
        "video": "edgead.line.sinks:video_sink",
        "anomalies": "edgead.line.sinks:anomaly_sink",
        "window": "edgead.line.sinks:window_sink",
        "web": "edgead.line.web:web_sink",
        "mqtt": "edgead.line.mqtt:mqtt_sink",
        "metrics": "edgead.line.metrics:metrics_sink",
        "opcua": "edgead.line.opcua:opcua_sink",
    },
)
"""A new sink (a PLC output, an MQTT topic) is a factory plus one entry, or the ``edgead.sinks`` entry-point group."""


def open_sinks(requests: list[tuple[str, str]], options: SinkOptions) -> list[Sink]:
    """Open ``(name, argument)`` pairs in order; if one fails, the ones opened are closed again."""
    sinks: list[Sink] = []
    try:
        for name, argument in requests:
            sinks.append(SINKS.get(name)(argument, options))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks
