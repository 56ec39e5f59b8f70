"""D3AD at run time (no PyTorch):

    f, f16    = feature_extractor(x)                       adapted EfficientNet-Lite0, strides 8 and 16
    t_max     = KnnPrior(pool(f)) per image                 20 ... 80 (or d3ad.max_t when not dynamic)
    z0        = encoder(x)                                  scaled posterior mean
    z_hat     = GuidedDDIMScheduler: sqrt(a_tmax) z0, 10 steps of denoiser_step, w = 4
                (one batch: every image at its own timesteps)
    x_hat     = decoder(z_hat)
    latent    = upsample(mean_c |z_hat - z0|)              align-corners bilinear to the image size
    feature   = sum_{8, 16} upsample(1 - cos(f(x), f(x_hat)))
    recon     = w (latent - lmin)/(lmax - lmin) + (1 - w) (feature - fmin)/(fmax - fmin)     the paper's map
    knn       = nearest-neighbour distance of the input's patch descriptors to the training patches
    map       = fuse(recon, knn)                                   edgead.core.fusion

min/max and the fusion's statistics come from anomaly-free calibration images at export (the
reference normalises over the test set); smoothing (sigma 4) and the image score (max) are the
post-processor's.
"""

from __future__ import annotations

import time

import numpy as np

from ...core.bundle import Bundle
from ...core.errors import BundleError
from ...core.fusion import fuse
from ...core.knn import KnnPrior, adaptive_avg_pool
from ...core.maps import feature_distance_map, upsample
from ...runtime.backends import Backend
from ...runtime.patch_knn import PATCHES, PatchKnnMap
from ...runtime.pipeline import Pipeline, PipelineOutput
from . import sampler


class D3ADPipeline(Pipeline):
    def __init__(self, bundle: Bundle, backends: dict[str, Backend]):
        super().__init__(bundle, backends)
        p = self.params
        self.scheduler = sampler(p)
        try:
            self.prior = KnnPrior(bundle.extra("memory_bank"), bundle.extra("bin_edges"), p.knn_k, p.max_t)
        except ValueError as exc:
            raise BundleError(f"bundle {bundle.root}: {exc}") from None
        if len(self.prior.edges) != p.bins + 1:
            raise BundleError(
                f"bundle {bundle.root}: {len(self.prior.edges)} bin edges, the manifest declares {p.bins} bins"
            )
        features = bundle.manifest.stage("feature_extractor").outputs[0].shape[1]
        if self.prior.bank.shape[1] != features * p.prior_pool**2:
            raise BundleError(
                f"bundle {bundle.root}: the memory bank has {self.prior.bank.shape[1]} columns, "
                f"{features} channels pooled to {p.prior_pool}x{p.prior_pool} give "
                f"{features * p.prior_pool**2}"
            )
        self.knn = PatchKnnMap(bundle, p.fusion, p.knn_probes)
        self.noise = None
        if p.start == "noised":
            latent = bundle.manifest.stage("encoder").outputs[0].shape[1:]
            self.noise = bundle.extra("noise").astype(np.float32)
            if list(self.noise.shape[1:]) != list(latent):
                raise BundleError(f"bundle {bundle.root}: extra noise has shape {self.noise.shape}, latents {latent}")

    def run(self, x: np.ndarray) -> PipelineOutput:
        p, timings = self.params, {}
        b, size = x.shape[0], x.shape[2:]
        feats = self.stage("feature_extractor", {"image": x}, timings)
        t0 = time.perf_counter()
        pooled = adaptive_avg_pool(feats["features8"], p.prior_pool).reshape(b, -1)
        distance = self.prior.distances(pooled)
        t_max = self.prior.t_max(distance) if p.dynamic else np.full(b, p.max_t, np.int64)
        timings["prior"] = (time.perf_counter() - t0) * 1e3
        z0 = self.stage("encoder", {"image": x}, timings)["latent"]
        noise = None if self.noise is None else np.repeat(self.noise, b, axis=0)

        def denoise(x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
            return self.stage("denoiser_step", {"x_t": x_t.astype(np.float32), "t": t}, timings)["eps"]

        t1 = time.perf_counter()
        z_hat = self.scheduler.reconstruct(denoise, z0, t_max, noise).astype(np.float32)
        sampling = (time.perf_counter() - t1) * 1e3 - timings["denoiser_step"]
        x_hat = self.stage("decoder", {"latent": z_hat}, timings)["image"]
        feats_hat = self.stage("feature_extractor", {"image": x_hat}, timings)
        t2 = time.perf_counter()
        latent = upsample(np.abs(z_hat - z0).mean(1), size)
        names = ("features8", "features16")
        feature = feature_distance_map([feats[k] for k in names], [feats_hat[k] for k in names], size)
        (lmin, lmax), (fmin, fmax) = p.latent_range, p.feature_range
        recon = p.latent_weight * (latent - lmin) / max(lmax - lmin, 1e-12) + (1 - p.latent_weight) * (
            feature - fmin
        ) / max(fmax - fmin, 1e-12)
        timings["orchestration"] = sampling + (time.perf_counter() - t2) * 1e3
        t3 = time.perf_counter()
        knn = self.knn(feats[PATCHES], size)
        timings["knn"] = (time.perf_counter() - t3) * 1e3
        return PipelineOutput(
            fuse(recon, knn, p.fusion),
            x_hat,
            timings,
            {
                "latent_map": latent,
                "feature_map": feature,
                "reconstruction_map": recon,
                "knn_map": knn,
                "t_max": t_max,
                "prior_distance": distance,
            },
        )
