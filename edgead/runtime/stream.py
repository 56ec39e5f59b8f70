"""Frames in, Results out: stride, region of interest and the per-result callback.

One frame is in flight at a time; live sources hold only the newest frame meanwhile, so
memory stays flat however long the stream runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigError, InputError, SourceError
from .sources import FrameSource, open_source

if TYPE_CHECKING:
    from .detector import Detector
    from .result import Result

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Roi:
    """Region of interest in pixels of the source frame: x, y, width, height."""

    x: int
    y: int
    w: int
    h: int

    @classmethod
    def parse(cls, text: str | tuple[int, int, int, int] | None) -> Roi | None:
        if text is None:
            return None
        parts = text.split(",") if isinstance(text, str) else list(text)
        try:
            x, y, w, h = (int(p) for p in parts)
        except ValueError:
            raise ConfigError(f"--roi must be x,y,width,height in pixels, got {text!r}") from None
        if x < 0 or y < 0 or w < 8 or h < 8:
            raise ConfigError(f"--roi {text!r}: x, y must be >= 0 and width, height >= 8")
        return cls(x, y, w, h)

    def crop(self, image):
        h, w = image.shape[:2]
        if self.x + self.w > w or self.y + self.h > h:
            raise InputError(f"region of interest {self.x},{self.y},{self.w},{self.h} lies outside the {w}x{h} frame")
        return image[self.y : self.y + self.h, self.x : self.x + self.w]


def stream_results(
    detector: Detector,
    source: Any,
    stride: int = 1,
    roi: Roi | str | None = None,
    on_result: Callable[[Result], None] | None = None,
    max_frames: int | None = None,
    stop: threading.Event | None = None,
    reconnect_attempts: int | None = None,
    give_up_after: int | None = None,
) -> Iterator[Result]:
    """Yield a Result (frame attached) for every ``stride``-th frame of ``source``.

    ``source`` is an open FrameSource or anything ``open_source`` accepts (camera index, path,
    URL, GStreamer pipeline, folder, glob). A source opened here is closed at the end. A frame the model
    (or the server) refuses is counted (``source.stats.refused_frames``) and skipped; with ``give_up_after``,
    a stream whose first that-many frames were all refused ends with a SourceError saying why.
    """
    if stride < 1:
        raise ConfigError(f"stride must be >= 1, got {stride}")
    region = roi if isinstance(roi, Roi) or roi is None else Roi.parse(roi)
    owned = not isinstance(source, FrameSource)
    src = open_source(source, reconnect_attempts=reconnect_attempts) if owned else source
    done = 0
    try:
        for frame in src.frames():
            if stop is not None and stop.is_set():
                break
            if frame.index % stride:
                continue
            image = region.crop(frame.image) if region is not None else frame.image
            try:
                result = detector.predict_rgb([image])[0]
            except InputError as exc:  # a frame the model cannot judge gets no verdict, never a pass
                src.stats.refused_frame(str(exc))
                log.warning("skipping frame %d: %s", frame.index, exc)
                if give_up_after is not None and done == 0 and src.stats.refused_frames >= give_up_after:
                    raise SourceError(
                        f"no frame was judged: the first {src.stats.refused_frames} frames of "
                        f"{src.name} were all refused (first: {src.stats.first_error})"
                    ) from None
                continue
            result.source, result.frame_index, result.timestamp = frame.source, frame.index, frame.timestamp
            if on_result is not None:
                on_result(result)
            yield result
            done += 1
            if max_frames is not None and done >= max_frames:
                break
    finally:
        if owned:
            src.close()
