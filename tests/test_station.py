"""One file for a station: validation naming the key, several cameras, restarts that keep what was written, SIGTERM."""

import json
import signal
import subprocess
import sys
import time

import pytest

from edgead.core.errors import ConfigError
from edgead.line.station import load_station

from .conftest import edgead_cli


def station(tmp_path, text):
    path = tmp_path / "station.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("cameras: []", "station.yaml: cameras must be a list of at least one camera"),
        ("camera: []", "station.yaml: unknown key 'camera'"),
        ("cameras: [{bundle: b.edgead}]", "station.yaml: cameras[0]: give exactly one of --camera N or --source SPEC"),
        ("cameras: [{bundle: b, camera: 0, strid: 2}]", "station.yaml: cameras[0]: unknown key 'strid'"),
        ("cameras: [{bundle: b, camera: yes}]", "station.yaml: cameras[0].camera: must be a camera index, got True"),
        ("cameras: [{bundle: b, camera: 0, stride: 0}]", "cameras[0].stride: must be a whole number >= 1, got 0"),
        (
            "cameras: [{bundle: b, camera: 0}, {bundle: b, camera: 1, smoothing: {votes: 3/2}}]",
            "station.yaml: cameras[1].smoothing: votes (3) cannot exceed the window (2)",
        ),
        ("cameras: [{bundle: b, camera: 0, sinks: {mqq: x}}]", "station.yaml: cameras[0].sinks.mqq: unknown sink"),
        (
            "cameras: [{name: a, bundle: b, camera: 0}, {name: a, bundle: b, camera: 1}]",
            "cameras[1].name: 'a' names two cameras",
        ),
        ("cameras: [{bundle: b, camera: 0}]\nstatus_every: -1", "status_every must be seconds between 0 and a day"),
        ("cameras: [{bundle: b, camera: 0]", "station.yaml is not valid YAML (line 1)"),
    ],
)
def test_station_file_mistakes_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        load_station(station(tmp_path, text))
    assert message in str(info.value)


def test_the_documented_example_is_a_valid_station_file(tmp_path):
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "line.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    specs, every = load_station(station(tmp_path, example))
    assert [s.name for s in specs] == ["top", "side"] and every == 10
    assert specs[0].smoothing.votes == 2 and dict(specs[0].sinks)["mqtt"].startswith("mqtt://")


def test_a_station_of_two_cameras_runs_and_a_restart_keeps_what_was_written(tiny_bundle, demo_data, tmp_path):
    images = demo_data / "test" / "*" / "*.png"
    path = station(
        tmp_path,
        f"""
cameras:
  - name: left
    bundle: {tiny_bundle}
    source: "{images}"
    smoothing: {{votes: 2/3, part_frames: 3}}
    sinks: {{jsonl: {tmp_path}/left.jsonl, events: {tmp_path}/left-events.jsonl, anomalies: {tmp_path}/bad}}
  - name: right
    bundle: {tiny_bundle}
    source: "{images}"
    stride: 2
    sinks: {{jsonl: {tmp_path}/right.jsonl}}
""",
    )
    r = edgead_cli("station", path, "--check")
    assert r.returncode == 0 and "2 cameras: left, right" in r.stderr
    r = edgead_cli("station", path)
    assert r.returncode == 0, r.stderr
    left, right = (json.loads(x) for x in r.stdout.strip().splitlines())
    assert left["camera"] == "left" and right["camera"] == "right"
    assert right["frames"] == -(-left["frames"] // 2) and left["parts"] == -(-left["frames"] // 3)
    assert "[left]" in r.stderr and "[right]" in r.stderr  # each camera's messages say which camera
    r = edgead_cli("station", path)  # systemd restarted it: appended, nothing replaced
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "left.jsonl").read_text().splitlines()) == 2 * left["frames"]
    parts = [json.loads(x) for x in (tmp_path / "left-events.jsonl").read_text().splitlines()]
    assert sum(x["type"] == "part" for x in parts) == 2 * left["parts"]


def test_each_start_of_a_station_saves_its_anomalies_in_a_folder_of_its_own(tmp_path):
    from edgead.line.sinks import SinkOptions, anomaly_sink

    first, second = (anomaly_sink(str(tmp_path / "bad"), SinkOptions(append=True)) for _ in range(2))
    assert first.folder.parent == second.folder.parent == tmp_path / "bad" and first.folder != second.folder


@pytest.mark.slow
def test_sigterm_stops_every_camera_cleanly(tiny_bundle, demo_data, tmp_path):
    images = demo_data / "test" / "*" / "*.png"
    path = station(
        tmp_path,
        f"""
status_every: 0.5
cameras:
  - {{name: a, bundle: {tiny_bundle}, source: "{images}", loop: true, sinks: {{jsonl: {tmp_path}/a.jsonl}}}}
  - {{name: b, bundle: {tiny_bundle}, source: "{images}", loop: true, sinks: {{jsonl: {tmp_path}/b.jsonl}}}}
""",
    )
    p = subprocess.Popen(
        [sys.executable, "-m", "edgead.cli", "station", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(
        (tmp_path / f"{n}.jsonl").exists() and (tmp_path / f"{n}.jsonl").stat().st_size for n in "ab"
    ):
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    summaries = [json.loads(x) for x in out.strip().splitlines()]
    assert [s["stopped_by"] for s in summaries] == ["SIGTERM", "SIGTERM"] and "Traceback" not in err
    for s, name in zip(summaries, "ab"):
        lines = (tmp_path / f"{name}.jsonl").read_text().splitlines()
        assert len(lines) == s["frames"] and all(json.loads(x)["frame_index"] is not None for x in lines)
