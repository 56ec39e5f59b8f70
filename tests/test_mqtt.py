"""The MQTT sink against a real broker (the distribution's Mosquitto on a loopback port), restarted mid-run."""

import json
import os
import shutil
import socket
import stat
import subprocess
import threading
import time

import pytest

from edgead.core.errors import ConfigError
from edgead.line.sinks import SINKS, SinkOptions
from edgead.runtime.temporal import Smoothing, TemporalDecider

from .conftest import free_port, scored_frame, status_probe

mqtt = pytest.importorskip("paho.mqtt.client", reason='the mqtt sink needs paho-mqtt (pip install "edgead[line]")')
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
pytestmark = pytest.mark.slow


class Broker:
    """Mosquitto on 127.0.0.1:port with persistence, so a subscriber's session survives a restart."""

    def __init__(self, folder, port):
        self.port = port
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {folder}/\nautosave_interval 1\nuser root\n"  # root: may write its folder
        )
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self):
        self.process.terminate()  # SIGTERM: mosquitto saves its sessions
        self.process.wait(10)


@pytest.fixture
def broker(tmp_path):
    if MOSQUITTO is None:
        pytest.skip("Mosquitto is not installed (apt-get install mosquitto)")
    b = Broker(tmp_path, free_port())
    b.start()
    yield b
    if b.process.poll() is None:
        b.stop()


class Subscriber:
    """A persistent-session QoS 1 subscriber: it keeps its messages across a broker restart."""

    def __init__(self, port, topic):
        self.messages: list[tuple[str, dict | str]] = []
        self.lock = threading.Lock()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="edgead-test-sub", clean_session=False)
        c.on_connect = lambda client, *a: client.subscribe(topic, qos=1)
        c.on_message = self._on_message
        c.reconnect_delay_set(0.1, 0.5)
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c

    def _on_message(self, client, userdata, message):
        payload = message.payload.decode()
        with self.lock:
            self.messages.append((message.topic, json.loads(payload) if payload.startswith("{") else payload))

    def of(self, suffix):
        with self.lock:
            return [m for t, m in self.messages if t.endswith(suffix)]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def frames(scores, start=0):
    for i, s in enumerate(scores, start):
        yield scored_frame(i, s, bundle_id="abc")


def test_parts_reach_the_broker_across_a_broker_restart(broker):
    sub = Subscriber(broker.port, "line1/#")
    messages: list[str] = []
    sink = SINKS.get("mqtt")(f"mqtt://127.0.0.1:{broker.port}/line1?qos=1", SinkOptions(echo=messages.append))
    decider = TemporalDecider(Smoothing(part_frames=2))
    try:
        assert wait_for(lambda: sink.status()["connected"])
        assert wait_for(lambda: "online" in sub.of("/status"))

        def feed(scores, start):
            for r in frames(scores, start):
                for out in decider.update(r):
                    sink.write_event(out)

        feed([0.1, 0.9, 0.2, 0.2], 0)  # parts 0 (rejected, one event), 1
        assert wait_for(lambda: len(sub.of("/part")) == 2)
        broker.stop()
        assert wait_for(lambda: not sink.status()["connected"])
        feed([0.7, 0.1, 0.1, 0.1], 4)  # parts 2, 3 while the broker is away: kept
        assert sink.status()["queued"] >= 2 and sink.status()["dropped"] == 0
        broker.start()
        assert wait_for(lambda: sink.status()["connected"] and sink.status()["queued"] == 0)
        assert wait_for(lambda: len(sub.of("/part")) == 4)
        parts = sub.of("/part")
        assert [p["part"] for p in parts] == [0, 1, 2, 3]
        assert [p["is_anomalous"] for p in parts] == [True, False, True, False]
        assert all(p["bundle_id"] == "abc" and p["threshold"] == 0.5 for p in parts)
        assert [e["first_frame"] for e in sub.of("/event")] == [1, 4]
        assert sink.status()["reconnects"] == 1 and any("reconnected" in m for m in messages)
        sink.close()
        assert wait_for(lambda: sub.of("/status")[-1:] == ["offline"])  # retained: the PLC sees the station left
    finally:
        sink.close()
        sub.close()


def test_a_full_queue_counts_what_it_drops(broker):
    sink = SINKS.get("mqtt")(f"mqtt://127.0.0.1:{broker.port}/q?queue=3&drain=0.2", SinkOptions())
    try:
        assert wait_for(lambda: sink.status()["connected"])
        broker.stop()
        assert wait_for(lambda: not sink.status()["connected"])
        decider = TemporalDecider(Smoothing(part_frames=1))
        for r in frames([0.1] * 6):
            for out in decider.update(r):
                sink.write_event(out)
        status = sink.status()
        assert status["dropped"] == 3 and status["published"] == 3 and status["queued"] == 3
    finally:
        sink.close()


def test_bad_mqtt_options_are_one_error_line(tmp_path, monkeypatch):
    make = SINKS.get("mqtt")
    with pytest.raises(ConfigError, match="password in the URL would show in the command line"):
        make("mqtt://user:secret@127.0.0.1:1/x", SinkOptions())
    with pytest.raises(ConfigError, match="unknown option 'qoss'"):
        make("mqtt://127.0.0.1:1/x?qoss=1", SinkOptions())
    with pytest.raises(ConfigError, match="qos is 0, 1 or 2"):
        make("mqtt://127.0.0.1:1/x?qos=3", SinkOptions())
    with pytest.raises(ConfigError, match="give mqtt://HOST"):
        make("http://127.0.0.1/x", SinkOptions())
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="can be read by other users"):
        make("mqtt://127.0.0.1:1/x?username=u&password_file=" + str(secret), SinkOptions())
    secret.chmod(stat.S_IRUSR | stat.S_IWUSR)
    said: list[str] = []
    sink = make(f"mqtt://u@127.0.0.1:{free_port()}/x?password_file={secret}&drain=0", SinkOptions(echo=said.append))
    try:  # nothing listens there: the run starts, says so, and keeps the messages
        assert any("not reachable yet" in m for m in said)
        assert sink.client._password == b"s3cret"
    finally:
        sink.close()


def test_a_run_publishes_parts_and_serves_metrics(broker, tiny_bundle, demo_data, tmp_path):
    """edgead run with --mqtt, --metrics and --smoothing: the broker gets every part, the metrics count them."""
    import urllib.request

    from edgead import Detector
    from edgead.line.runner import run_stream
    from edgead.line.sinks import open_sinks
    from edgead.runtime.sources import open_source

    sub = Subscriber(broker.port, "st/#")
    options = SinkOptions()
    port = free_port()
    sinks = open_sinks([("mqtt", f"mqtt://127.0.0.1:{broker.port}/st"), ("metrics", str(port))], options)
    scraped = {}

    def scrape(stats):  # reads /metrics while the run still serves it
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            scraped["text"] = r.read().decode()

    with Detector.load(tiny_bundle, backend="onnxruntime-cpu") as det:
        stats = run_stream(
            det,
            open_source(str(demo_data / "test" / "*" / "*.png")),
            sinks + [status_probe(scrape)],
            echo=lambda m: None,
            smoothing=Smoothing(part_frames=2),
            status_every_s=0.0,
        )
    try:
        assert wait_for(lambda: len(sub.of("/part")) == stats.parts)
        assert sum(p["is_anomalous"] for p in sub.of("/part")) == stats.rejected_parts
    finally:
        sub.close()
    text = scraped["text"]
    metric = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line[:1] != "#"}
    assert metric["edgead_frames_total"] == stats.frames
    assert metric['edgead_parts_total{decision="reject"}'] == stats.rejected_parts
    assert metric['edgead_parts_total{decision="pass"}'] == stats.parts - stats.rejected_parts
    assert metric["edgead_frame_latency_seconds_count"] == stats.frames
    assert metric['edgead_sink_connected{sink="mqtt"}'] == 1.0
    assert f'edgead_bundle_info{{bundle_id="{det.bundle_id}"' in text
    with pytest.raises(OSError):  # closed with the run
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_tls_and_credentials_from_a_private_file(tmp_path):
    """mqtts:// with the broker's CA, a user and a password file; a wrong password is refused and said."""
    if MOSQUITTO is None or shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("needs Mosquitto, mosquitto_passwd and openssl")
    ca, key = tmp_path / "ca.crt", tmp_path / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(ca)],
        check=True, capture_output=True,
    )  # fmt: skip
    users = tmp_path / "users"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(users), "line1", "right horse"], check=True)
    port = free_port()
    conf = tmp_path / "tls.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\ncertfile {ca}\nkeyfile {key}\nallow_anonymous false\npassword_file {users}\n"
        "user root\n"  # started by root, Mosquitto would drop to its own user, who cannot read the test's files
    )
    broker = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 10)
        secret = tmp_path / "pw"
        secret.write_text("right horse\n")
        secret.chmod(0o600)
        said: list[str] = []
        url = f"mqtts://127.0.0.1:{port}/tls?ca={ca}&username=line1&password_file={secret}"
        sink = SINKS.get("mqtt")(url, SinkOptions(echo=said.append))
        try:
            assert wait_for(lambda: sink.status()["connected"]), said
            decider = TemporalDecider(Smoothing(part_frames=1))
            for r in frames([0.9]):
                for out in decider.update(r):
                    sink.write_event(out)
            assert wait_for(lambda: sink.status()["queued"] == 0) and sink.status()["published"] == 2
        finally:
            sink.close()
        secret.write_text("wrong horse\n")
        said = []
        sink = SINKS.get("mqtt")(url + "&drain=0", SinkOptions(echo=said.append))
        try:
            assert wait_for(lambda: any("refused the connection" in m for m in said))
            assert not sink.status()["connected"] and "right horse" not in " ".join(said)
        finally:
            sink.close()
    finally:
        broker.terminate()
        broker.wait(10)


def test_an_acknowledgement_arriving_while_a_part_is_published_does_not_block_the_line():
    """paho calls on_publish holding its own message lock, which publish() takes as well: a sink that published
    under its own lock waited on paho while paho's thread waited on the sink (the line stopped for good)."""
    from edgead.line.mqtt import MqttSink

    mutex, acking = threading.Lock(), threading.Event()

    class Client:  # paho's order of locks: the network thread holds its message lock while it calls on_publish
        def publish(self, topic, payload, qos):
            acking.set()
            time.sleep(0.2)  # the network thread takes its lock first
            with mutex:
                return type("Info", (), {"rc": 0, "mid": 7})()

    sink = object.__new__(MqttSink)
    sink.client, sink.prefix, sink.qos = Client(), "edgead", 1
    sink.published = sink.dropped = 0
    sink._pending, sink._acked, sink._lock = set(), {}, threading.RLock()

    def network_thread():
        acking.wait(5)
        with mutex:
            sink._on_publish(None, None, 7, None, None)

    ack = threading.Thread(target=network_thread, daemon=True)
    ack.start()
    line = threading.Thread(target=sink._publish, args=("part", {"type": "part"}), daemon=True)
    line.start()
    line.join(5)
    ack.join(5)
    assert not line.is_alive() and not ack.is_alive(), "the sink and paho's thread wait on each other"
    assert sink.published == 1 and sink._pending == set() and sink._acked == {}
