"""The training speed options: CUDA-only (a CPU run is what it was without them); the sync-free crop."""

import torch

from edgead.core.config import TrainConfig
from edgead.training import precision
from edgead.training.latent.autoencoder import _random_crop


def test_bf16_and_channels_last_apply_on_cuda_only():
    tc = TrainConfig(mixed_precision=True, channels_last=True)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not precision.bf16(tc, cpu) and precision.bf16(tc, cuda)
    assert precision.memory_format(tc, cpu) == torch.contiguous_format
    assert precision.memory_format(tc, cuda) == torch.channels_last
    assert not precision.bf16(TrainConfig(), cuda)
    assert precision.memory_format(TrainConfig(), cuda) == torch.contiguous_format
    with precision.autocast(tc, cpu):  # a no-op on the CPU: float32 stays float32
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_random_crop_takes_the_window_its_offsets_name():
    x = torch.arange(2 * 3 * 10 * 12, dtype=torch.float32).view(2, 3, 10, 12)
    g = torch.Generator().manual_seed(5)
    crop = _random_crop(x, 4, g)
    g.manual_seed(5)
    top, left = int(torch.randint(0, 7, (1,), generator=g)), int(torch.randint(0, 9, (1,), generator=g))
    assert torch.equal(crop, x[..., top : top + 4, left : left + 4])
    assert _random_crop(x, 10, g) is x  # a crop as large as the image is the image
