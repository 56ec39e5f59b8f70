"""Results to the plant's MQTT broker (paho-mqtt): anomaly events and part decisions as JSON, frames on request.

``edgead run ... --sink mqtt=mqtt://broker:1883/plant/line1/station3?qos=1`` publishes on
``<prefix>/event``, ``<prefix>/part`` (and ``<prefix>/frame`` with ``frames=1``), and keeps ``<prefix>/status``
retained: ``online`` while the run is connected, ``offline`` when it ends or dies (the broker's last will).

While the broker is away, paho reconnects with back-off (1 s doubling to 30 s) and keeps the messages of QoS 1 and
2 in a bounded queue (``queue=N``, default 10,000): nothing is lost until it is full; messages refused because it
is full (or, at QoS 0, published while disconnected) are counted as dropped and reported in the status line and
the run's summary. At the end the sink waits up to ``drain=S`` seconds (default 5) for the queue to empty.

Query options: ``qos`` (0, 1, 2), ``frames`` (0/1), ``queue``, ``drain``, ``client_id``, ``keepalive``,
``username``, ``password_file`` (a file readable by its owner only; or ``$EDGEAD_MQTT_PASSWORD``), and for
``mqtts://`` ``ca`` (a CA file; the system's by default), ``cert`` and ``key`` (client certificate). A secret is never
taken from the URL (it would show in the command line).
"""

from __future__ import annotations

import json
import os
import ssl
import stat
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..core.errors import ConfigError
from ..runtime.result import Result
from ..runtime.temporal import LineOutput
from .sinks import Sink, SinkOptions

OPTIONS = {"qos", "frames", "queue", "drain", "client_id", "keepalive", "username", "password_file"}
OPTIONS |= {"ca", "cert", "key"}
PASSWORD_ENV = "EDGEAD_MQTT_PASSWORD"


def _password(path: str | None) -> str | None:
    if path is None:
        return os.environ.get(PASSWORD_ENV)
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"mqtt password_file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"mqtt password_file {path} can be read by other users (mode {stat.S_IMODE(mode):o}); chmod 600 it"
        )
    return p.read_text().strip()


class MqttSink(Sink):
    """See the module's docstring. ``status()`` says whether the broker is connected and what is queued or lost."""

    def __init__(self, url: str, echo=lambda message: None):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise ConfigError('the mqtt sink needs paho-mqtt: pip install "edgead[line]"') from None
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError(f"mqtt sink: give mqtt://HOST[:PORT]/TOPIC/PREFIX or mqtts://..., got {url!r}")
        if parts.password is not None:
            raise ConfigError(
                "mqtt sink: a password in the URL would show in the command line; use password_file=PATH "
                f"or ${PASSWORD_ENV}"
            )
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(query) - OPTIONS)
        if unknown:
            raise ConfigError(f"mqtt sink: unknown option {unknown[0]!r} (known: {', '.join(sorted(OPTIONS))})")
        try:
            self.qos = int(query.get("qos", 1))
            self.frames = query.get("frames", "0") not in ("0", "false", "no", "")
            queue = int(query.get("queue", 10_000))
            self.drain_s = float(query.get("drain", 5.0))
            keepalive = int(query.get("keepalive", 30))
            port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        except ValueError as exc:
            raise ConfigError(f"mqtt sink: malformed option in {url!r} ({exc})") from None
        if self.qos not in (0, 1, 2) or queue < 1 or not 0 <= self.drain_s < 3600 or keepalive < 1:
            raise ConfigError("mqtt sink: qos is 0, 1 or 2; queue and keepalive >= 1; drain in seconds (< 3600)")
        self.prefix = parts.path.strip("/") or "edgead"
        if any(c in self.prefix for c in "#+"):
            raise ConfigError(f"mqtt sink: the topic prefix {self.prefix!r} cannot hold the wildcards # or +")
        self.address = f"{parts.scheme}://{parts.hostname}:{port}/{self.prefix}"
        self.echo = echo
        self.connected = threading.Event()
        self.published = self.dropped = self.reconnects = 0
        self._pending: set[int] = set()
        self._acked: dict[int, bool] = {}
        self._lock = threading.RLock()  # the counts and the ids sent but not acknowledged (paho may acknowledge first)
        self._ever_connected = False
        self._last_error: str | None = None

        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=query.get("client_id") or f"edgead-{uuid.uuid4().hex[:12]}"
        )
        client.max_queued_messages_set(queue)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        username = query.get("username") or parts.username
        if username:
            client.username_pw_set(username, _password(query.get("password_file")))
        if parts.scheme == "mqtts":
            try:
                client.tls_set(ca_certs=query.get("ca"), certfile=query.get("cert"), keyfile=query.get("key"))
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise ConfigError(f"mqtt sink: TLS files: {exc}") from None
        client.will_set(f"{self.prefix}/status", "offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self.client = client
        try:
            client.connect_async(parts.hostname, port, keepalive=keepalive)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"mqtt sink: cannot reach {self.address}: {exc}") from None
        client.loop_start()
        if not self.connected.wait(3.0):
            echo(f"mqtt: broker {self.address} not reachable yet; messages are kept (up to {queue}) until it is")

    # paho's network thread
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._last_error = str(reason_code)
            self.echo(f"mqtt: broker {self.address} refused the connection: {reason_code}")
            return
        if self._ever_connected:
            self.reconnects += 1
            self.echo(f"mqtt: reconnected to {self.address}")
        self._ever_connected = True
        client.publish(f"{self.prefix}/status", "online", qos=1, retain=True)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected.is_set():
            self.echo(f"mqtt: lost the broker {self.address} ({reason_code}); reconnecting")
        self.connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            if mid in self._pending:
                self._pending.discard(mid)
            else:  # acknowledged inside publish(), before it was recorded as pending
                self._acked[mid] = True

    def _publish(self, kind: str, payload: dict[str, Any]) -> None:
        import paho.mqtt.client as mqtt

        # not under self._lock: paho calls _on_publish holding its own message lock, which publish() takes too
        info = self.client.publish(f"{self.prefix}/{kind}", json.dumps(payload), qos=self.qos)
        with self._lock:
            lost = info.rc == mqtt.MQTT_ERR_QUEUE_SIZE or (self.qos == 0 and info.rc != mqtt.MQTT_ERR_SUCCESS)
            if lost:
                self.dropped += 1
            else:
                self.published += 1
                if self.qos > 0 and not self._acked.pop(info.mid, False):
                    self._pending.add(info.mid)

    def write(self, result: Result) -> None:
        if self.frames:
            self._publish("frame", result.to_dict())

    def write_event(self, event: LineOutput) -> None:
        payload = event.to_dict()
        self._publish(payload["type"], payload)

    def status(self) -> dict[str, Any]:
        """For the status line and the run's summary."""
        with self._lock:
            queued = len(self._pending)
        return {
            "connected": self.connected.is_set(),
            "published": self.published,
            "queued": queued,
            "dropped": self.dropped,
            "reconnects": self.reconnects,
        }

    def close(self) -> None:
        if self.client is None:
            return
        deadline = time.monotonic() + self.drain_s
        while self.status()["queued"] and time.monotonic() < deadline:
            time.sleep(0.05)
        unsent = self.status()["queued"]
        if self.connected.is_set():
            self.client.publish(f"{self.prefix}/status", "offline", qos=1, retain=True).wait_for_publish(1.0)
        self.client.disconnect()
        self.client.loop_stop()
        self.client = None
        if unsent or self.dropped:
            self.echo(
                f"mqtt: {unsent} messages not delivered to {self.address} at the end, {self.dropped} dropped "
                "(queue full or broker away at QoS 0)"
            )


def mqtt_sink(url: str, options: SinkOptions) -> Sink:
    return MqttSink(url, echo=options.echo)
