"""PyTorch eager stages behind the runtime's Backend interface.

Lets the exact runtime pipeline (pre-processing, orchestration, scoring) run with PyTorch
instead of ONNX Runtime, so a benchmark or parity check differs in the stage engine only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..core.bundle import Bundle
from ..runtime.backends.base import Backend


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
