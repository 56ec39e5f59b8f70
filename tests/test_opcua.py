"""The OPC UA sink read by an OPC UA client, as a PLC would; and what such a client may not do."""

import datetime as dt
import socket

import pytest

from edgead import Detector
from edgead.line.runner import run_stream
from edgead.line.sinks import SINKS, SinkOptions
from edgead.runtime.sources import open_source
from edgead.runtime.temporal import Smoothing

from .conftest import free_port, status_probe

asyncua = pytest.importorskip("asyncua", reason='the opcua sink needs asyncua (pip install "edgead[line]")')
pytestmark = pytest.mark.slow


def test_a_plc_reads_the_station_state_and_cannot_change_it(tiny_bundle, demo_data):
    from asyncua import ua
    from asyncua.sync import Client

    port = free_port()
    sink = SINKS.get("opcua")(str(port), SinkOptions())
    read = {}

    def plc(stats):  # reads the nodes while the run still serves them
        with Client(f"opc.tcp://127.0.0.1:{port}/edgead/") as client:
            idx = client.get_namespace_index("urn:edgead")
            node = {
                name: client.get_node(ua.NodeId(f"edgead.{name}", idx))
                for name in ("Frames", "Parts", "RejectedParts", "LastScore", "Heartbeat", "BundleId", "Threshold")
            }
            read.update({name: n.read_value() for name, n in node.items()})
            with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
                node["RejectedParts"].write_value(ua.Variant(0, ua.VariantType.Int64))
            with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
                client.nodes.objects.add_variable(idx, "Injected", 1.0)

    with Detector.load(tiny_bundle, backend="onnxruntime-cpu") as det:
        stats = run_stream(
            det,
            open_source(str(demo_data / "test" / "*" / "*.png")),
            [sink, status_probe(plc)],
            echo=lambda m: None,
            smoothing=Smoothing(part_frames=2),
            status_every_s=1e9,  # only the final status, after the last frame
        )
        last = det.predict(sorted((demo_data / "test").glob("*/*.png"))[-1]).score
    assert read["Frames"] == stats.frames and read["Parts"] == stats.parts
    assert read["RejectedParts"] == stats.rejected_parts
    assert read["LastScore"] == pytest.approx(last, rel=1e-5)
    assert read["BundleId"] == det.bundle_id and read["Threshold"] == pytest.approx(det.threshold)
    age = dt.datetime.now(dt.timezone.utc) - read["Heartbeat"].replace(tzinfo=dt.timezone.utc)
    assert age < dt.timedelta(seconds=60)
    with socket.socket() as s:  # closed with the run
        assert s.connect_ex(("127.0.0.1", port)) != 0
