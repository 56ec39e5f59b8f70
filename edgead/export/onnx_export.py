"""Trace one stage to ONNX (opset 17, dynamic batch), check it, and stamp its contract."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch

from ..core.contracts import StageContract
from ..core.errors import ExportError
from ..core.version import __version__

log = logging.getLogger(__name__)
OPSET = 17


def sample_inputs(contract: StageContract, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Random example inputs (batch >= 2: the dynamo exporter fixes a batch of 1).

    An input named ``t`` is a timestep: integer values as float32, as the pipelines feed it.
    """
    out = []
    for spec in contract.inputs:
        shape = [batch if isinstance(d, str) else d for d in spec.shape]
        if spec.name == "t":
            out.append(torch.randint(0, 1000, shape, generator=generator).float())
        else:
            out.append(torch.randn(shape, generator=generator))
    return tuple(out)


def export_stage(
    module: torch.nn.Module,
    contract: StageContract,
    path: Path,
    method: str,
    example_batch: int = 2,
    opset: int = OPSET,
) -> Path:
    module = module.eval().cpu()
    inputs = sample_inputs(contract, example_batch, torch.Generator().manual_seed(0))
    in_names = [s.name for s in contract.inputs]
    out_names = [s.name for s in contract.outputs]
    axes = {n: {0: "batch"} for n in in_names + out_names}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                inputs,
                str(path),
                input_names=in_names,
                output_names=out_names,
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:
        raise ExportError(f"exporting stage {contract.name} to ONNX failed: {exc}") from exc
    model = onnx.load(str(path))
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected stage {contract.name}: {exc}") from None
    meta = {
        "edgead_version": __version__,
        "method": method,
        "stage": contract.name,
        "description": contract.description,
        "inputs": "; ".join(f"{s.name}:{s.dtype}{s.shape}" for s in contract.inputs),
        "outputs": "; ".join(f"{s.name}:{s.dtype}{s.shape}" for s in contract.outputs),
    }
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, str(v)
    onnx.save(model, str(path))
    log.info("exported %s (%.1f MB)", path.name, path.stat().st_size / 1e6)
    return path
