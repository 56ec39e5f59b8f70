"""The PatchCore baseline's part of the export flow: feature_extractor graph + memory bank."""

from __future__ import annotations

import numpy as np
from safetensors.torch import load_file

from ...core.errors import EdgeadError
from ...core.manifest import Scoring
from ...export.flow import MethodExport
from ...export.stages import feature_extractor_contract
from . import PatchCoreParams


class PatchCoreExport(MethodExport):
    def __init__(self, *args):
        super().__init__(*args)
        from .train import build_patch_features

        bank_file = self.run_dir / "memory_bank.safetensors"
        if not bank_file.is_file():
            raise EdgeadError(
                f"{self.run_dir} has no memory_bank.safetensors; fit it with 'edgead train --method patchcore'"
            )
        self.bank = load_file(str(bank_file))["memory_bank"].numpy().astype(np.float32)
        self.model = build_patch_features(self.config)

    def stages(self):
        size = self.config.data.image_size
        return {
            "feature_extractor": (self.model, feature_extractor_contract(size, self.model.channels, self.model.stride))
        }

    def extras(self):
        return {"memory_bank": self.bank}

    def params(self) -> PatchCoreParams:
        return PatchCoreParams(self.model.stride, self.config.patchcore.neighbourhood, int(self.bank.shape[0]))

    def scoring(self) -> Scoring:
        return Scoring("max", self.config.patchcore.smoothing_sigma)
