"""Decisions over time: smoothing, votes, hysteresis, events and parts (runtime/temporal.py), alone and in a run."""

import json

import numpy as np
import pytest

from edgead import Detector
from edgead.core.errors import ConfigError
from edgead.line.runner import run_stream
from edgead.line.sinks import AnomalySaver, JsonlSink
from edgead.runtime.sources import open_source
from edgead.runtime.temporal import AnomalyEvent, PartDecision, Smoothing, TemporalDecider

from .conftest import edgead_cli
from .conftest import scored_frame as frame


@pytest.fixture(scope="module")
def detector_for_runs(tiny_bundle):
    with Detector.load(tiny_bundle, backend="onnxruntime-cpu") as d:
        yield d


@pytest.fixture
def video_frames(demo_data):
    return open_source(str(demo_data / "test" / "*" / "*.png"))


def decide(scores, smoothing: Smoothing):
    decider = TemporalDecider(smoothing)
    results = [frame(i, s) for i, s in enumerate(scores)]
    outputs = [out for r in results for out in decider.update(r)] + decider.flush()
    return [r.line.is_anomalous for r in results], outputs


def test_no_smoothing_follows_the_frames_and_makes_one_event_per_stretch():
    states, outputs = decide([0.2, 0.7, 0.8, 0.3, 0.6, 0.2], Smoothing())
    assert states == [False, True, True, False, True, False]
    events = [o for o in outputs if isinstance(o, AnomalyEvent)]
    assert [(e.first_frame, e.last_frame, e.frames) for e in events] == [(1, 2, 2), (4, 4, 1)]
    assert events[0].peak_score == 0.8 and events[0].best.frame_index == 2


def test_exponential_smoothing_absorbs_one_noisy_frame_but_not_a_lasting_defect():
    ema = Smoothing(ema=0.5)
    states, outputs = decide([0.3, 0.75, 0.3, 0.3], ema)  # one spike: 0.525 would pass 0.5 ...
    assert states == [False, True, False, False]  # ... so it is an event at 0.5 weight
    states, _ = decide([0.3, 0.65, 0.3, 0.3], ema)
    assert not any(states)  # 0.475: absorbed
    states, _ = decide([0.3, 0.65, 0.65, 0.65], ema)
    assert states == [False, False, True, True]  # a defect seen in several frames gets through


def test_votes_need_k_of_the_last_n_frames():
    states, _ = decide([0.9, 0.1, 0.9, 0.1, 0.1, 0.9, 0.9], Smoothing(votes=2, window=3))
    assert states == [False, False, True, False, False, False, True]


def test_hysteresis_keeps_one_event_while_the_score_wavers_around_the_threshold():
    scores = [0.2, 0.6, 0.48, 0.55, 0.47, 0.3]
    _, plain = decide(scores, Smoothing())
    _, held = decide(scores, Smoothing(leave=0.45))
    assert len(plain) == 2 and len(held) == 1
    assert (held[0].first_frame, held[0].last_frame) == (1, 4)


def test_parts_on_a_fixed_pitch_are_decided_once_and_start_afresh():
    scores = [0.2, 0.9, 0.2, 0.2, 0.2, 0.2, 0.6, 0.6, 0.6]
    _, outputs = decide(scores, Smoothing(part_frames=3, ema=0.5))
    parts = [o for o in outputs if isinstance(o, PartDecision)]
    assert [(p.index, p.first_frame, p.last_frame, p.is_anomalous) for p in parts] == [
        (0, 0, 2, True),
        (1, 3, 5, False),
        (2, 6, 8, True),  # no score carried over from part 1: 0.6 at frame 6 is above at once
    ]
    assert parts[0].anomalous_frames == 1 and parts[0].events == 1 and parts[0].best.frame_index == 1
    events = [o for o in outputs if isinstance(o, AnomalyEvent)]
    assert [e.part for e in events] == [0, 2]
    assert outputs.index(events[0]) < outputs.index(parts[0])  # an event reaches the sinks before its part


def test_a_trigger_ends_parts_through_the_api():
    decider = TemporalDecider(Smoothing(votes=2, window=2))
    decider.begin_part()
    for i, s in enumerate([0.9, 0.2, 0.9]):
        decider.update(frame(i, s))
    (part,) = decider.end_part()
    assert not part.is_anomalous and part.anomalous_frames == 2 and (part.first_frame, part.last_frame) == (0, 2)
    assert decider.end_part() == []  # no part open: nothing to decide


def test_the_same_results_give_the_same_decisions():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.3, 0.7, 200).tolist()
    s = Smoothing(ema=0.4, votes=2, window=3, leave=0.45, part_frames=7)
    a, b = decide(scores, s), decide(scores, s)
    assert a[0] == b[0] and [o.to_dict() for o in a[1]] == [o.to_dict() for o in b[1]]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("ema=0", "ema is the newest frame's weight"),
        ("ema=nan", "ema must be a number"),
        ("votes=3/2", "votes (3) cannot exceed the window (2)"),
        ("votes=2", "malformed value"),
        ("leave=0.6", "leave must lie between 0 and enter"),
        ("emma=0.5", "unknown key 'emma'"),
        ("ema", "'ema' is not KEY=VALUE"),
        ("part_frames=0", "part_frames must be a whole number >= 1"),
    ],
)
def test_bad_smoothing_is_one_error_naming_the_key(spec, message):
    with pytest.raises(ConfigError) as info:
        Smoothing.parse(spec)
    assert message in str(info.value)


def test_a_smoothed_run_writes_events_parts_and_one_saved_frame_per_event(detector_for_runs, video_frames, tmp_path):
    events, frames = tmp_path / "events.jsonl", tmp_path / "frames.jsonl"
    sinks = [JsonlSink(frames), JsonlSink(events, events=True), AnomalySaver(tmp_path / "bad")]
    smoothing = Smoothing(ema=0.5, leave=0.45, part_frames=4)
    stats = run_stream(detector_for_runs, video_frames, sinks, echo=lambda m: None, smoothing=smoothing)
    lines = [json.loads(x) for x in frames.read_text().splitlines()]
    out = [json.loads(x) for x in events.read_text().splitlines()]
    parts = [x for x in out if x["type"] == "part"]
    assert len(lines) == stats.frames and all("line" in x for x in lines)
    assert len(parts) == stats.parts == -(-stats.frames // 4)  # the last, shorter part is decided too
    assert sum(p["is_anomalous"] for p in parts) == stats.rejected_parts
    for p in parts:  # a part is rejected exactly when the line state was anomalous on one of its frames
        states = [x["line"]["is_anomalous"] for x in lines if x["line"]["part"] == p["part"]]
        assert p["is_anomalous"] == any(states) and p["frames"] == len(states)
    n_events = sum(x["type"] == "event" for x in out)
    assert n_events == stats.events and len(list((tmp_path / "bad").glob("event*_overlay.png"))) == n_events
    assert {x["bundle_id"] for x in out} == {detector_for_runs.bundle_id}


def test_run_cli_smoothing_options(tiny_bundle, demo_data, tmp_path):
    r = edgead_cli("run", tiny_bundle, "--source", demo_data / "test" / "*" / "*.png", "--smoothing", "votes=4/3")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].endswith("votes (4) cannot exceed the window (3)")
    r = edgead_cli(
        "run",
        tiny_bundle,
        "--source",
        demo_data / "test" / "*" / "*.png",
        "--smoothing",
        "votes=2/3,part_frames=3",
        "--events",
        tmp_path / "e.jsonl",
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["smoothing"]["votes"] == 2 and summary["parts"] == -(-summary["frames"] // 3)
    written = [json.loads(x) for x in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert sum(x["type"] == "part" for x in written) == summary["parts"]
