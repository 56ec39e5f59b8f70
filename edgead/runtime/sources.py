"""Frame sources: camera index, video file, RTSP/HTTP URL, GStreamer pipeline, image folder/glob.

Files (videos, images) are read in order, never dropping a frame. Live sources (cameras, URLs,
GStreamer) are read on their own thread that keeps only the newest frame, so a slow model never
builds up lag; a live source that drops is reopened with exponential back-off and the gap is
reported. A frame that cannot be decoded is skipped and counted, never fatal.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..core.errors import DataError, SourceError
from ..core.registry import Registry
from ..data.io import IMAGE_SUFFIXES, list_images, read_image

log = logging.getLogger(__name__)
GLOB_CHARS = set("*?[")


@dataclass
class Frame:
    index: int
    """Position in the source (files) or capture counter (live)."""
    image: np.ndarray
    """uint8 RGB HxWx3."""
    timestamp: float
    source: str


@dataclass
class SourceStats:
    frames_read: int = 0
    bad_frames: int = 0
    lost_frames: int = 0
    """Frames of a file source that could not be decoded or were skipped by damage."""
    reconnects: int = 0
    dropped_live_frames: int = 0
    gaps_s: list[float] = field(default_factory=list)
    refused_frames: int = 0
    """Frames read but not judged: the model (or the server) refused them (InputError)."""
    first_error: str | None = None
    """Why the first frame that was not judged was not."""

    def bad_frame(self, reason: str) -> None:
        """A frame the source could not turn into an image."""
        self.bad_frames += 1
        self.first_error = self.first_error or reason

    def refused_frame(self, reason: str) -> None:
        """A frame read but refused by the model or the server."""
        self.refused_frames += 1
        self.first_error = self.first_error or reason

    @property
    def unjudged(self) -> int:
        """Frames of the source that got no verdict (a damaged video's frames count once, lost or bad)."""
        return self.refused_frames + max(self.bad_frames, self.lost_frames)


class FrameSource(ABC):
    """Iterate ``Frame``s; ``close()`` releases the device. Usable as a context manager."""

    live = False

    def __init__(self, name: str):
        self.name = name
        self.stats = SourceStats()

    @abstractmethod
    def frames(self) -> Iterator[Frame]: ...

    def interrupt(self) -> None:  # noqa: B027 - optional for subclasses
        """Ask ``frames()`` to end soon. Safe from a signal handler: it only sets a flag."""

    def close(self) -> None:  # noqa: B027 - optional for subclasses
        """Release the capture device or file."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _checked_rgb(frame: Any) -> np.ndarray | None:
    """A decoded OpenCV BGR frame as RGB, or None when it is empty or malformed."""
    if not isinstance(frame, np.ndarray) or frame.size == 0 or frame.dtype != np.uint8:
        return None
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        return None
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB if frame.shape[2] == 3 else cv2.COLOR_BGRA2RGB)


class ImageFilesSource(FrameSource):
    """Image files in order; with ``loop`` the list starts again at its end (frame indices keep counting up)."""

    def __init__(self, files: list[Path], name: str, loop: bool = False):
        super().__init__(name)
        if not files:
            raise SourceError(f"no images found for {name}")
        self.files, self.loop = files, loop
        self._stop = False

    def frames(self) -> Iterator[Frame]:
        offset = 0
        while True:
            for i, f in enumerate(self.files):
                if self._stop:
                    return
                try:
                    rgb = read_image(f)
                except DataError as exc:
                    self.stats.bad_frame(str(exc))
                    log.warning("skipping frame %d: %s", offset + i, exc)
                    continue
                self.stats.frames_read += 1
                yield Frame(offset + i, rgb, time.time(), str(f))
            if not self.loop or self.stats.frames_read == 0:  # nothing readable: looping would spin
                return
            offset += len(self.files)

    def interrupt(self) -> None:
        self._stop = True


class VideoFileSource(FrameSource):
    """A video file, every frame in order; damaged sections are skipped and the frames lost counted.

    Two kinds of damage: the decoder fails on a frame (the source then seeks past it and goes on
    until the file's frame count is reached), or the demuxer resynchronises silently after a
    damaged section (the jump in the decoder's frame position is counted as lost frames).
    With ``loop=True`` the file restarts at its end (demos, soak tests); frame indices keep
    counting up.
    """

    MAX_FAILURES_UNKNOWN_LENGTH = 5

    def __init__(self, path: Path, open_capture: Callable[[], Any] | None = None, loop: bool = False):
        super().__init__(str(path))
        self.loop = loop
        self._open = open_capture or (lambda: cv2.VideoCapture(str(path)))
        self.cap = self._open()
        if not self.cap.isOpened():
            raise SourceError(f"cannot open video file {path} (unsupported codec or not a video)")
        self.total = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)

    def _index(self, fallback: int) -> int:
        """Index of the frame just read, from its timestamp (the decoder's frame counter does not
        see frames the demuxer skipped)."""
        fps = self.cap.get(cv2.CAP_PROP_FPS) or 0.0
        msec = self.cap.get(cv2.CAP_PROP_POS_MSEC)
        if fps <= 0 or msec is None or msec < 0:
            return fallback
        return int(round(msec * fps / 1000.0))

    def frames(self) -> Iterator[Frame]:
        expected, offset, failures = 0, 0, 0  # expected: index (in this pass) of the next frame
        while True:
            ok, frame = self.cap.read()
            if ok:
                at = self._index(expected)
                if failures and at < expected:  # a seek landed before the damage: already delivered
                    continue
                failures = 0
                if at > expected:  # a damaged section the demuxer skipped, or a seek past it
                    self.stats.lost_frames += at - expected
                    expected = at
                rgb = _checked_rgb(frame)
                if rgb is None:
                    self.stats.bad_frames += 1
                    self.stats.lost_frames += 1
                else:
                    self.stats.frames_read += 1
                    yield Frame(offset + expected, rgb, time.time(), self.name)
                expected += 1
                continue
            failures += 1
            if self.total and expected + failures <= self.total:  # undecodable frame(s): seek past them
                self.stats.bad_frames += 1
                self.cap.set(cv2.CAP_PROP_POS_FRAMES, expected + failures)
                continue
            if not self.total and failures <= self.MAX_FAILURES_UNKNOWN_LENGTH:
                self.stats.bad_frames += 1
                continue
            if self.total > expected:
                self.stats.lost_frames += self.total - expected
            if self.loop and expected > 0:
                self.cap.release()
                self.cap = self._open()
                offset, expected, failures = offset + max(expected, self.total), 0, 0
                continue
            if self.stats.lost_frames:
                log.warning(
                    "%s: %d of %d frames could not be decoded (damaged file)",
                    self.name,
                    self.stats.lost_frames,
                    self.stats.lost_frames + self.stats.frames_read,
                )
            return

    def close(self) -> None:
        self.cap.release()


class LiveSource(FrameSource):
    """Camera, URL or GStreamer pipeline read on a thread that keeps only the newest frame."""

    live = True

    def __init__(
        self,
        name: str,
        open_capture: Callable[[], Any],
        max_backoff_s: float = 10.0,
        reconnect_attempts: int | None = None,
        first_frame_timeout_s: float = 10.0,
    ):
        super().__init__(name)
        self._open = open_capture
        self.max_backoff_s = max_backoff_s
        self.reconnect_attempts = reconnect_attempts
        self.first_frame_timeout_s = first_frame_timeout_s
        self.cap = open_capture()
        if self.cap is None or not self.cap.isOpened():
            raise SourceError(f"cannot open {name} (not connected, wrong index/URL, or in use)")
        self._lock = threading.Condition()
        self._latest: Frame | None = None
        self._stop = threading.Event()
        self._finished = False
        self._error: str | None = None
        self._thread = threading.Thread(target=self._reader, name=f"edgead-capture-{name}", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        index, attempts = 0, 0
        while not self._stop.is_set():
            ok, frame = self.cap.read()
            if ok:
                rgb = _checked_rgb(frame)
                if rgb is None:
                    with self._lock:
                        self.stats.bad_frames += 1
                    continue
                with self._lock:
                    if self._latest is not None:
                        self.stats.dropped_live_frames += 1
                    self._latest = Frame(index, rgb, time.time(), self.name)
                    self.stats.frames_read += 1
                    self._lock.notify_all()
                index += 1
                attempts = 0
                continue
            # the stream dropped: reopen with exponential back-off
            gap_start = time.time()
            self.cap.release()
            backoff = 0.5
            while not self._stop.is_set():
                if self.reconnect_attempts is not None and attempts >= self.reconnect_attempts:
                    with self._lock:
                        self._error = (
                            f"{self.name} stopped delivering frames; gave up after {attempts} reconnect attempts"
                        )
                        self._finished = True
                        self._lock.notify_all()
                    return
                attempts += 1
                log.warning("%s dropped; reconnecting in %.1f s (attempt %d)", self.name, backoff, attempts)
                if self._stop.wait(backoff):
                    break
                self.cap = self._open()
                if self.cap is not None and self.cap.isOpened():
                    gap = time.time() - gap_start
                    with self._lock:
                        self.stats.reconnects += 1
                        self.stats.gaps_s.append(round(gap, 3))
                    log.warning("%s reconnected after a %.1f s gap", self.name, gap)
                    break
                backoff = min(backoff * 2, self.max_backoff_s)
        with self._lock:
            self._finished = True
            self._lock.notify_all()

    def frames(self) -> Iterator[Frame]:
        first = True
        while True:
            with self._lock:
                deadline = time.time() + self.first_frame_timeout_s if first else None
                while self._latest is None and not self._finished and not self._stop.is_set():
                    remaining = None if deadline is None else deadline - time.time()
                    if remaining is not None and remaining <= 0:
                        raise SourceError(
                            f"{self.name} opened but delivered no frame in {self.first_frame_timeout_s:.0f} s"
                        )
                    self._lock.wait(timeout=0.5 if remaining is None else min(0.5, remaining))
                if self._latest is None:
                    if self._error:
                        raise SourceError(self._error)
                    return
                frame, self._latest = self._latest, None
            first = False
            yield frame

    def interrupt(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.cap is not None:
            self.cap.release()


def _class_end(part: str, i: int) -> int:
    """Index of the ']' closing the character class that opens at ``part[i]`` ('[!]x]' and '[]x]' hold a ']'),
    or -1: a lone '[' is itself."""
    start = i + 1 + (part[i + 1 : i + 2] == "!")
    start += part[start : start + 1] == "]"
    return part.find("]", start)


def _part_regex(part: str) -> str:
    """One path component of a glob pattern as a regex that never crosses a '/' (hidden names only when the
    part starts with '.', as glob does)."""
    out, i = [] if part.startswith(".") else [r"(?!\.)"], 0
    while i < len(part):
        c = part[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and _class_end(part, i) > 0:
            j = _class_end(part, i)
            body = part[i + 1 : j]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _glob(spec: str) -> list[Path]:
    """Files matching a glob pattern; ``**`` follows symbolic links to folders but enters each real folder once,
    so a link loop neither repeats files nor hangs (glob.glob would walk it to the kernel's limit)."""
    if "**" not in spec:
        return sorted(Path(m) for m in glob.glob(spec))
    parts = Path(spec).parts
    first = next(k for k, part in enumerate(parts) if GLOB_CHARS & set(part))
    root = Path(*parts[:first]) if first else Path(".")
    regex = "".join(r"(?:(?!\.)[^/]+/)*" if part == "**" else _part_regex(part) + "/" for part in parts[first:])
    pattern = re.compile(regex + r"(?!\.)[^/]*" if parts[-1] == "**" else regex[:-1])
    found, visited = [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:
            dirs[:] = []
            continue
        visited.add(real)
        dirs.sort()
        here = Path(folder).relative_to(root)
        found += [Path(folder) / f for f in files if pattern.fullmatch((here / f).as_posix())]
    return sorted(found)


def expand_images(specs: tuple[str, ...] | list[str]) -> list[Path]:
    """Image paths from files, folders and glob patterns, in the order given; a file named twice (by a
    symbolic link, or by two patterns) is listed once."""
    files: list[Path] = []
    for spec in specs:
        p = Path(spec)
        if GLOB_CHARS & set(spec):
            matches = [m for m in _glob(spec) if m.suffix.lower() in IMAGE_SUFFIXES and m.is_file()]
            if not matches:
                raise SourceError(f"no images match {spec!r}")
            files.extend(matches)
        elif p.is_dir():
            found = list_images(p)
            if not found:
                raise SourceError(f"no images in folder {p}")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise SourceError(f"no such file or folder: {p}")
    return unique_files(files)


def unique_files(files: list[Path]) -> list[Path]:
    """``files`` with each file once, in order (by its real path: a symbolic link is the file it names)."""
    unique: dict[str, Path] = {}
    for f in files:
        unique.setdefault(os.path.realpath(f), f)
    if len(unique) < len(files):
        log.warning(
            "%d of the %d images given are the same files again (symbolic links or overlapping patterns); "
            "each is read once",
            len(files) - len(unique),
            len(files),
        )
    return list(unique.values())


@dataclass(frozen=True)
class SourceOptions:
    reconnect_attempts: int | None = None
    """Give up a dropped live source after this many tries (None: never)."""
    loop: bool = False
    """Restart a video file at its end."""
    open_capture: Callable[[], Any] | None = None
    """Replaces cv2.VideoCapture (tests, custom capture back-ends)."""


@dataclass(frozen=True)
class SourceKind:
    """One kind of frame source: which specs it takes and how to open one."""

    name: str
    priority: int
    """Kinds are asked in this order; the first whose ``accepts`` is true opens the spec."""
    accepts: Callable[[str], bool]
    open: Callable[[str, SourceOptions], FrameSource]
    describes: str
    """How a user writes it (for the message when no kind accepts a spec)."""


STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp", "udp", "tcp")


def _live(name: str, spec: str, backend: int, options: SourceOptions) -> LiveSource:
    return LiveSource(
        name,
        options.open_capture or (lambda: cv2.VideoCapture(spec, backend)),
        reconnect_attempts=options.reconnect_attempts,
    )


CAMERA = SourceKind(
    "camera",
    10,
    str.isdigit,
    lambda s, o: LiveSource(
        f"camera {s}", o.open_capture or (lambda: cv2.VideoCapture(int(s))), reconnect_attempts=o.reconnect_attempts
    ),
    "a camera index",
)
GSTREAMER = SourceKind(
    "gstreamer",
    20,
    lambda s: "!" in s,
    lambda s, o: _live("GStreamer pipeline", s, cv2.CAP_GSTREAMER, o),
    "a GStreamer pipeline (with '!')",
)
STREAM = SourceKind(
    "stream",
    30,
    lambda s: s.split("://", 1)[0].lower() in STREAM_SCHEMES,
    lambda s, o: _live(_redact(s), s, cv2.CAP_FFMPEG, o),
    "a URL (rtsp://, http://, ...)",
)
IMAGES = SourceKind(
    "images",
    40,
    lambda s: (
        bool(GLOB_CHARS & set(s))
        or Path(s).is_dir()
        or (Path(s).is_file() and Path(s).suffix.lower() in IMAGE_SUFFIXES)
    ),
    lambda s, o: ImageFilesSource(expand_images([s]), s, loop=o.loop),
    "an image, folder or glob",
)
VIDEO = SourceKind(
    "video",
    50,
    lambda s: Path(s).is_file(),
    lambda s, o: VideoFileSource(Path(s), o.open_capture, loop=o.loop),
    "an existing video file",
)

SOURCES: Registry[SourceKind] = Registry(
    "source",
    {
        "camera": "edgead.runtime.sources:CAMERA",
        "gstreamer": "edgead.runtime.sources:GSTREAMER",
        "stream": "edgead.runtime.sources:STREAM",
        "images": "edgead.runtime.sources:IMAGES",
        "video": "edgead.runtime.sources:VIDEO",
    },
    SourceKind,
)
"""A new source (a PLC trigger, a GigE camera SDK) is a SourceKind plus one entry, or the ``edgead.sources``
entry-point group."""


def open_source(
    spec: str | int,
    reconnect_attempts: int | None = None,
    open_capture: Callable[[], Any] | None = None,
    loop: bool = False,
) -> FrameSource:
    """Open ``spec`` with the first source kind (by priority) that accepts it."""
    s = str(spec)
    options = SourceOptions(reconnect_attempts, loop, open_capture)
    kinds = sorted(SOURCES.all(), key=lambda k: (k.priority, k.name))
    for kind in kinds:
        if kind.accepts(s):
            source = kind.open(s, options)
            if loop and source.live:
                source.close()
                raise SourceError(
                    f"--loop starts a file source (video, images) again at its end; {source.name} is "
                    "live and runs until it is stopped"
                )
            return source
    raise SourceError(f"source {s!r} is not {', '.join(k.describes for k in kinds[:-1])} or {kinds[-1].describes}")


def _redact(url: str) -> str:
    """Hide credentials of rtsp://user:pass@host URLs in logs."""
    scheme, _, rest = url.partition("://")
    if "@" in rest.split("/", 1)[0]:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}://{rest}"
