"""``cell_cnn``: a plain convolutional network for small single-cell crops, registered with timm.

The ResNets of timm quarter the input in their stem (7x7 stride 2 and a max pool), which erases the 1-2 px dots,
speckles and fibres that tell many protein patterns apart on a 64 px crop. ``cell_cnn`` keeps the full
resolution in its first block: each block is conv 3x3 - BN - ReLU (twice with ``double``) then a 2x2 max pool.
Build it as any timm model: ``timm.create_model("cell_cnn", in_chans=4, widths=(16, 32, 64, 128))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from timm.models import register_model
from torch import nn


def _block(in_chans: int, out_chans: int, double: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(2 if double else 1):
        layers += [
            nn.Conv2d(in_chans if i == 0 else out_chans, out_chans, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_chans),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


class CellCNN(nn.Module):
    """Blocks of (conv 3x3 - BN - ReLU) x 1 or 2 and a 2x2 max pool; ``forward_features`` gives
    (N, widths[-1], S / 2^len(widths), S / 2^len(widths)).

    Args:
        in_chans: input channels (4 RGBY, 5 with a mask channel).
        widths: output channels of each block.
        double: two convolutions per block.
        num_classes, global_pool: accepted for timm's ``create_model``; the network has no head of its own.
    """

    def __init__(
        self,
        in_chans: int = 4,
        widths: Sequence[int] = (16, 32, 64, 128),
        double: bool = False,
        num_classes: int = 0,
        global_pool: str = "",
        **_: Any,
    ):
        super().__init__()
        if num_classes:
            raise ValueError("cell_cnn has no classifier of its own: build it with num_classes=0")
        chans = [in_chans, *widths]
        self.blocks = nn.Sequential(*(_block(chans[i], chans[i + 1], double) for i in range(len(widths))))
        self.num_features = widths[-1]

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, S, S) -> (N, num_features, h, w)."""
        return self.blocks(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images)


@register_model
def cell_cnn(pretrained: bool = False, **kwargs: Any) -> CellCNN:
    """timm entry point (no pretrained weights exist)."""
    if pretrained:
        raise ValueError("cell_cnn has no pretrained weights")
    kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")}
    return CellCNN(**kwargs)
