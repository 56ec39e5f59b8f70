"""DiAD's part of the export flow: encoder, hint_encoder (C(x0), once per image), denoiser_step
(z_t, t, hint), decoder and feature_extractor graphs; the start noise fixed per bundle; the patch
memory bank and the fusion of the reconstruction map with the patch kNN map."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.bundle import Bundle
from ...core.contracts import StageContract, TensorSpec, image_spec, latent_size
from ...core.knn import search_cells
from ...core.manifest import Scoring
from ...core.methods import params_from
from ...export.cross_fit import patch_bank_scores
from ...export.flow import MethodExport
from ...export.fusion_weight import fit_fusion
from ...export.stages import features_contract, latent_contracts
from ...runtime.calibration import MoreGood
from . import DiADParams


class DiADExport(MethodExport):
    def __init__(self, *args):
        super().__init__(*args)
        from ...training.latent.autoencoder import load_codec
        from ...training.latent.networks import run_network
        from ...training.patch_bank import load_bank_sources, load_patch_bank
        from ...training.staged import require_complete
        from .train import _zero_hint, fixed_noise, load_guided, map_features

        d = self.config.diad
        needed = ["autoencoder", "denoiser", *(["guidance"] if d.sg else []), "select", "patches"]
        stages = require_complete(self.meta, needed, self.run_dir)
        self.encoder, self.decoder = load_codec(self.run_dir, self.config, self.meta)
        net = run_network(self.meta, self.config)
        self.denoiser, hint = load_guided(self.run_dir, self.config, net)
        self.hint = hint if hint is not None else _zero_hint(net)
        self.hint_channels = net.block_out_channels[0]
        self.features = map_features(self.config, patches=True)
        self.patch_bank = load_patch_bank(self.run_dir)
        knn = self.config.diad.knn
        self.cells, self.probes = search_cells(
            "patch_bank", np.asarray(self.patch_bank, np.float32), knn.exact_below, knn.probes, self.config.train.seed
        )
        self.bank_sources = load_bank_sources(self.run_dir)  # which training image each bank row came from
        self.noise = fixed_noise(self.config).numpy()
        self.start_step = d.start_step if d.start_step is not None else int(stages["select"]["start_step"])

    def stages(self):
        size = self.config.data.image_size
        h = latent_size(size)
        encoder, decoder = latent_contracts(size)
        hint = StageContract(
            "hint_encoder",
            (image_spec("image", size),),
            (image_spec("hint", h, self.hint_channels),),
            "C(x0): the image on the latent grid (DiAD's conditioning), once per image",
        )
        denoiser = StageContract(
            "denoiser_step",
            (image_spec("x_t", h, 4), TensorSpec("t", "float32", ["batch"]), image_spec("hint", h, self.hint_channels)),
            (image_spec("eps", h, 4),),
            "eps(z_t, t, C(x0)): the latent UNet steered by the Semantic-Guided network",
        )
        return {
            "encoder": (self.encoder, encoder),
            "hint_encoder": (self.hint, hint),
            "denoiser_step": (self.denoiser, denoiser),
            "decoder": (self.decoder, decoder),
            # the input and its reconstruction in one call: two samples per frame
            "feature_extractor": (
                self.features,
                features_contract(
                    size,
                    self.features.stages,
                    "EfficientNet-Lite0 (ImageNet) at strides 4, 8, 16; patch descriptors",
                    batch_factor=2,
                    patches=self.features.patches,
                ),
            ),
        }

    def extras(self):
        return {
            "noise": self.noise,
            "patch_bank": self.patch_bank,
            **self.cells,
        }

    def params(self) -> DiADParams:
        d = self.config.diad
        return params_from(d, DiADParams, start_step=self.start_step, knn_probes=self.probes)

    def scoring(self) -> Scoring:
        return Scoring("pooled_max", self.config.diad.smoothing_sigma, pool=self.config.diad.pool)

    def fit_statistics(self, bundle: Bundle, images: list[Path], progress: bool = False) -> None:
        bundle.manifest.provenance["export"]["fusion"] = fit_fusion(
            bundle, images, self.config.diad.knn, self.config.data.foreground
        )

    def more_good_scores(self, bundle: Bundle, data_root: Path, progress: bool = False) -> MoreGood | None:
        return patch_bank_scores(self.bank_sources, bundle, data_root, progress)
