"""Every extension point is a table: a dummy of each kind, added with one entry, works end to end
through the same paths (Detector, edgead run, edgead evaluate) as the built-in ones."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import numpy as np
import pytest
from click.testing import CliRunner

from edgead import Detector, load_bundle
from edgead.cli import main
from edgead.core.errors import ConfigError
from edgead.core.metrics import METRICS, Metric, image_metrics
from edgead.core.registry import Registry
from edgead.core.scoring import SCORE_RULES
from edgead.line.sinks import SINKS, Sink
from edgead.runtime.backends import BACKENDS, BackendKind, backend_names
from edgead.runtime.backends.onnxruntime import OnnxRuntimeBackend
from edgead.runtime.sources import SOURCES, Frame, FrameSource, SourceKind


@pytest.fixture
def registered():
    """register(table, name, item) for one test; every entry is removed afterwards."""
    added = []

    def add(table: Registry, name: str, item):
        table.register(name, item)
        added.append((table, name))
        return item

    yield add
    for table, name in added:
        table.unregister(name)


class CountingBackend(OnnxRuntimeBackend):
    calls = 0

    def _run(self, feeds):
        CountingBackend.calls += 1
        return super()._run(feeds)


def _counting_kind(priority: int) -> BackendKind:
    def open_stage(bundle, stage, threads, device):
        e = bundle.manifest.stage(stage)
        return CountingBackend(bundle.path(e.file), e.inputs, e.outputs, threads=threads)

    return BackendKind("counting-cpu", "counting", priority, lambda bundle: "always", open_stage)


def test_a_backend_is_one_entry(tiny_bundle, registered):
    registered(BACKENDS, "counting-cpu", _counting_kind(priority=-1))
    assert backend_names()[:3] == ["auto", "counting", "counting-cpu"]
    frame = np.full((64, 64, 3), 120, np.uint8)
    with Detector.load(tiny_bundle, backend="onnxruntime-cpu") as reference:
        expected = reference.predict(frame).score
    CountingBackend.calls = 0
    with Detector.load(tiny_bundle) as det:  # auto tries it first (priority -1)
        assert det.backend_name == "counting-cpu" and det.choice.reason == "always"
        assert det.predict(frame).score == expected
    assert CountingBackend.calls == len(load_bundle(tiny_bundle).manifest.stages)
    r = CliRunner().invoke(main, ["predict", "--bundle", str(tiny_bundle), "--backend", "counting", "x.png"])
    assert r.exit_code == 1 and "error: no such file or folder: x.png" in r.output  # --backend took the family


def test_a_taken_name_is_refused(registered):
    with pytest.raises(ConfigError, match="^a sink named 'jsonl' is already registered$"):
        registered(SINKS, "jsonl", lambda argument, options: None)


class CountdownSource(FrameSource):
    def __init__(self, n: int):
        super().__init__(f"countdown {n}")
        self.n = n

    def frames(self) -> Iterator[Frame]:
        for i in range(self.n):
            yield Frame(i, np.full((64, 64, 3), 40 * i, np.uint8), time.time(), self.name)


class ListSink(Sink):
    results: list = []

    def __init__(self, label: str):
        self.label = label

    def write(self, result) -> None:
        ListSink.results.append((self.label, result.frame_index, result.score))


def test_a_source_and_a_sink_are_one_entry_each(tiny_bundle, registered, tmp_path):
    registered(
        SOURCES,
        "countdown",
        SourceKind(
            "countdown",
            0,
            lambda s: s.startswith("countdown:"),
            lambda s, options: CountdownSource(int(s.split(":")[1])),
            "countdown:N",
        ),
    )
    registered(SINKS, "list", lambda argument, options: ListSink(argument))
    ListSink.results = []
    jsonl = tmp_path / "events.jsonl"
    r = CliRunner().invoke(
        main,
        [
            "run",
            "--bundle",
            str(tiny_bundle),
            "--source",
            "countdown:3",
            "--backend",
            "onnxruntime-cpu",
            "--sink",
            "list=line-1",
            "--sink",
            f"jsonl={jsonl}",
        ],
    )
    assert r.exit_code == 0, r.output
    assert [(label, i) for label, i, _ in ListSink.results] == [("line-1", 0), ("line-1", 1), ("line-1", 2)]
    written = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [w["score"] for w in written] == [round(s, 6) for _, _, s in ListSink.results]
    r = CliRunner().invoke(main, ["run", "--bundle", str(tiny_bundle), "--source", "countdown:1", "--sink", "plc=x"])
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1] == (
        "error: unknown sink 'plc'; registered sinks: anomalies, events, jsonl, list, metrics, mqtt, opcua, video, "
        "web, window"
    )


def test_a_score_rule_is_one_entry(tiny_bundle, registered):
    registered(SCORE_RULES, "mean", lambda maps, scoring: maps.reshape(len(maps), -1).mean(axis=1).astype(np.float64))
    bundle = load_bundle(tiny_bundle)
    bundle.manifest.scoring.image_score = "mean"  # as an exporter would name it
    frame = np.full((64, 64, 3), 200, np.uint8)
    with Detector(bundle, backend="onnxruntime-cpu") as det:
        scored = det.score_batch([frame])
        assert scored.scores[0] == pytest.approx(float(scored.maps[0].mean()), rel=1e-9)


def test_a_metric_is_one_entry(registered):
    from edgead.evaluation.evaluate import format_table, mean_report

    registered(
        METRICS,
        "tpr_at_0",
        Metric(
            "tpr_at_0",
            "TPR@FPR0",
            ("image",),
            lambda labels, scores: float((scores[labels == 1] > scores[labels == 0].max()).mean()),
        ),
    )
    labels, scores = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.3, 0.9])
    m = image_metrics(labels, scores)
    assert m["tpr_at_0"] == 0.5 and m["auroc"] == 0.75
    report = {
        "image": m,
        "pixel": None,
        "at_calibrated_threshold": {"threshold": 0.5, "false_reject_rate": 0.0, "miss_rate": 0.5, "accuracy": 0.75},
    }
    header, image_row = format_table(report).splitlines()[:2]
    assert header.split()[-1] == "TPR@FPR0" and image_row.split()[-1] == "0.500"
    assert mean_report({"a": report, "b": {**report, "image": {**m, "tpr_at_0": 1.0}}})["image"]["tpr_at_0"] == 0.75
