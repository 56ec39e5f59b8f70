"""A method that exists only in the tests: added through the registry alone (no edgead file knows it).

Model: the mean 8x8-pooled colour of the training images; map = |pooled(x) - mean| summed over
channels. One stage (feature_extractor), one extra (reference).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from edgead.core.bundle import Scoring
from edgead.core.errors import ConfigError
from edgead.core.preprocess import Preprocess
from edgead.data.datasets import load_dataset
from edgead.export.flow import MethodExport
from edgead.export.stages import feature_extractor_contract
from edgead.methods import MethodSpec
from edgead.runtime.pipelines.base import Pipeline, PipelineOutput
from edgead.training.checkpoint import save_checkpoint
from edgead.training.data import load_images, numpy_batch


@dataclass
class DummyConfig:
    scale: float = 1.0

    def check(self, config, where):
        if self.scale <= 0:
            raise ConfigError(f"{where}.scale must be > 0, got {self.scale}")


@dataclass
class DummyParams:
    scale: float


def train(config, run_dir: Path, resume=False, progress=True) -> dict:
    ds = load_dataset(config.data.path, config.data.validation_fraction, config.data.split_seed)
    spec = Preprocess.for_size(config.data.image_size)
    pooled = torch.nn.functional.avg_pool2d(numpy_batch(load_images([s.path for s in ds.train], spec), spec), 8)
    save_checkpoint(run_dir, config, None, {}, extra={"steps_done": 0, "dataset": ds.provenance()})
    save_file({"reference": pooled.mean(0).contiguous()}, str(run_dir / "reference.safetensors"))
    return {"images": len(ds.train)}


class DummyExport(MethodExport):
    def stages(self):
        return {"feature_extractor": (torch.nn.AvgPool2d(8), feature_extractor_contract(self.config.data.image_size, 3, 8))}

    def extras(self):
        return {"reference": load_file(str(self.run_dir / "reference.safetensors"))["reference"].numpy()}

    def params(self):
        return DummyParams(self.config.sections["dummy"].scale)

    def scoring(self):
        return Scoring("max")


class DummyPipeline(Pipeline):
    def __init__(self, bundle, backends):
        super().__init__(bundle, backends)
        self.reference = bundle.extra("reference")

    def run(self, x):
        timings = {}
        f = self.stage("feature_extractor", {"image": x}, timings)["features"]
        d = self.params.scale * np.abs(f - self.reference[None]).sum(1)
        h, w = x.shape[2:]
        maps = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in d]).astype(np.float32)
        return PipelineOutput(maps, None, timings)


SPEC = MethodSpec(
    name="dummy", summary="test-only method", config=DummyConfig, params=DummyParams,
    stages=("feature_extractor",), extras=("reference",),
    trainer="tests.dummy_method:train", exporter="tests.dummy_method:DummyExport",
    pipeline="tests.dummy_method:DummyPipeline",
)
