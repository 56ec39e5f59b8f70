"""The diffusers ``UNet2DModel`` every method's denoiser is built from, with attention only where asked.

``attention_resolutions`` lists the feature-map sizes (in pixels of the UNet's input grid) that
get self-attention, in the down/up blocks *and* in the middle block. diffusers always puts
attention in the middle block; at a large middle resolution that dominates time and memory
(the 3-level ``tiny`` DiffusionAD at 256 px attended over 64x64 = 4,096 tokens: 1.17 GB and 3x the
time of the 4-level ``s`` preset for one batch of two), so the middle block follows the same rule.
"""

from __future__ import annotations


def build_unet(
    sample_size: int,
    in_channels: int,
    out_channels: int,
    block_out_channels: tuple[int, ...],
    layers_per_block: int,
    attention_resolutions: tuple[int, ...],
    attention_head_dim: int,
    norm_num_groups: int,
):
    from diffusers import UNet2DModel

    down = []
    for i in range(len(block_out_channels)):
        res = sample_size // (2**i)
        down.append("AttnDownBlock2D" if res in attention_resolutions else "DownBlock2D")
    up = [b.replace("Down", "Up") for b in reversed(down)]
    middle = sample_size // 2 ** (len(block_out_channels) - 1)
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=block_out_channels,
        layers_per_block=layers_per_block,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        attention_head_dim=attention_head_dim,
        norm_num_groups=norm_num_groups,
        add_attention=middle in attention_resolutions,
    )
