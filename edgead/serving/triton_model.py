"""The model Triton's Python backend loads: ``model.py`` of every edgead model is one import of this.

Runs inside Triton's Python-backend stub, so it reads its settings from the model configuration's
parameters (``bundle``, ``backend``, ``product``, ``threads``) and answers every request on its own
(an error response for a bad one; the others in the same batch are still answered).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..core.errors import EdgeadError, InputError
from .model import Request, ServedModel
from .protocol import IMAGE, MAP_SIZE

log = logging.getLogger(__name__)


def _pb():
    import triton_python_backend_utils as pb_utils  # provided by the stub; exists only inside Triton

    return pb_utils


def _check_numpy_exchange(pb) -> None:
    """Triton 2.51's stub is built against numpy 1: under numpy 2 every output arrives empty. Fail the load
    with the fix instead of answering empty responses."""
    probe = np.arange(4, dtype=np.float64)
    back = pb.Tensor("probe", probe).as_numpy()
    if back.shape != probe.shape or not np.array_equal(back, probe):
        raise RuntimeError(
            f"this Triton Python backend cannot exchange numpy {np.__version__} arrays (outputs "
            "would arrive empty); install numpy<2 in the serving environment "
            '(pip install "edgead[serve]" pins it)'
        )


def model_settings(args: dict) -> dict[str, str]:
    """The model configuration's parameters; ``bundle`` resolved against the model version's folder."""
    config = json.loads(args["model_config"])
    params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
    if not params.get("bundle"):
        raise RuntimeError(f"model {config.get('name')}: the configuration has no 'bundle' parameter")
    bundle = Path(params["bundle"])
    if not bundle.is_absolute():
        bundle = Path(args["model_repository"]) / str(args["model_version"]) / bundle
    params["bundle"] = str(bundle)
    return params


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        from ..runtime.detector import Detector

        pb = _pb()
        _check_numpy_exchange(pb)
        params = model_settings(args)
        threads = int(params["threads"]) if params.get("threads") else None
        try:
            detector = Detector.load(
                params["bundle"],
                backend=params.get("backend") or "auto",
                threads=threads,
                product=params.get("product") or None,
            )
            self.model = ServedModel(detector)
            expected = params.get("bundle_id")
            if expected and self.model.bundle_id != expected:  # what was checked is what is served
                self.model.close()
                raise EdgeadError(
                    f"bundle {params['bundle']} is {self.model.bundle_id}, expected {expected} (it "
                    "changed while the model loaded)"
                )
        except EdgeadError as exc:  # Triton reports the load failure with this one line
            raise RuntimeError(f"edgead: {exc}") from None
        self._count_decisions(pb, args.get("model_name", ""))
        pb.Logger.log_info(
            f"edgead: {params['bundle']} ({detector.method}, bundle {self.model.bundle_id}) "
            f"on {detector.backend_name}: {detector.choice.reason}"
        )

    _decisions = None

    def _count_decisions(self, pb, model: str) -> None:
        """``edgead_decisions_total{model, bundle_id, decision}`` on Triton's metrics port, beside its own request
        and latency metrics (a Triton without custom metrics in its Python backend goes without)."""
        family = getattr(pb, "MetricFamily", None)
        if family is None:
            return
        decisions = family(
            name="edgead_decisions_total",
            description="Images judged by the served bundle, by decision",
            kind=family.COUNTER,
        )
        self._decisions = decisions  # Triton deletes a family's metrics with it: it lives as long as the model
        labels = {"model": model, "bundle_id": self.model.bundle_id}
        passed, rejected = (decisions.Metric(labels={**labels, "decision": d}) for d in ("pass", "reject"))

        def count(n_pass: int, n_reject: int) -> None:
            if n_pass:
                passed.increment(n_pass)
            if n_reject:
                rejected.increment(n_reject)

        self.model.on_decisions = count

    def execute(self, requests: list) -> list:
        pb = _pb()
        decoded: list[Request | InputError] = []
        for r in requests:
            try:
                decoded.append(_decode(r))
            except InputError as exc:
                decoded.append(exc)
        valid = [d for d in decoded if isinstance(d, Request)]
        try:
            answers = iter(self.model.answer(valid))
        except EdgeadError as exc:  # the batch could not run at all (a backend error)
            return [pb.InferenceResponse(error=_error(pb, exc)) for _ in requests]
        responses = []
        for d in decoded:
            a = next(answers) if isinstance(d, Request) else d
            if isinstance(a, EdgeadError):
                responses.append(pb.InferenceResponse(error=_error(pb, a)))
            else:
                responses.append(pb.InferenceResponse([pb.Tensor(k, v) for k, v in a.items()]))
        return responses

    def finalize(self) -> None:
        if getattr(self, "model", None) is not None:
            self.model.on_decisions = None  # the metrics go before their family (Triton's rule)
            self._decisions = None
            self.model.close()


def _error(pb, exc: EdgeadError):
    """A bad payload is the client's error (INVALID_ARGUMENT); anything else the server's (INTERNAL)."""
    code = getattr(pb.TritonError, "INVALID_ARG" if isinstance(exc, InputError) else "INTERNAL", None)
    return pb.TritonError(str(exc)) if code is None else pb.TritonError(str(exc), code)


def _decode(triton_request) -> Request:
    pb = _pb()
    tensor = pb.get_input_tensor_by_name(triton_request, IMAGE)
    if tensor is None:
        raise InputError(f"the request has no '{IMAGE}' input")
    try:
        params = json.loads(triton_request.parameters() or "{}")
    except ValueError:
        params = {}
    map_size = params.get(MAP_SIZE)
    if isinstance(map_size, str):
        map_size = int(map_size) if map_size.isdigit() else map_size
    outputs = list(triton_request.requested_output_names()) or None
    return Request(tensor.as_numpy(), map_size, outputs)
