"""Random views of fluorescence cell crops for contrastive learning, made on the device for a whole batch.

No colour operations meant for RGB photographs: each channel is a separate stain, so the views change geometry
(random resized crop, the 8 flips and 90-degree rotations), per-channel intensity and gamma, focus (Gaussian blur)
and noise. Crops come as uint8 (N, C, S, S); views leave as normalised float, ready for the network.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from src.models.preprocess import normalize_images

MIN_CROP_AREA = 0.5  # random resized crop keeps 50-100% of the crop's area
GAIN_RANGE = 0.3  # per-channel intensity x exp(U(-0.3, 0.3))
GAMMA_RANGE = 0.3  # per-channel gamma exp(U(-0.3, 0.3))
BLUR_PROBABILITY, BLUR_SIGMA = 0.5, (0.1, 1.5)
NOISE_STD = 4.0  # grey levels, times U(0, 1) per view


def _geometry(images: torch.Tensor) -> torch.Tensor:
    """A random resized crop, flip and 90-degree rotation of every image, as one affine resampling each."""
    n = images.shape[0]
    device = images.device
    side = torch.sqrt(torch.empty(n, device=device).uniform_(MIN_CROP_AREA, 1.0))
    quarter = torch.randint(0, 4, (n,), device=device).float() * (math.pi / 2)
    flip = torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(quarter), torch.sin(quarter)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 1] = side * cos * flip, -side * sin
    theta[:, 1, 0], theta[:, 1, 1] = side * sin * flip, side * cos
    theta[:, :, 2] = (torch.rand(n, 2, device=device) * 2 - 1) * (1 - side)[:, None]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _blur(images: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of a random half of the images, each with its own sigma (separable, 7 taps)."""
    n, c = images.shape[:2]
    device = images.device
    sigma = torch.empty(n, device=device).uniform_(*BLUR_SIGMA)
    taps = torch.arange(-3, 4, device=device, dtype=images.dtype)
    kernel = torch.exp(-(taps[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (n, 7)
    weights = kernel.repeat_interleave(c, dim=0)  # one kernel per (image, channel)
    flat = images.reshape(1, n * c, *images.shape[2:])
    flat = F.conv2d(F.pad(flat, (3, 3, 0, 0), mode="reflect"), weights[:, None, None, :], groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, 3, 3), mode="reflect"), weights[:, None, :, None], groups=n * c)
    blurred = flat.reshape(images.shape)
    chosen = (torch.rand(n, device=device) < BLUR_PROBABILITY).view(n, 1, 1, 1)
    return torch.where(chosen, blurred, images)


def random_views(crops: torch.Tensor) -> torch.Tensor:
    """One random view of every crop.

    Args:
        crops: (N, C, S, S) uint8 (or float in 0..255) crops on any device; a 5th channel (the cell mask) is moved
            with the geometry but keeps its intensity.

    Returns:
        (N, C, S, S) float32, normalised like every network input (:func:`src.models.preprocess.normalize_images`).
    """
    images = _geometry(crops.float())
    n, c = images.shape[:2]
    stains = min(c, 4)
    gain = torch.exp(torch.empty(n, stains, 1, 1, device=images.device).uniform_(-GAIN_RANGE, GAIN_RANGE))
    gamma = torch.exp(torch.empty(n, stains, 1, 1, device=images.device).uniform_(-GAMMA_RANGE, GAMMA_RANGE))
    signal = (images[:, :stains] / 255.0).clamp(0, 1) ** gamma * gain * 255.0
    signal = _blur(signal)
    noise = torch.randn_like(signal) * NOISE_STD * torch.rand(n, 1, 1, 1, device=images.device)
    images = torch.cat([(signal + noise).clamp(0, 255), images[:, stains:]], dim=1)
    return normalize_images(images)


def two_views(crops: torch.Tensor, partners: torch.Tensor | None = None) -> torch.Tensor:
    """(2N, C, S, S) normalised views: rows i and N + i are a positive pair (two views of crop i, or a view of crop
    i and one of ``partners[i]``, another cell of the same image, SIFLoc-style)."""
    return torch.cat([random_views(crops), random_views(crops if partners is None else partners)])
