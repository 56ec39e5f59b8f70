"""PyTorch eager stages behind the runtime's Backend interface.

Lets the exact runtime pipeline (pre-processing, orchestration, scoring) run with PyTorch
instead of ONNX Runtime, so a benchmark or parity check differs in the stage engine only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..bundle import Bundle
from ..runtime.backends.base import Backend
from ..training.checkpoint import read_checkpoint_meta


class TorchBackend(Backend):
    name = "pytorch-eager"

    def __init__(self, module: torch.nn.Module, bundle: Bundle, stage: str):
        entry = bundle.manifest.stage(stage)
        super().__init__(Path(f"{stage}.torch"), entry.inputs, entry.outputs)
        self.module = module.eval()
        self.in_names = [s.name for s in entry.inputs]
        self.out_names = [s.name for s in entry.outputs]

    @torch.no_grad()
    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.module(*(torch.from_numpy(feeds[n]) for n in self.in_names))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return {n: o.numpy() for n, o in zip(self.out_names, outs)}


def diffusionad_stages(model) -> dict[str, torch.nn.Module]:
    """The DiffusionAD networks as one module per exported stage."""
    from .stages import DenoiserStep

    return {"denoiser_step": DenoiserStep(model.denoiser), "segmenter": model.segmenter}


def torch_stages(run_dir: str | Path) -> dict[str, torch.nn.Module]:
    """The training run's networks as one module per exported stage."""
    _, config = read_checkpoint_meta(run_dir)
    if config.method == "diffusionad":
        from ..training.diffusionad import load_diffusionad

        return diffusionad_stages(load_diffusionad(run_dir))
    from ..training.patchcore import build_patch_features

    return {"feature_extractor": build_patch_features(config)}
