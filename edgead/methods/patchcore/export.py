"""The PatchCore baseline's part of the export flow: feature_extractor graph + memory bank."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from ...core.bundle import Bundle
from ...core.errors import EdgeadError
from ...core.knn import search_cells
from ...core.manifest import Scoring
from ...export.cross_fit import cross_fitted_scores
from ...export.flow import MethodExport
from ...export.stages import feature_extractor_contract
from ...runtime.calibration import MoreGood
from ...training.patch_bank import load_bank_sources
from . import PatchCoreParams


class PatchCoreExport(MethodExport):
    def __init__(self, *args):
        super().__init__(*args)
        from .train import BANK_FILE, build_patch_features

        bank_file = self.run_dir / BANK_FILE
        if not bank_file.is_file():
            raise EdgeadError(
                f"{self.run_dir} has no memory_bank.safetensors; fit it with 'edgead train --method patchcore'"
            )
        self.bank = load_file(str(bank_file))["memory_bank"].numpy().astype(np.float32)
        self.model = build_patch_features(self.config)
        pc = self.config.patchcore
        self.cells, self.probes = search_cells(
            "memory_bank", self.bank, pc.exact_below, pc.probes, self.config.train.seed
        )

    def stages(self):
        size = self.config.data.image_size
        return {
            "feature_extractor": (self.model, feature_extractor_contract(size, self.model.channels, self.model.stride))
        }

    def extras(self):
        return {"memory_bank": self.bank, **self.cells}

    def params(self) -> PatchCoreParams:
        return PatchCoreParams(
            self.model.stride, self.config.patchcore.neighbourhood, int(self.bank.shape[0]), self.probes
        )

    def scoring(self) -> Scoring:
        return Scoring("max", self.config.patchcore.smoothing_sigma)

    def more_good_scores(self, bundle: Bundle, data_root: Path, progress: bool = False) -> MoreGood | None:
        """Every training image scored against the memory bank without the rows it contributed: as if unseen.
        Three held-out images alone put the tolerance limit far above good parts (the threshold passed every
        defect of hazelnut_toy); with the training images it rests on hundreds."""
        from .train import BANK_FILE, BANK_IMAGES, BANK_SOURCE

        recorded = load_bank_sources(self.run_dir, BANK_FILE, BANK_SOURCE, BANK_IMAGES)
        return cross_fitted_scores(bundle, data_root, recorded, lambda p: p.scorer, progress)
