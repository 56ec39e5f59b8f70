"""Prometheus metrics of a running line (prometheus-client): how a plant watches its services.

``edgead run ... --metrics 9100`` serves ``http://127.0.0.1:9100/metrics`` (``HOST:PORT`` to expose it; it carries
counts and times only, never a frame or a path). Counters of frames, anomalous frames, events and part decisions,
a histogram of frame latency, the last score, and, refreshed with the status line, the source's reconnects and
unjudged frames and every connected sink's state and queue (the MQTT broker's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.errors import ConfigError
from ..runtime.result import Result
from ..runtime.temporal import LineOutput, PartDecision
from .sinks import Sink, SinkOptions
from .web import WebAddress

if TYPE_CHECKING:
    from .runner import RunStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


def parse_address(text: str, option: str) -> tuple[str, int]:
    """The line view's ``[HOST:]PORT`` rule, but a port a plant's systems are pointed at: never 0 (any port)."""
    address = WebAddress.parse(text, option)
    if address.port == 0:
        raise ConfigError(f"{option} {text!r}: give a port number 1-65535")
    return address.host, address.port


class MetricsSink(Sink):
    def __init__(self, address: str, echo=lambda message: None):
        try:
            import prometheus_client as prom
        except ImportError:
            raise ConfigError('--metrics needs prometheus-client: pip install "edgead[line]"') from None
        host, port = parse_address(address, "--metrics")
        self.registry = registry = prom.CollectorRegistry()
        self.frames = prom.Counter("edgead_frames", "Frames judged", registry=registry)
        self.anomalous = prom.Counter(
            "edgead_anomalous_frames", "Frames whose own verdict was anomalous", registry=registry
        )
        self.events = prom.Counter("edgead_events", "Anomaly events (smoothed line state)", registry=registry)
        self.parts = prom.Counter("edgead_parts", "Part decisions", ["decision"], registry=registry)
        self.latency = prom.Histogram(
            "edgead_frame_latency_seconds", "Time to judge a frame", buckets=LATENCY_BUCKETS, registry=registry
        )
        self.score = prom.Gauge("edgead_last_normalised_score", "Last frame's normalised score", registry=registry)
        self.bundle = prom.Gauge(
            "edgead_bundle_info", "The bundle judging", ["bundle_id", "threshold"], registry=registry
        )
        self.unjudged = prom.Gauge("edgead_unjudged_frames", "Frames without a verdict", registry=registry)
        self.reconnects = prom.Gauge("edgead_source_reconnects", "Reconnections of the source", registry=registry)
        self.sink_connected = prom.Gauge(
            "edgead_sink_connected", "A sink's connection is up", ["sink"], registry=registry
        )
        self.sink_queued = prom.Gauge(
            "edgead_sink_queued", "Messages waiting for a sink's peer", ["sink"], registry=registry
        )
        self.sink_dropped = prom.Gauge("edgead_sink_dropped", "Messages a sink dropped", ["sink"], registry=registry)
        for decision in ("pass", "reject"):
            self.parts.labels(decision)  # both series exist from the start (a rate of 0, not a missing series)
        self._bundle_labels: tuple[str, str] | None = None
        try:
            self.server, self.thread = prom.start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise ConfigError(f"--metrics {address}: cannot listen there ({exc.strerror})") from None
        self.url = f"http://{host}:{self.server.server_port}/metrics"
        echo(f"metrics: {self.url}")

    def write(self, result: Result) -> None:
        self.frames.inc()
        self.anomalous.inc(bool(result.is_anomalous))
        self.latency.observe(result.latency_ms.get("total", 0.0) / 1e3)
        self.score.set(float(result.normalised_score))
        labels = (str(result.bundle_id), f"{float(result.threshold):.6g}")
        if labels != self._bundle_labels:  # one series: the bundle judging now
            if self._bundle_labels is not None:
                self.bundle.remove(*self._bundle_labels)
            self.bundle.labels(*labels).set(1)
            self._bundle_labels = labels

    def write_event(self, event: LineOutput) -> None:
        if isinstance(event, PartDecision):
            self.parts.labels("reject" if event.is_anomalous else "pass").inc()
        else:
            self.events.inc()

    def on_status(self, stats: RunStats) -> None:
        self.unjudged.set(stats.unjudged)
        self.reconnects.set(stats.source.get("reconnects", 0))
        for name, s in stats.sinks.items():
            self.sink_connected.labels(name).set(bool(s.get("connected")))
            self.sink_queued.labels(name).set(s.get("queued", 0))
            self.sink_dropped.labels(name).set(s.get("dropped", 0))

    def close(self) -> None:
        if getattr(self, "server", None) is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def metrics_sink(address: str, options: SinkOptions) -> Sink:
    return MetricsSink(address, echo=options.echo)
