"""D3AD's part of the export flow: encoder, denoiser_step, decoder and feature_extractor graphs; the
kNN prior's memory bank and bin edges; the patch memory bank; the map normalisation and the fusion
with the patch kNN map, fitted on anomaly-free calibration images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.bundle import Bundle
from ...core.contracts import LATENT_CHANNELS, latent_noise, latent_size
from ...core.knn import search_cells
from ...core.manifest import Scoring
from ...core.methods import params_from
from ...export.cross_fit import patch_bank_scores
from ...export.flow import MethodExport
from ...export.fusion_weight import fit_fusion
from ...export.stages import (
    DenoiserStep,
    denoiser_step_contract,
    features_contract,
    latent_contracts,
)
from ...runtime.calibration import MoreGood
from ...training.patch_bank import load_bank_sources
from . import D3ADParams


class D3ADExport(MethodExport):
    def __init__(self, *args):
        super().__init__(*args)
        from ...training.backbone import PATCH_LAYERS, FeatureStages, load_backbone
        from ...training.checkpoint import load_weights
        from ...training.latent.autoencoder import load_codec
        from ...training.latent.networks import build_latent_unet, run_network
        from ...training.staged import require_complete
        from .features import MAP_STAGES
        from .train import STAGES, imagenet_prior, load_prior, patch_bank_for

        needed = [s for s in STAGES if not (s == "adapt" and not self.config.d3ad.adapt)]
        stages = require_complete(self.meta, needed, self.run_dir)
        self.encoder, self.decoder = load_codec(self.run_dir, self.config, self.meta)
        size = self.config.data.image_size
        net = run_network(self.meta, self.config)
        self.unet = load_weights(self.run_dir, "denoiser", build_latent_unet(net, size)).eval()
        backbone = load_backbone(self.config.backbone.weights)
        if self.config.d3ad.adapt:
            load_weights(self.run_dir, "feature_extractor", backbone)
        self.features = FeatureStages(backbone.eval(), MAP_STAGES, PATCH_LAYERS, self.config.d3ad.knn.aggregation)
        adapted = self.config.d3ad.adapt
        self.prior = load_prior(self.run_dir, adapted)
        if self.prior is None:  # adapt=false on a run trained with adaptation: the prior of ImageNet features
            self.prior = imagenet_prior(self.config)
        self.patch_bank = patch_bank_for(self.run_dir, self.config, stages, self.features)
        knn = self.config.d3ad.knn
        self.cells, self.probes = search_cells(
            "patch_bank", np.asarray(self.patch_bank, np.float32), knn.exact_below, knn.probes, self.config.train.seed
        )
        # which training image each bank row came from, when the bank exported is the run's own
        fitted_now = bool(stages["patches"].get("adapted", True)) != self.config.d3ad.adapt
        self.bank_sources = None if fitted_now else load_bank_sources(self.run_dir)

    def stages(self):
        size = self.config.data.image_size
        encoder, decoder = latent_contracts(size)
        return {
            "encoder": (self.encoder, encoder),
            "denoiser_step": (
                DenoiserStep(self.unet),
                denoiser_step_contract(latent_size(size), channels=LATENT_CHANNELS),
            ),
            "decoder": (self.decoder, decoder),
            "feature_extractor": (
                self.features,
                features_contract(
                    size,
                    self.features.stages,
                    "EfficientNet-Lite0 (domain-adapted) at strides 8, 16; patch descriptors",
                    patches=self.features.patches,
                ),
            ),
        }

    def extras(self):
        out = {
            "memory_bank": self.prior["memory_bank"].astype(np.float32),
            "bin_edges": self.prior["bin_edges"],
            "patch_bank": self.patch_bank,
            **self.cells,
        }
        if self.config.d3ad.start == "noised":  # fixed per bundle: the same frame always gets the same score
            out["noise"] = latent_noise(self.config.data.image_size, self.config.d3ad.noise_seed)
        return out

    def params(self) -> D3ADParams:
        d = self.config.d3ad
        return params_from(d, D3ADParams, knn_probes=self.probes)

    def scoring(self) -> Scoring:
        return Scoring("max", self.config.d3ad.smoothing_sigma)

    def fit_statistics(self, bundle: Bundle, images: list[Path], progress: bool = False) -> None:
        """Min and max of the latent and feature maps over the anomaly-free calibration images."""
        from ...data.io import read_image
        from ...runtime.detector import Detector

        ranges = {"latent_map": [np.inf, -np.inf], "feature_map": [np.inf, -np.inf]}
        with Detector(bundle, backend="onnxruntime-cpu", require_calibration=False) as det:
            for i in range(0, len(images), 4):
                parts = det.score_batch([read_image(p) for p in images[i : i + 4]]).components
                for k, r in ranges.items():
                    r[0], r[1] = min(r[0], float(parts[k].min())), max(r[1], float(parts[k].max()))
        bundle.manifest.params.latent_range = ranges["latent_map"]
        bundle.manifest.params.feature_range = ranges["feature_map"]
        bundle.manifest.provenance["export"]["fusion"] = fit_fusion(
            bundle, images, self.config.d3ad.knn, self.config.data.foreground
        )

    def more_good_scores(self, bundle: Bundle, data_root: Path, progress: bool = False) -> MoreGood | None:
        return patch_bank_scores(self.bank_sources, bundle, data_root, progress)
