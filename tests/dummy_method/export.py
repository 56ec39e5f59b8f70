"""The test method's export: one stage and one extra."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from edgead.core.manifest import Scoring
from edgead.export.flow import MethodExport
from edgead.export.stages import feature_extractor_contract

from . import DummyParams


class DummyExport(MethodExport):
    def stages(self):
        return {
            "feature_extractor": (torch.nn.AvgPool2d(8), feature_extractor_contract(self.config.data.image_size, 3, 8))
        }

    def extras(self):
        return {"reference": load_file(str(self.run_dir / "reference.safetensors"))["reference"].numpy()}

    def params(self):
        return DummyParams(self.config.sections["dummy"].scale)

    def scoring(self):
        return Scoring("max")
