"""``RemoteDetector``: the local Detector's API, answered by a bundle served by Triton (edgead serve).

    detector = RemoteDetector("grpc://inference-box:8001", model="tire")
    result = detector.predict(frame)         # the same Result as Detector.predict, the same score

The client converts frames to RGB exactly as the local Detector does and resizes the returned map to
the frame the same way, so scores, maps and masks equal the local ones. A server that goes away is
retried with back-off (each gap is reported and counted), as ``edgead run`` does for cameras.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import cv2
import numpy as np

from ..core.bundle import bundle_pin
from ..core.errors import ConfigError, InputError, MissingDependencyError, SourceError
from ..core.manifest import Stats
from ..runtime.backends import BackendChoice
from ..runtime.preprocess import as_rgb
from ..runtime.result import Color, Result
from .protocol import IMAGE, MAP_SIZE, OUTPUT_NAMES, PIXEL_STATS

log = logging.getLogger(__name__)


class ServerError(SourceError):
    """The inference server cannot be reached, or does not serve the model asked for."""


class BundleMismatch(ServerError):
    """The server answered with another bundle than the one this client is pinned to; the answer was not used."""


@dataclass
class ServerStats:
    requests: int = 0
    frames: int = 0
    reconnects: int = 0
    """Gaps after which the server answered again."""
    gap_s: float = 0.0
    """Seconds spent waiting for an unreachable server, all gaps together."""
    bundle_changes: int = 0
    """Times the served bundle changed under this client (each one reported through ``on_event``)."""


def _transient(exc: Exception) -> bool:
    """The server is down, restarting or (re)loading the model: worth retrying. Anything else is an answer."""
    if isinstance(exc, OSError):
        return True
    text = f"{getattr(exc, 'status', lambda: '')()} {exc}".lower()
    return any(
        k in text
        for k in (
            "unavailable",
            "failed to connect",
            "connection refused",
            "socket closed",
            "unknown model",
            "is not ready",
            "not_found",
            "deadline",
        )
    )


class RemoteDetector:
    """``url``: grpc://HOST:PORT (default scheme; Triton's gRPC port is 8001) or http://HOST:PORT (8000).
    ``model``: the served model; may be left out when the server serves one. ``map_size``: longest side of
    the maps sent back (default the model's resolution: maps equal the local ones). ``reconnect_attempts``:
    retries of an unreachable server before giving up (None: forever). ``expect_bundle``: the bundle id (or a
    local copy of the bundle) every answer must come from; an answer from another raises BundleMismatch and is
    never used. Without it, a change of the served bundle is reported through ``on_event`` and every Result
    names its bundle."""

    def __init__(
        self,
        url: str = "grpc://127.0.0.1:8001",
        model: str | None = None,
        timeout_s: float = 60.0,
        map_size: int | None = None,
        reconnect_attempts: int | None = 5,
        on_event: Callable[[str], None] | None = None,
        expect_bundle: str | Path | None = None,
    ):
        if map_size is not None and map_size < 1:
            raise ConfigError(f"map_size must be >= 1, got {map_size}")
        self.expected_bundle = bundle_pin(expect_bundle) if expect_bundle is not None else None
        self.url, self.timeout_s, self.map_size = url, timeout_s, map_size
        self.reconnect_attempts = reconnect_attempts
        self.on_event = on_event or (lambda m: log.warning("%s", m))
        self.stats = ServerStats()
        self._protocol, address = _parse_url(url)
        self._tc, self._client = _open_client(self._protocol, address, timeout_s)
        self._outputs = [self._tc.InferRequestedOutput(name) for name in OUTPUT_NAMES]
        try:
            served = self._call(self._served_models, attempts=0)
            self.model = model or _only(served, url)
            if self.model not in served:
                raise ServerError(
                    f"the server at {url} serves no model {self.model!r}; it serves: {', '.join(served) or 'none'}"
                )
            config = self._call(lambda: self._model_config(self.model), attempts=0)
        except BaseException:
            self.close()
            raise
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        inputs = [i.get("name") for i in config.get("input", [])]
        if "edgead_method" not in params or inputs != [IMAGE]:
            self.close()
            raise ServerError(f"model {self.model!r} at {url} is not an edgead model (served by 'edgead serve')")
        self.method: str = params["edgead_method"]
        self.max_batch = max(1, int(config.get("max_batch_size", 1)))
        self.choice = BackendChoice("triton", f"model {self.model} at {url}")
        self._bundle_id: str | None = None
        self._threshold = float("nan")

    # -- the local Detector's API -----------------------------------------------------------
    @property
    def backend_name(self) -> str:
        return self.choice.name

    @property
    def bundle_id(self) -> str | None:
        """The served bundle (``Bundle.id``) that answered last (None before the first answer)."""
        return self._bundle_id

    @property
    def threshold(self) -> float:
        """The image threshold of the bundle that answered last (NaN before the first answer)."""
        return self._threshold

    def predict(self, image: np.ndarray | str | Path, color: Color = "bgr", keep_image: bool = True) -> Result:
        return self.predict_batch([image], color=color, keep_image=keep_image)[0]

    def predict_batch(
        self, images: Sequence[np.ndarray | str | Path], color: Color = "bgr", keep_image: bool = True
    ) -> list[Result]:
        if color not in ("bgr", "rgb"):
            raise InputError(f"color must be 'bgr' or 'rgb', got {color!r}")
        rgbs = [as_rgb(im, color) for im in images]
        results = self.predict_rgb(rgbs, keep_image=keep_image)
        for r, im in zip(results, images):
            r.source = str(im) if isinstance(im, (str, Path)) else None
        return results

    def predict_rgb(self, rgbs: list[np.ndarray], keep_image: bool = True) -> list[Result]:
        """uint8 RGB frames; one request per run of equal-sized frames (at most the model's batch)."""
        results: list[Result] = []
        i = 0
        while i < len(rgbs):
            j = i + 1
            while j < len(rgbs) and j - i < self.max_batch and rgbs[j].shape == rgbs[i].shape:
                j += 1
            results += self._request(rgbs[i:j], keep_image)
            i = j
        return results

    def stream(self, source: Any, **options: Any) -> Iterator[Result]:
        from ..runtime.stream import stream_results

        return stream_results(self, source, **options)

    def close(self) -> None:
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            client.close()

    def __enter__(self) -> RemoteDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- requests ---------------------------------------------------------------------------
    def _request(self, rgbs: list[np.ndarray], keep_image: bool) -> list[Result]:
        batch = np.ascontiguousarray(np.stack(rgbs))
        t0 = time.perf_counter()
        out = self._call(lambda: self._infer(batch))
        rt_ms = (time.perf_counter() - t0) * 1e3 / len(rgbs)
        self._check_bundle(out["bundle_id"][0, 0].decode(), float(out["threshold"][0, 0]))
        self.stats.requests += 1
        self.stats.frames += len(rgbs)
        results = []
        for k, rgb in enumerate(rgbs):
            h, w = rgb.shape[:2]
            amap = out["anomaly_map"][k]
            if amap.shape != (h, w):  # as the local Detector does
                amap = cv2.resize(amap, (w, h), interpolation=cv2.INTER_LINEAR)
            pixel = Stats(**dict(zip(PIXEL_STATS, (float(v) for v in out["pixel_stats"][k]))))
            server_ms = float(out["server_ms"][k, 0])
            results.append(
                Result(
                    score=float(out["score"][k, 0]),
                    normalised_score=float(out["normalised_score"][k, 0]),
                    is_anomalous=bool(out["is_anomalous"][k, 0]),
                    anomaly_map=amap,
                    mask=amap > pixel.threshold,
                    threshold=float(out["threshold"][k, 0]),
                    latency_ms={"server": server_ms, "network": max(0.0, rt_ms - server_ms), "total": rt_ms},
                    image=rgb if keep_image else None,
                    pixel_stats=pixel,
                    bundle_id=self.bundle_id,
                )
            )
        return results

    def _check_bundle(self, ident: str, threshold: float) -> None:
        """Refuse an answer from a bundle other than the pinned one; report a change of the served bundle."""
        if self.expected_bundle is not None and ident != self.expected_bundle:
            raise BundleMismatch(
                f"the server at {self.url} (model {self.model}) answered with bundle {ident}, but "
                f"this client expects bundle {self.expected_bundle} (--expect-bundle); its answer was "
                "not used"
            )
        if self._bundle_id is not None and ident != self._bundle_id:
            self.stats.bundle_changes += 1
            self.on_event(
                f"the served bundle of model {self.model} changed: {self._bundle_id} -> {ident} (threshold "
                f"{self._threshold:.6g} -> {threshold:.6g}); decisions from here on are the new bundle's"
            )
        self._bundle_id, self._threshold = ident, threshold

    def _call(self, fn: Callable[[], Any], attempts: int | None = -1) -> Any:
        """fn(), retried with back-off while the server is unreachable; ``attempts`` -1: the detector's setting."""
        from tritonclient.utils import InferenceServerException

        limit = self.reconnect_attempts if attempts == -1 else attempts
        tries, delay, gap_start = 0, 0.25, None
        while True:
            try:
                value = fn()
            except (InferenceServerException, OSError) as exc:
                if not _transient(exc):
                    raise InputError(f"the server refused the request: {_message(exc)}") from None
                if gap_start is None:
                    gap_start = time.perf_counter()
                if limit is not None and tries >= limit:
                    self.stats.gap_s += time.perf_counter() - gap_start
                    model = f" (model {self.model})" if getattr(self, "model", None) else ""
                    raise ServerError(
                        f"the inference server at {self.url}{model} is unreachable: {_message(exc)}"
                        + (f" (gave up after {tries} retries)" if tries else "")
                    ) from None
                tries += 1
                self.on_event(
                    f"inference server {self.url} unreachable ({_message(exc)}); retry {tries} in {delay:.1f} s"
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if gap_start is not None:
                gap = time.perf_counter() - gap_start
                self.stats.gap_s += gap
                self.stats.reconnects += 1
                self.on_event(f"inference server {self.url} answers again after a gap of {gap:.1f} s")
            return value

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        tensor = self._tc.InferInput(IMAGE, list(batch.shape), "UINT8")
        tensor.set_data_from_numpy(batch)
        params = {MAP_SIZE: self.map_size} if self.map_size else None
        r = self._client.infer(
            self.model,
            [tensor],
            outputs=self._outputs,
            parameters=params,
            **({"client_timeout": self.timeout_s} if self._protocol == "grpc" else {}),
        )
        return {name: r.as_numpy(name) for name in OUTPUT_NAMES}

    def _model_config(self, name: str) -> dict:
        if self._protocol == "grpc":
            return self._client.get_model_config(name, as_json=True)["config"]
        return self._client.get_model_config(name)

    def _served_models(self) -> list[str]:
        """The loaded models, from the statistics API (edgead serve closes the repository API to clients)."""
        stats = self._client.get_inference_statistics(**({"as_json": True} if self._protocol == "grpc" else {}))
        return sorted({m["name"] for m in stats.get("model_stats", [])})


def _only(served: list[str], url: str) -> str:
    if len(served) != 1:
        raise ConfigError(
            f"the server at {url} serves {len(served)} models ({', '.join(served) or 'none'}); "
            "name one (model=... or --model)"
        )
    return served[0]


def _parse_url(url: str) -> tuple[str, str]:
    parsed = urlparse(url if "://" in url else f"grpc://{url}")
    if parsed.scheme not in ("grpc", "http") or not parsed.hostname or parsed.port is None:
        raise ConfigError(f"server URL {url!r}: expected grpc://HOST:PORT or http://HOST:PORT")
    return parsed.scheme, f"{parsed.hostname}:{parsed.port}"


def _open_client(protocol: str, address: str, timeout_s: float):
    """(the tritonclient module of the protocol, a client of the server)."""
    try:
        import importlib

        module = importlib.import_module(f"tritonclient.{protocol}")
    except ImportError as exc:
        raise MissingDependencyError(
            f'the Triton client is not installed ({exc}); install it with: pip install "edgead[client]"'
        ) from None
    if protocol == "grpc":
        return module, module.InferenceServerClient(address)
    return module, module.InferenceServerClient(address, connection_timeout=timeout_s, network_timeout=timeout_s)


def _message(exc: Exception) -> str:
    text = exc.message() if callable(getattr(exc, "message", None)) else str(exc)
    return " ".join(str(text).split())[:400]
