"""The bundle manifest's types (``manifest.yaml``): what a bundle declares, read and written by
``edgead.core.bundle`` with its integrity checks. This module holds data only; it imports no other part of
edgead but the stage contracts and the pre-processing declaration it embeds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .contracts import StageName, TensorSpec
from .errors import BundleError
from .preprocess import Preprocess


@dataclass
class StageEntry:
    name: StageName
    file: str
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int
    description: str = ""
    batch_factor: int = 1
    """Graph samples per frame (engines for frame batch B are built for B * batch_factor)."""


@dataclass
class ExtraEntry:
    name: str
    file: str
    sha256: str


@dataclass
class EngineFile:
    stage: StageName
    file: str
    sha256: str


@dataclass
class EngineSet:
    """TensorRT engines of one flavour, built for one device (or, TensorRT-RTX, for target compute
    capabilities) and one precision."""

    directory: str
    gpu: str
    compute_capability: str
    tensorrt_version: str
    precision: Literal["fp16", "fp32", "int8"]
    obtained_precision: str
    max_batch: int
    files: list[EngineFile]
    flavour: Literal["tensorrt", "rtx"] = "tensorrt"
    targets: list[str] = field(default_factory=list)
    """TensorRT-RTX: compute capabilities built for ([]: the builder's portable default)."""
    validated: bool = True
    """Compared with ONNX Runtime on real images when built (not possible on a build server without a GPU)."""


@dataclass
class Int8Stage:
    stage: StageName
    file: str
    sha256: str


@dataclass
class Int8Set:
    """INT8 graphs beside the fp32 ones (ONNX Runtime static quantisation, QDQ, per-channel weights), for
    the stages whose scores held on good images the quantisation did not see; the others stay fp32."""

    calibration: str
    """Folder of good images the activation ranges came from."""
    n_calibration: int
    n_held_out: int
    tolerance: float
    """Largest score (and p99 map) change allowed, as a share of the margin between the good images'
    mean and the threshold."""
    stages: list[Int8Stage]
    kept_fp32: dict[str, str] = field(default_factory=dict)
    """Stage -> why it stays fp32."""
    score_change: float = 0.0
    """Largest score change of the accepted set on the held-out images, as a share of the margin."""
    map_change: float = 0.0
    """Largest p99 map change of the accepted set, as a share of the pixel margin."""
    decisions_changed: int = 0


@dataclass
class Stats:
    min: float
    max: float
    threshold: float
    mean: float
    std: float


@dataclass
class Calibration:
    """Thresholds and normalisation from anomaly-free images (never test images)."""

    rule: Literal["tolerance", "k_sigma"]
    n_images: int
    source: str
    image: Stats
    pixel: Stats
    k: float
    """The factor used: the tolerance factor, or k_sigma."""
    transform: Literal["logit", "log", "none"] = "none"
    target_frr: float | None = None
    confidence: float | None = None
    threshold_interval: list[float] | None = None
    """90% bootstrap interval of the image threshold over the calibration images."""
    calibration_frr: float = 0.0
    """Share of the calibration images themselves above the threshold."""
    synthetic_miss_rate: float | None = None
    """Share of synthetic anomalies (made from the calibration images) below the threshold."""
    warnings: list[str] = field(default_factory=list)
    good_scores: list[float] = field(default_factory=list)
    """Image scores of the good images the threshold was fitted on: what a later ``edgead calibrate`` screens its
    images against (a few defective parts among them would raise the threshold)."""
    synthetic_scores: list[float] = field(default_factory=list)
    """Image scores of the synthetic anomalies export made from held-out good images: what a new threshold is
    checked against (one that passes many more of them than this one did is refused unless accepted)."""


@dataclass
class Scoring:
    """Anomaly map -> image score (anomalib's post-processor, read by ``runtime.postprocess``)."""

    image_score: str
    """A score rule's name (core.scoring.SCORE_RULES)."""
    smoothing_sigma: float = 0.0
    """Gaussian blur of the map before scoring (pixels; 0 = off)."""
    top_k: int = 1
    """top_k_mean: mean of the k largest map values."""
    pool: int = 1
    """pooled_max: max after a pool x pool average pool (stride 1)."""
    unit_interval: bool = False
    """Maps and scores are probabilities in [0, 1] (calibration then works on their logit)."""


@dataclass
class Manifest:
    schema_version: int
    edgead_version: str
    method: str
    created: str
    preprocess: Preprocess
    scoring: Scoring
    stages: list[StageEntry]
    params: Any = None
    """The method's parameters: an instance of its registered ``params`` dataclass."""
    calibration: Calibration | None = None
    """Thresholds of a single-product bundle."""
    products: dict[str, Calibration] = field(default_factory=dict)
    """Thresholds per product of a bundle that serves several (DiAD); ``calibration`` is then None."""
    extras: list[ExtraEntry] = field(default_factory=list)
    engines: list[EngineSet] = field(default_factory=list)
    int8: Int8Set | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def calibration_for(self, product: str | None) -> Calibration | None:
        """The thresholds to use for ``product`` (None: the bundle's only one); BundleError if unknown."""
        if not self.products:
            if product is not None:
                raise BundleError(f"this bundle serves a single product; leave out the product ({product!r})")
            return self.calibration
        if product is None:
            if len(self.products) == 1:
                return next(iter(self.products.values()))
            raise BundleError(
                f"this bundle serves several products ({', '.join(self.products)}); "
                "choose one with --product NAME (Detector.load(..., product=NAME))"
            )
        if product not in self.products:
            raise BundleError(f"unknown product {product!r}; this bundle knows: {', '.join(self.products)}")
        return self.products[product]

    def training_hashes(self, key: str = "train_hashes") -> set[str]:
        """Content hashes of the model's training images (``data.datasets.content_hash``), every product's;
        ``key="validation_hashes"``: of the held-out images its threshold was calibrated on."""
        recorded = self.provenance.get("dataset", {})
        sets = recorded if isinstance(recorded, list) else [recorded]  # one entry per product (DiAD)
        return {h for ds in sets if isinstance(ds, dict) for h in ds.get(key, []) if isinstance(h, str)}

    def stage(self, name: str) -> StageEntry:
        for s in self.stages:
            if s.name == name:
                return s
        raise BundleError(f"bundle has no stage {name!r}; it has {', '.join(s.name for s in self.stages)}")
