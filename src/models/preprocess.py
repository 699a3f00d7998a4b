"""Network input normalisation shared by training, feature extraction and CAM inference.

Images travel as uint8 (N, C, H, W) tensors to the device (a quarter of float32's traffic) and
are normalised there.
"""

from __future__ import annotations

import torch

MEAN = (0.485, 0.456, 0.406, 0.406, 0.5)  # red, green, blue, yellow[, cell mask of a crop]
STD = (0.229, 0.224, 0.225, 0.225, 0.5)


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) in 0..255, channels red, green, blue[, yellow] -> float32 normalised input.

    C is 3, 4 or 5 (a cell crop's mask channel); the result keeps the input's memory format (channels_last stays channels_last).
    """
    channels = images.shape[1]
    if channels not in (3, 4, 5):
        raise ValueError(f"expected 3, 4 or 5 channels, got images of shape {tuple(images.shape)}")
    mean = torch.tensor(MEAN[:channels], device=images.device).view(1, channels, 1, 1) * 255.0
    std = torch.tensor(STD[:channels], device=images.device).view(1, channels, 1, 1) * 255.0
    return (images.float() - mean) / std
