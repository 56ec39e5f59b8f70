"""DiffusionAD's part of the export flow: denoiser_step (x_ts and x_tb in one batch) and segmenter."""

from __future__ import annotations

from ...core.contracts import StageContract, image_spec
from ...core.manifest import Scoring
from ...core.schedulers import alphas_cumprod
from ...export.flow import MethodExport
from ...export.stages import DenoiserStep, denoiser_step_contract
from . import DiffusionADParams


def segmenter_contract(size: int) -> StageContract:
    return StageContract(
        "segmenter",
        (image_spec("image", size), image_spec("reconstruction", size)),
        (image_spec("mask", size, 1),),
        "anomaly probability per pixel from concat(image, reconstruction), both in [-1, 1]",
    )


class DiffusionADExport(MethodExport):
    def __init__(self, *args):
        super().__init__(*args)
        from .train import load_model

        self.model = load_model(self.run_dir)

    def stages(self):
        size = self.config.data.image_size
        # the pipeline feeds [x_ts; x_tb]: two denoiser samples per frame
        return {
            "denoiser_step": (DenoiserStep(self.model.denoiser), denoiser_step_contract(size, batch_factor=2)),
            "segmenter": (self.model.segmenter, segmenter_contract(size)),
        }

    def extras(self):
        # fixed noise e1, e2 (seeded): the same frame always gets the same score
        from .train import fixed_noise

        noise_s, noise_b = fixed_noise(self.config)
        return {"noise_s": noise_s.numpy(), "noise_b": noise_b.numpy()}

    def params(self) -> DiffusionADParams:
        d = self.config.diffusionad
        s = d.schedule
        ab = alphas_cumprod(s.num_train_timesteps, s.beta_start, s.beta_end, s.beta_schedule)
        return DiffusionADParams(
            t_s=d.t_s,
            t_b=d.t_b,
            alpha_bar_s=float(ab[d.t_s]),
            alpha_bar_b=float(ab[d.t_b]),
            guidance_w=d.guidance_w,
            schedule=s,
        )

    def scoring(self) -> Scoring:
        d = self.config.diffusionad
        return Scoring("top_k_mean", d.smoothing_sigma, top_k=d.top_k, unit_interval=True)  # mask probabilities
