"""DiffusionAD at run time: norm-guided one-step reconstruction, then the segmentation network.

x_ts, x_tb = add_noise(x0, e1, t_s), add_noise(x0, e2, t_b)   fixed noise from the bundle
eps        = denoiser_step([x_ts; x_tb], [t_s; t_b])          one batched call
x0_hat     = norm-guided step (edgead.core.schedulers.norm_guided)
map        = segmenter(x0, x0_hat)[:, 0]
"""

from __future__ import annotations

import time

import numpy as np

from ...core.bundle import Bundle
from ...core.errors import BundleError
from ...core.schedulers import NormGuidedOneStepScheduler
from ...runtime.backends import Backend
from ...runtime.pipeline import Pipeline, PipelineOutput


class DiffusionADPipeline(Pipeline):
    def __init__(self, bundle: Bundle, backends: dict[str, Backend]):
        super().__init__(bundle, backends)
        p = self.params
        self.scheduler = NormGuidedOneStepScheduler(p.alpha_bar_s, p.alpha_bar_b, p.guidance_w)
        h, w = bundle.manifest.preprocess.image_size
        self.noise_s = bundle.extra("noise_s").astype(np.float32)
        self.noise_b = bundle.extra("noise_b").astype(np.float32)
        for name, noise in (("noise_s", self.noise_s), ("noise_b", self.noise_b)):
            if noise.shape != (1, 3, h, w):
                raise BundleError(
                    f"bundle {bundle.root}: extra {name} has shape {noise.shape}, "
                    f"the manifest's image size needs (1, 3, {h}, {w})"
                )

    def run(self, x: np.ndarray) -> PipelineOutput:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        b = x.shape[0]
        x_ts, x_tb = self.scheduler.noised_inputs(x, self.noise_s, self.noise_b)
        x_t = np.concatenate([x_ts, x_tb])
        t = np.array([self.params.t_s] * b + [self.params.t_b] * b, dtype=np.float32)
        orchestration = time.perf_counter() - t0
        eps = self.stage("denoiser_step", {"x_t": x_t, "t": t}, timings)["eps"]
        t1 = time.perf_counter()
        x0_hat = self.scheduler.step(x_ts, x_tb, eps[:b], eps[b:]).astype(np.float32)
        orchestration += time.perf_counter() - t1
        mask = self.stage("segmenter", {"image": x, "reconstruction": x0_hat}, timings)["mask"]
        timings["orchestration"] = orchestration * 1e3
        return PipelineOutput(np.ascontiguousarray(mask[:, 0], dtype=np.float32), x0_hat, timings)
