"""What travels between RemoteDetector (or any Triton client) and a served bundle.

Request: ``image`` uint8 [n, H, W, 3] RGB frames (any size; frames of different sizes travel in
different requests and are still batched together on the server). Optional request parameter
``map_size``: the longest side of the returned anomaly map (default: the model's resolution, which
the client resizes to the frame exactly as the local Detector does). Responses carry one row per
frame of each output the client asks for.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE = "image"
MAP_SIZE = "map_size"
"""Request parameter (int): longest side of ``anomaly_map``; absent: the model's resolution."""


@dataclass(frozen=True)
class Output:
    name: str
    triton_type: str
    """Triton's datatype name (config.pbtxt uses TYPE_<name>)."""
    dims: tuple[int, ...]
    """Per frame; -1 is variable."""
    doc: str


OUTPUTS = (
    Output("score", "FP64", (1,), "raw image score in the method's units"),
    Output("normalised_score", "FP64", (1,), "score mapped to [0, 1], the calibrated threshold at 0.5"),
    Output("is_anomalous", "BOOL", (1,), "the decision against the calibrated threshold"),
    Output("threshold", "FP64", (1,), "the calibrated image threshold"),
    Output("pixel_stats", "FP64", (5,), "pixel map min, max, threshold, mean, std of the calibration images"),
    Output("anomaly_map", "FP32", (-1, -1), "smoothed anomaly map (model resolution or map_size)"),
    Output("server_ms", "FP64", (1,), "milliseconds the server spent on the frame (its share of the batch)"),
    Output("bundle_id", "BYTES", (1,), "first 16 hex digits of the sha256 of the bundle's manifest"),
)
OUTPUT_NAMES = tuple(o.name for o in OUTPUTS)
PIXEL_STATS = ("min", "max", "threshold", "mean", "std")
"""Order of the ``pixel_stats`` values (the fields of core.bundle.Stats)."""

DEFAULT_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
"""Triton's own defaults."""
