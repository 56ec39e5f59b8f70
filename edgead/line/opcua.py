"""The station's state as OPC UA nodes a PLC reads (asyncua): last decision, score, counts, heartbeat, bundle.

``edgead run ... --sink opcua=4840`` (``HOST:PORT`` to expose it; PORT alone binds to 127.0.0.1) serves
``opc.tcp://HOST:PORT/edgead/`` with one object ``edgead`` in namespace ``urn:edgead`` whose variables have
string node ids a PLC program can name: ``ns=<urn:edgead>;s=edgead.LastScore`` and so on (``VARIABLES``).

Read-only for everyone: a client can connect, browse, read and subscribe; writing a value, adding or deleting
nodes, calling methods or registering servers is refused (``ReadOnly``), so a device of the plant network can
watch the station but not change what it reports.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from ..core.errors import ConfigError
from ..runtime.result import Result
from ..runtime.temporal import LineOutput, PartDecision
from .metrics import parse_address
from .sinks import Sink, SinkOptions

NAMESPACE = "urn:edgead"
VARIABLES: dict[str, tuple[str, Any]] = {
    "LastFrameAnomalous": ("Boolean", False),
    "LastScore": ("Double", 0.0),
    "LastNormalisedScore": ("Double", 0.0),
    "LineAnomalous": ("Boolean", False),
    "Frames": ("Int64", 0),
    "AnomalousFrames": ("Int64", 0),
    "Events": ("Int64", 0),
    "Parts": ("Int64", 0),
    "RejectedParts": ("Int64", 0),
    "LastPartAnomalous": ("Boolean", False),
    "Heartbeat": ("DateTime", None),
    "BundleId": ("String", ""),
    "Threshold": ("Double", 0.0),
}
"""Browse name -> (OPC UA type, initial value). Heartbeat is the time of the last judged frame (UTC)."""


def _read_only_ruleset():
    from asyncua import ua
    from asyncua.crypto.permission_rules import PermissionRuleset

    allowed = {
        ua.NodeId(getattr(ua.ObjectIds, f"{name}Request_Encoding_DefaultBinary"))
        for name in (
            "CreateSession",
            "CloseSession",
            "ActivateSession",
            "Read",
            "Browse",
            "BrowseNext",
            "GetEndpoints",
            "FindServers",
            "TranslateBrowsePathsToNodeIds",
            "CreateSubscription",
            "ModifySubscription",
            "DeleteSubscriptions",
            "CreateMonitoredItems",
            "ModifyMonitoredItems",
            "DeleteMonitoredItems",
            "Publish",
            "Republish",
            "SetMonitoringMode",
            "SetPublishingMode",
            "CloseSecureChannel",
        )
    }

    class ReadOnly(PermissionRuleset):
        """Browse, read and subscribe; nothing that changes the server."""

        def check_validity(self, user, action_type_id, body) -> bool:
            return action_type_id in allowed

    return ReadOnly()


class OpcUaSink(Sink):
    def __init__(self, address: str, echo=lambda message: None):
        try:
            from asyncua import ua
            from asyncua.sync import Server
        except ImportError:
            raise ConfigError('the opcua sink needs asyncua: pip install "edgead[line]"') from None
        host, port = parse_address(address.removeprefix("opc.tcp://").split("/", 1)[0], "opcua sink")
        self.ua = ua
        self.server = Server()
        self.url = f"opc.tcp://{host}:{port}/edgead/"
        self.server.set_endpoint(self.url)
        self.server.set_server_name("edgead line station")
        self.server.set_security_policy([ua.SecurityPolicyType.NoSecurity], permission_ruleset=_read_only_ruleset())
        idx = self.server.register_namespace(NAMESPACE)
        station = self.server.nodes.objects.add_object(ua.NodeId("edgead", idx), "edgead")
        self.nodes = {}
        for name, (kind, initial) in VARIABLES.items():
            variant = getattr(ua.VariantType, kind)
            value = _dt.datetime.now(_dt.timezone.utc) if kind == "DateTime" else initial
            self.nodes[name] = station.add_variable(ua.NodeId(f"edgead.{name}", idx), name, value, variant)
        self.counts = {"Frames": 0, "AnomalousFrames": 0, "Events": 0, "Parts": 0, "RejectedParts": 0}
        try:
            self.server.start()
        except OSError as exc:
            self.server = None
            raise ConfigError(f"opcua sink {address}: cannot listen there ({exc.strerror or exc})") from None
        echo(f"opcua: {self.url} (namespace {NAMESPACE}, read-only)")

    def _set(self, name: str, value: Any) -> None:
        kind = VARIABLES[name][0]
        self.nodes[name].write_value(self.ua.Variant(value, getattr(self.ua.VariantType, kind)))

    def write(self, result: Result) -> None:
        self.counts["Frames"] += 1
        self.counts["AnomalousFrames"] += bool(result.is_anomalous)
        self._set("LastFrameAnomalous", bool(result.is_anomalous))
        self._set("LastScore", float(result.score))
        self._set("LastNormalisedScore", float(result.normalised_score))
        self._set("LineAnomalous", bool(result.line.is_anomalous if result.line is not None else result.is_anomalous))
        self._set("Threshold", float(result.threshold))
        self._set("BundleId", str(result.bundle_id or ""))
        for name in ("Frames", "AnomalousFrames"):
            self._set(name, self.counts[name])
        self._set("Heartbeat", _dt.datetime.now(_dt.timezone.utc))

    def write_event(self, event: LineOutput) -> None:
        if isinstance(event, PartDecision):
            self.counts["Parts"] += 1
            self.counts["RejectedParts"] += event.is_anomalous
            self._set("LastPartAnomalous", bool(event.is_anomalous))
            self._set("Parts", self.counts["Parts"])
            self._set("RejectedParts", self.counts["RejectedParts"])
        else:
            self.counts["Events"] += 1
            self._set("Events", self.counts["Events"])

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def opcua_sink(address: str, options: SinkOptions) -> Sink:
    return OpcUaSink(address, echo=options.echo)
