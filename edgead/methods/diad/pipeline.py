"""DiAD at run time (no PyTorch):

    z0, hint  = encoder(x), hint_encoder(x)                   C(x0) once per image, not per step
    z_T       = sqrt(a) z0 + sqrt(1 - a) noise at T_start - 1   noise fixed per bundle
    z_hat     = DDIM, eta 0, 10 steps (T_start - 99, ..., 1) of denoiser_step(z_t, t, hint)
    x_hat     = decoder(z_hat)
    recon     = sum over strides 4, 8, 16 of upsample(1 - cos(f(x), f(x_hat)))   one feature call for both
    knn       = nearest-neighbour distance of the input's patch descriptors to the training patches
    map       = fuse(recon, knn)                                                  edgead.core.fusion

Smoothing (sigma 5) and the image score (max after an 8x8 average pool) are the post-processor's.
"""

from __future__ import annotations

import time

import numpy as np

from ...core.bundle import Bundle
from ...core.errors import BundleError
from ...core.fusion import fuse
from ...core.maps import feature_distance_map
from ...runtime.backends import Backend
from ...runtime.patch_knn import PATCHES, PatchKnnMap
from ...runtime.pipeline import Pipeline, PipelineOutput
from . import sampler


class DiADPipeline(Pipeline):
    def __init__(self, bundle: Bundle, backends: dict[str, Backend]):
        super().__init__(bundle, backends)
        p = self.params
        self.scheduler = sampler(p)
        latent = bundle.manifest.stage("encoder").outputs[0].shape[1:]
        self.noise = bundle.extra("noise").astype(np.float32)
        if list(self.noise.shape) != [1, *latent]:
            raise BundleError(f"bundle {bundle.root}: extra noise has shape {self.noise.shape}, latents [1, {latent}]")
        self.names = [o.name for o in bundle.manifest.stage("feature_extractor").outputs if o.name != PATCHES]
        self.knn = PatchKnnMap(bundle, self.params.fusion, self.params.knn_probes)

    def run(self, x: np.ndarray) -> PipelineOutput:
        timings: dict[str, float] = {}
        b, size = x.shape[0], x.shape[2:]
        z0 = self.stage("encoder", {"image": x}, timings)["latent"]
        hint = self.stage("hint_encoder", {"image": x}, timings)["hint"]

        def denoise(z_t: np.ndarray, t: np.ndarray) -> np.ndarray:
            return self.stage("denoiser_step", {"x_t": z_t.astype(np.float32), "t": t, "hint": hint}, timings)["eps"]

        t0 = time.perf_counter()
        t_start = np.full(b, self.params.start_step, np.int64)
        z_hat = self.scheduler.reconstruct(denoise, z0, t_start, np.repeat(self.noise, b, axis=0)).astype(np.float32)
        loop = (time.perf_counter() - t0) * 1e3
        x_hat = self.stage("decoder", {"latent": z_hat}, timings)["image"]
        feats = self.stage("feature_extractor", {"image": np.concatenate([x, x_hat])}, timings)
        t1 = time.perf_counter()
        recon = feature_distance_map([feats[n][:b] for n in self.names], [feats[n][b:] for n in self.names], size)
        timings["orchestration"] = loop - timings["denoiser_step"] + (time.perf_counter() - t1) * 1e3
        timings["sampling_loop"] = loop
        t2 = time.perf_counter()
        knn = self.knn(feats[PATCHES][:b], size)
        timings["knn"] = (time.perf_counter() - t2) * 1e3
        return PipelineOutput(
            fuse(recon, knn, self.params.fusion), x_hat, timings, {"reconstruction_map": recon, "knn_map": knn}
        )
