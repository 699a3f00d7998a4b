"""Test-time augmentation of image probabilities: none, flips (mean), or five crops (four corners and the centre)
combined by their maximum or mean.

Five-crop max is the Atlas 2018 choice: a protein visible in one crop only is still caught. The classifier is
fully convolutional with global average pooling, so a crop is fed at its own size (the training pixel scale).
"""

from __future__ import annotations

import torch
from torch import nn

IMAGE_TTA_MODES = ("none", "flips", "five_crop_max", "five_crop_mean")


def five_crops(images: torch.Tensor, crop_fraction: float) -> list[torch.Tensor]:
    """Top-left, top-right, bottom-left, bottom-right and centre crops of side ``crop_fraction`` x the image side.

    Args:
        images: (N, C, H, W).
        crop_fraction: in (0, 1].

    Returns:
        five (N, C, h, w) tensors, h = round(crop_fraction * H).
    """
    if not 0 < crop_fraction <= 1:
        raise ValueError(f"crop_fraction must lie in (0, 1], got {crop_fraction}")
    height, width = images.shape[-2:]
    h, w = max(1, round(crop_fraction * height)), max(1, round(crop_fraction * width))
    top, left = (height - h) // 2, (width - w) // 2
    return [
        images[..., :h, :w],
        images[..., :h, width - w :],
        images[..., height - h :, :w],
        images[..., height - h :, width - w :],
        images[..., top : top + h, left : left + w],
    ]


def tta_image_views(images: torch.Tensor, tta: str, crop_fraction: float = 0.75) -> list[torch.Tensor]:
    """The views of (N, C, H, W) images one TTA mode feeds to the classifier."""
    if tta not in IMAGE_TTA_MODES:
        raise ValueError(f"image TTA must be one of {IMAGE_TTA_MODES}, got {tta!r}")
    if tta == "none":
        return [images]
    if tta == "flips":
        return [images, images.flip(3), images.flip(2)]
    return five_crops(images, crop_fraction)


def combine_views(view_probs: torch.Tensor, tta: str) -> torch.Tensor:
    """(V, N, C) probabilities of the views -> (N, C): the maximum for ``five_crop_max``, else the mean."""
    return view_probs.amax(dim=0) if tta == "five_crop_max" else view_probs.mean(dim=0)


@torch.inference_mode()
def tta_image_probs(network: nn.Module, images: torch.Tensor, tta: str, crop_fraction: float = 0.75) -> torch.Tensor:
    """Sigmoid image probabilities of a classifier under one TTA mode.

    Args:
        network: maps normalised (N, C, h, w) images to a dict with ``logits`` (N, 19).
        images: normalised (N, C, H, W) float images.
        tta: one of :data:`IMAGE_TTA_MODES`.
        crop_fraction: crop side over the image side for the five-crop modes.

    Returns:
        (N, 19) float probabilities.
    """
    views = tta_image_views(images, tta, crop_fraction)
    view_probs = torch.stack([torch.sigmoid(network(view)["logits"].float()) for view in views])
    return combine_views(view_probs, tta)
