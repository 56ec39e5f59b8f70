"""A method that exists only in the tests: added through the registry alone (no edgead file knows it), laid out
as every method is, one folder: this declaration (torch-free), ``pipeline.py``, ``export.py``, ``train.py``.

Model: the mean 8x8-pooled colour of the training images; map = |pooled(x) - mean| summed over
channels. One stage (feature_extractor), one extra (reference).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgead.core.errors import ConfigError
from edgead.methods import MethodSpec


@dataclass
class DummyConfig:
    scale: float = 1.0

    def check(self, config, where):
        if self.scale <= 0:
            raise ConfigError(f"{where}.scale must be > 0, got {self.scale}")


@dataclass
class DummyParams:
    scale: float


SPEC = MethodSpec(
    name="dummy",
    summary="test-only method",
    config=DummyConfig,
    params=DummyParams,
    stages=("feature_extractor",),
    extras=("reference",),
    trainer="tests.dummy_method.train:train",
    exporter="tests.dummy_method.export:DummyExport",
    pipeline="tests.dummy_method.pipeline:DummyPipeline",
)
