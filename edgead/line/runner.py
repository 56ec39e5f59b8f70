"""``edgead run``: the loop a line engineer leaves running next to a camera.

Reads frames, runs the detector, feeds every sink, prints a status line every few seconds
(FPS, latency percentiles, anomalies, bad frames, reconnects) and ends cleanly on q, Ctrl-C,
SIGTERM or the end of a file source, closing every sink so the outputs stay valid.
"""

from __future__ import annotations

import collections
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..runtime.sources import FrameSource, SourceStats
from ..runtime.stream import stream_results
from ..runtime.temporal import PartDecision, Smoothing, TemporalDecider
from .sinks import Sink, WindowSink

if TYPE_CHECKING:
    from ..runtime.detector import Detector


NOTHING_JUDGED_AFTER = 100
"""A run stops when its first this-many frames all got no verdict (refused by the model or the server): it would
judge nothing however long it ran."""
USER_STOPS = ("SIGTERM", "Ctrl-C", "stop request (q)")
START_CHECK_FRAMES = 30
"""The first this-many frames are checked against the calibration once (``start_check``)."""
START_CHECK_FLAGGED = 0.8


def start_check(normalised: list[float], source: str) -> str | None:
    """A warning when most of a run's first frames score above the threshold: frames from this source likely
    differ from the calibration images (video compression, light, camera, another product) rather than every
    part being defective. None when they look like the calibration."""
    flagged = sum(n > 0.5 for n in normalised) / max(len(normalised), 1)
    if flagged < START_CHECK_FLAGGED:
        return None
    return (
        f"warning: {flagged:.0%} of the first {len(normalised)} frames of {source} score above the threshold "
        f"(median normalised score {float(np.median(normalised)):.2f}): frames from this source may differ from "
        "the images the bundle was calibrated on (video compression, light, camera). If these parts are good, "
        "calibrate on this source's own frames: edgead calibrate BUNDLE --good SOURCE --max-frames 200"
    )


@dataclass
class RunStats:
    frames: int = 0
    """Frames judged (a verdict each)."""
    anomalies: int = 0
    """Frames whose own verdict was anomalous."""
    events: int = 0
    """Anomaly events (stretches of anomalous line state) when the run is smoothed over time."""
    parts: int = 0
    rejected_parts: int = 0
    unjudged: int = 0
    """Frames of the source that got no verdict (refused, unreadable or lost)."""
    elapsed_s: float = 0.0
    fps: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    sinks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """What sinks with a connection say of it (``Sink.status``), by sink name."""
    stopped_by: str = "end of source"

    def status_line(self) -> str:
        lat = self.latency_ms
        src = self.source
        return (
            f"{self.fps:6.1f} fps | latency p50 {lat.get('p50', 0):.1f} p90 {lat.get('p90', 0):.1f} "
            f"p99 {lat.get('p99', 0):.1f} ms | frames {self.frames} | anomalies {self.anomalies} | "
            + (f"events {self.events} | " if self.events else "")
            + (f"parts {self.parts} | rejected {self.rejected_parts} | " if self.parts else "")
            + f"bad frames {src.get('bad_frames', 0)} | lost frames {src.get('lost_frames', 0)} | "
            f"reconnects {src.get('reconnects', 0)}"
            + (f" | refused {src['refused_frames']}" if src.get("refused_frames") else "")
            # a live source keeps only its newest frame: those replaced before the detector was free
            + (
                f" | skipped (slower than the camera) {src['dropped_live_frames']}"
                if src.get("dropped_live_frames")
                else ""
            )
            + "".join(
                f" | {name} {'connected' if s.get('connected') else 'DISCONNECTED'}, queued {s.get('queued', 0)}, "
                f"dropped {s.get('dropped', 0)}"
                for name, s in self.sinks.items()
            )
        )

    def failure(self, max_unjudged: float) -> str | None:
        """Why the run must end non-zero: it judged no frame, or more than ``max_unjudged`` of its frames got no
        verdict; None when it did its job. A run stopped by its operator before any frame is not a failure."""
        why = self.source.get("first_error")
        reason = f" (first: {why})" if why else ""
        total = self.frames + self.unjudged
        if self.frames == 0:
            if self.stopped_by in USER_STOPS and self.unjudged == 0:
                return None
            if self.unjudged == 0:
                return "no frame was judged: the source gave no frame"
            return f"no frame was judged: all {self.unjudged} frames read got no verdict{reason}"
        if self.unjudged > max_unjudged * total:
            return (
                f"{self.unjudged} of {total} frames ({self.unjudged / total:.1%}) got no verdict, more than the "
                f"{max_unjudged:.0%} allowed (--max-unjudged){reason}"
            )
        return None


class _SinkThread:
    """The sinks on a thread of their own (``--pipeline``): the next frame's inference overlaps the writing
    and encoding of this one. A short queue keeps memory flat and slows the stream when the sinks fall
    behind (no result is dropped); a sink's error ends the run at the next frame."""

    def __init__(self, sinks: list[Sink], depth: int = 4):
        self.sinks, self.queue, self.error = sinks, queue.Queue(maxsize=depth), None
        self.thread = threading.Thread(target=self._work, name="edgead-sinks", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    _deliver(self.sinks, *item)
                except BaseException as exc:  # handed to the stream's thread
                    self.error = exc

    def write(self, result, outputs) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((result, outputs))

    def finish(self) -> None:
        """Write what is queued, then stop; re-raises a sink's error."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def _sink_name(sink: Sink) -> str:
    return type(sink).__name__.removesuffix("Sink").lower()


def _deliver(sinks: list[Sink], result, outputs) -> None:
    """A frame's result, then the events and part decisions that ended at it, to every sink in order."""
    for sink in sinks:
        if result is not None:
            sink.write(result)
        for out in outputs:
            sink.write_event(out)


def run_stream(
    detector: Detector,
    source: FrameSource,
    sinks: list[Sink],
    stride: int = 1,
    roi: Any = None,
    max_frames: int | None = None,
    status_every_s: float = 5.0,
    echo: Callable[[str], None] = print,
    stop: threading.Event | None = None,
    pipeline: bool = False,
    smoothing: Smoothing | None = None,
) -> RunStats:
    """``pipeline``: sinks other than the window write on a thread of their own (see _SinkThread).
    ``smoothing``: decisions over time (events, parts; runtime/temporal.py); None decides every frame alone."""
    stop = stop or threading.Event()
    decider = TemporalDecider(smoothing) if smoothing is not None and smoothing.active else None
    latencies: collections.deque[float] = collections.deque(maxlen=2000)  # bounded: flat memory
    stats = RunStats()
    window = [s for s in sinks if isinstance(s, WindowSink)]
    behind = _SinkThread([s for s in sinks if s not in window]) if pipeline else None
    direct = window if pipeline else sinks  # OpenCV's window belongs to this thread
    previous = None
    terminated = threading.Event()
    if threading.current_thread() is threading.main_thread():

        def on_term(signum, frame):
            # Only set flags: raising here would abort a backend call mid-frame and surface as a
            # backend error. The loop finishes the frame in hand and stops; outputs close normally.
            terminated.set()
            stop.set()
            source.interrupt()

        previous = signal.signal(signal.SIGTERM, on_term)
    first: list[float] = []  # the first frames' normalised scores, for the start check
    t0 = last_status = time.perf_counter()
    frames_at_status = 0

    def count(outputs) -> None:
        for out in outputs:
            if isinstance(out, PartDecision):
                stats.parts += 1
                stats.rejected_parts += out.is_anomalous
            else:
                stats.events += 1

    def refresh(now: float, tell_sinks: bool = True) -> None:
        stats.elapsed_s = now - t0
        stats.fps = stats.frames / stats.elapsed_s if stats.elapsed_s > 0 else 0.0
        if latencies:
            a = np.fromiter(latencies, float)
            stats.latency_ms = {f"p{q}": float(np.percentile(a, q)) for q in (50, 90, 99)}
        stats.sinks = {_sink_name(s): st for s in sinks if (st := s.status()) is not None}
        if isinstance(source.stats, SourceStats):
            stats.source, stats.unjudged = asdict(source.stats), source.stats.unjudged
        else:
            stats.source = {}
        for sink in sinks if tell_sinks else ():
            sink.on_status(stats)

    try:
        for result in stream_results(
            detector,
            source,
            stride=stride,
            roi=roi,
            max_frames=max_frames,
            stop=stop,
            give_up_after=NOTHING_JUDGED_AFTER,
        ):
            stats.frames += 1
            stats.anomalies += result.is_anomalous
            if len(first) < START_CHECK_FRAMES:
                first.append(float(result.normalised_score))
                if len(first) == START_CHECK_FRAMES and (warning := start_check(first, source.name)):
                    echo(warning)
            latencies.append(result.latency_ms.get("total", 0.0))
            outputs = decider.update(result) if decider is not None else []
            count(outputs)
            _deliver(direct, result, outputs)
            if behind is not None:
                behind.write(result, outputs)
            now = time.perf_counter()
            if now - last_status >= status_every_s:
                refresh(now)
                recent = (stats.frames - frames_at_status) / (now - last_status)
                for w in window:
                    w.fps = recent
                echo(stats.status_line())
                last_status, frames_at_status = now, stats.frames
        if terminated.is_set():
            stats.stopped_by = "SIGTERM"
        elif stop.is_set():
            stats.stopped_by = "stop request (q)"
        elif max_frames is not None and stats.frames >= max_frames:
            stats.stopped_by = "--max-frames"
    except KeyboardInterrupt:
        stats.stopped_by = "Ctrl-C"
    finally:
        try:
            if decider is not None:  # the open event and the unfinished part are decided, not lost
                outputs = decider.flush()
                count(outputs)
                _deliver(direct, None, outputs)
                if behind is not None:
                    behind.write(None, outputs)
            if behind is not None:
                behind.finish()  # every result reaches the sinks before they close
            refresh(time.perf_counter())  # the sinks see the final counts (metrics) before they close
        finally:
            for sink in sinks:
                sink.close()
        source.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    refresh(time.perf_counter(), tell_sinks=False)  # what the closed sinks say last (messages left unsent)
    return stats
