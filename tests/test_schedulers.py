import numpy as np
import pytest
import torch

from edgead.core.schedulers import NormGuidedOneStepScheduler, alphas_cumprod


def test_alphas_match_diffusers():
    from diffusers import DDPMScheduler

    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").alphas_cumprod.numpy()
    np.testing.assert_allclose(alphas_cumprod(), ref, rtol=1e-6)


def test_unknown_schedule_is_rejected():
    with pytest.raises(ValueError, match="beta_schedule must be one of 'linear'"):
        alphas_cumprod(beta_schedule="cosine")


def test_perfect_noise_prediction_reconstructs_the_input():
    """If eps_theta returns the true noise, eqs. (6)-(8) give back x0 exactly."""
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, (2, 3, 8, 8))
    e1, e2 = rng.standard_normal(x0.shape), rng.standard_normal(x0.shape)
    sch = NormGuidedOneStepScheduler.from_schedule(200, 400)
    x_ts, x_tb = sch.noised_inputs(x0, e1, e2)
    np.testing.assert_allclose(sch.step(x_ts, x_tb, e1, e2), x0, atol=1e-12)


def test_golden_scalar_step():
    """Hand-computed: a_s=0.64, a_b=0.25, w=1, x_ts=0.5, x_tb=0.2, eps_s=0.1, eps_b=-0.3."""
    sch = NormGuidedOneStepScheduler(0.64, 0.25, 1.0)
    n = (0.2 - np.sqrt(0.75) * -0.3) / 0.5  # 0.919615...
    n_ts = 0.8 * n + 0.6 * 0.1
    eps_g = 0.1 - 0.6 * (n_ts - 0.5)
    expected = (0.5 - 0.6 * eps_g) / 0.8
    out = sch.step(np.array(0.5), np.array(0.2), np.array(0.1), np.array(-0.3))
    assert float(out) == pytest.approx(expected, abs=1e-12)
    assert float(out) == pytest.approx(0.68306148, abs=1e-7)


def test_numpy_and_torch_agree():
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal((1, 3, 4, 4)).astype(np.float32) for _ in range(4)]
    sch = NormGuidedOneStepScheduler.from_schedule(200, 400, 0.7)
    a = sch.step(*arrays)
    b = sch.step(*[torch.from_numpy(x) for x in arrays]).numpy()
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert a.min() >= -1 and a.max() <= 1
