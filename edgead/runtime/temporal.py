"""Decisions over time: a part seen in several frames, a defect on a moving web seen in several.

A frame's own verdict (``Result.is_anomalous``) is one noisy look. ``TemporalDecider`` turns the stream of
frame verdicts into the line's decisions:

- **exponential smoothing** of the normalised score (``ema``: the newest frame's weight; 1 is none);
- **k-of-n voting**: the line state turns anomalous when at least k of the last n smoothed scores are above the
  enter level;
- **hysteresis**: once anomalous, the state stays so until the smoothed score falls below the ``leave`` level
  (and the votes no longer hold), so a defect whose score wavers around the threshold is one event, not several;
- **events**: one ``AnomalyEvent`` per stretch of anomalous state, with its first and last frame, peak score and
  the best frame's Result (image and map), emitted once when the stretch ends;
- **parts**: where a trigger says where one part ends (``end_part()``, or a fixed pitch of ``part_frames``
  frames), one ``PartDecision`` per part: rejected when the state was anomalous on any of its frames.

Levels are normalised scores (the bundle's threshold is 0.5), so one setting means the same for every method and
backend. Smoothing trades a slower and weaker reaction for fewer false rejects: a defect seen in a single frame
reaches ``ema`` times its score, and ``k`` frames of n are needed before a vote counts (docs/line.md measures the
trade-off per part).
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import ConfigError
from .result import Result


@dataclass(frozen=True)
class Smoothing:
    """How frame verdicts become line decisions. The defaults decide every frame on its own (no smoothing)."""

    ema: float = 1.0
    """Weight of the newest frame in the exponential average of the normalised score (0 < ema <= 1; 1: none)."""
    votes: int = 1
    """k: this many of the last ``window`` frames must be above ``enter``."""
    window: int = 1
    """n of the k-of-n vote."""
    enter: float = 0.5
    """Normalised level above which a frame votes anomalous (0.5: the bundle's threshold)."""
    leave: float | None = None
    """Normalised level below which an anomalous state ends (hysteresis; None: the same as ``enter``)."""
    part_frames: int | None = None
    """A part every this many judged frames (a fixed-pitch line); None: parts end only by ``end_part()``."""

    def __post_init__(self) -> None:
        def bad(what: str) -> None:
            raise ConfigError(f"smoothing: {what}")

        for name in ("ema", "enter") + (("leave",) if self.leave is not None else ()):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                bad(f"{name} must be a number, got {value!r}")
        if not 0 < self.ema <= 1:
            bad(f"ema is the newest frame's weight, in (0, 1]; got {self.ema}")
        if not 0 < self.enter < 1:
            bad(f"enter is a normalised score in (0, 1) (0.5 is the threshold); got {self.enter}")
        if self.leave is not None and not 0 <= self.leave <= self.enter:
            bad(f"leave must lie between 0 and enter ({self.enter}); got {self.leave}")
        for name in ("votes", "window") + (("part_frames",) if self.part_frames is not None else ()):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                bad(f"{name} must be a whole number >= 1, got {value!r}")
        if self.votes > self.window:
            bad(f"votes ({self.votes}) cannot exceed the window ({self.window})")

    @property
    def active(self) -> bool:
        """Whether a decider is needed: decisions differ from the frames' own, or parts are counted."""
        return self != Smoothing()

    @classmethod
    def parse(cls, spec: str | dict[str, Any] | None) -> Smoothing:
        """From ``"ema=0.5,votes=2/3,leave=0.45,part_frames=5"`` (the run's option) or a mapping (a station
        file); unknown keys and malformed values are one ConfigError naming them."""
        if spec is None or spec == "":
            return cls()
        if isinstance(spec, str):
            items: dict[str, Any] = {}
            for part in spec.split(","):
                key, sep, value = part.partition("=")
                if not sep:
                    raise ConfigError(f"smoothing: {part!r} is not KEY=VALUE (e.g. ema=0.5,votes=2/3,leave=0.45)")
                items[key.strip()] = value.strip()
        elif isinstance(spec, dict):
            items = dict(spec)
        else:
            raise ConfigError(f"smoothing must be KEY=VALUE pairs or a mapping, got {type(spec).__name__}")
        known = {"ema", "votes", "enter", "leave", "part_frames"}
        unknown = sorted(set(items) - known)
        if unknown:
            raise ConfigError(f"smoothing: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        kwargs: dict[str, Any] = {}
        try:
            if "votes" in items:
                k, sep, n = str(items["votes"]).partition("/")
                if not sep:
                    raise ValueError
                kwargs["votes"], kwargs["window"] = int(k), int(n)
            for name in ("ema", "enter", "leave"):
                if name in items and items[name] is not None:
                    kwargs[name] = float(items[name])
            if items.get("part_frames") is not None:
                kwargs["part_frames"] = int(items["part_frames"])
        except (TypeError, ValueError):
            raise ConfigError(
                f"smoothing: malformed value in {spec!r} (votes is K/N, ema/enter/leave numbers, part_frames a "
                "whole number)"
            ) from None
        return cls(**kwargs)


@dataclass
class LineState:
    """The line's decision at one frame, attached to its Result (``Result.line``)."""

    smoothed_score: float
    """The smoothed normalised score."""
    is_anomalous: bool
    """The line's decision at this frame (after smoothing, votes and hysteresis)."""
    part: int | None = None
    """The part this frame belongs to (0-based), when parts are counted."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "smoothed_score": round(self.smoothed_score, 6),
            "is_anomalous": self.is_anomalous,
            "part": self.part,
        }


@dataclass
class AnomalyEvent:
    """One stretch of anomalous line state, emitted once when it ends."""

    index: int
    first_frame: int | None
    last_frame: int | None
    frames: int
    peak_score: float
    """The highest raw score of the stretch (the method's units)."""
    peak_normalised_score: float
    best: Result = field(repr=False)
    """The frame with the peak score: its image and anomaly map."""
    part: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "event",
            "event": self.index,
            "part": self.part,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "frames": self.frames,
            "peak_score": round(float(self.peak_score), 6),
            "peak_normalised_score": round(float(self.peak_normalised_score), 6),
            "best_frame": self.best.frame_index,
            "source": self.best.source,
            "threshold": float(self.best.threshold),
            "bundle_id": self.best.bundle_id,
        }


@dataclass
class PartDecision:
    """One part's decision: rejected when the line state was anomalous on any of its frames."""

    index: int
    first_frame: int | None
    last_frame: int | None
    frames: int
    is_anomalous: bool
    anomalous_frames: int
    """Frames of this part whose own verdict was anomalous (before smoothing)."""
    events: int
    peak_score: float
    best: Result | None = field(default=None, repr=False)
    """The part's frame with the highest score."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "part",
            "part": self.index,
            "is_anomalous": self.is_anomalous,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "frames": self.frames,
            "anomalous_frames": self.anomalous_frames,
            "events": self.events,
            "peak_score": round(float(self.peak_score), 6),
            "best_frame": None if self.best is None else self.best.frame_index,
            "threshold": None if self.best is None else float(self.best.threshold),
            "bundle_id": None if self.best is None else self.best.bundle_id,
        }


LineOutput = AnomalyEvent | PartDecision


class TemporalDecider:
    """Feeds on Results in frame order; ``update`` returns the events and part decisions that ended there.

    Deterministic: the same Results in the same order give the same decisions.
    """

    def __init__(self, smoothing: Smoothing | None = None):
        self.smoothing = smoothing or Smoothing()
        self.events = 0
        self.parts = 0
        self.rejected_parts = 0
        self._reset_signal()
        self._event: dict[str, Any] | None = None
        self._part: dict[str, Any] | None = None

    def _reset_signal(self) -> None:
        self._smoothed: float | None = None
        self._recent: collections.deque[bool] = collections.deque(maxlen=self.smoothing.window)
        self._state = False

    def update(self, result: Result) -> list[LineOutput]:
        """Decide ``result``'s frame (sets ``result.line``); returns the events and parts that ended."""
        s = self.smoothing
        x = float(result.normalised_score)
        self._smoothed = x if self._smoothed is None else s.ema * x + (1 - s.ema) * self._smoothed
        self._recent.append(self._smoothed > s.enter)
        voted = sum(self._recent) >= s.votes
        leave = s.enter if s.leave is None else s.leave
        self._state = voted or (self._state and self._smoothed >= leave)
        out: list[LineOutput] = []
        if self._part is None and s.part_frames is not None:
            self._part = self._new_part()
        if self._state:
            if self._event is None:
                self._event = {"first": result.frame_index, "frames": 0, "best": result}
            e = self._event
            e["frames"] += 1
            e["last"] = result.frame_index
            if result.score > e["best"].score:
                e["best"] = result
        elif self._event is not None:
            out.append(self._close_event())
        if self._part is not None:
            p = self._part
            if p["first"] is None:
                p["first"] = result.frame_index
            p["frames"] += 1
            p["last"] = result.frame_index
            p["anomalous_frames"] += bool(result.is_anomalous)
            p["rejected"] |= self._state
            if p["best"] is None or result.score > p["best"].score:
                p["best"] = result
        result.line = LineState(self._smoothed, self._state, None if self._part is None else self.parts)
        if s.part_frames is not None and self._part is not None and self._part["frames"] >= s.part_frames:
            out += self.end_part()
        return out

    def begin_part(self) -> None:
        """A trigger says a new part starts (parts not on a fixed pitch); frames until ``end_part`` belong to it."""
        if self._part is None:
            self._part = self._new_part()

    def end_part(self) -> list[LineOutput]:
        """A trigger says the current part has left: close its open event and decide it. The smoothing starts
        afresh for the next part (no score carries over from one part to another)."""
        out: list[LineOutput] = []
        if self._event is not None:
            out.append(self._close_event())
        if self._part is not None and self._part["frames"]:
            p = self._part
            events = self.events - p["events_before"]
            decision = PartDecision(
                index=self.parts,
                first_frame=p["first"],
                last_frame=p["last"],
                frames=p["frames"],
                is_anomalous=p["rejected"],
                anomalous_frames=p["anomalous_frames"],
                events=events,
                peak_score=float(p["best"].score),
                best=p["best"],
            )
            self.parts += 1
            self.rejected_parts += decision.is_anomalous
            out.append(decision)
        self._part = None
        self._reset_signal()
        return out

    def flush(self) -> list[LineOutput]:
        """At the end of the stream: the open event and the unfinished part (if it saw any frame)."""
        out: list[LineOutput] = []
        if self._event is not None:
            out.append(self._close_event())
        if self._part is not None and self._part["frames"]:
            out += self.end_part()
        return out

    def _new_part(self) -> dict[str, Any]:
        return {
            "first": None,  # the first frame update() counts in it
            "last": None,
            "frames": 0,
            "anomalous_frames": 0,
            "rejected": False,
            "best": None,
            "events_before": self.events,
        }

    def _close_event(self) -> AnomalyEvent:
        e, self._event = self._event, None
        best: Result = e["best"]
        event = AnomalyEvent(
            index=self.events,
            first_frame=e["first"],
            last_frame=e["last"],
            frames=e["frames"],
            peak_score=float(best.score),
            peak_normalised_score=float(best.normalised_score),
            best=best,
            part=None if self._part is None else self.parts,
        )
        self.events += 1
        return event
