"""Random fields (textures, smooth variations) and the microscope's acquisition effects."""

from __future__ import annotations

import cv2
import numpy as np


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of an (H, W) float32 array; sigma in px (no-op below 0.3 px)."""
    if sigma < 0.3:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def texture(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise normalised to zero mean, unit std.

    Returns:
        (H, W) float32 field whose correlation length is ``sigma`` px.
    """
    field = gaussian_blur(rng.standard_normal(shape, dtype=np.float32), sigma)
    std = float(field.std())
    return (field - field.mean()) / (std if std > 0 else 1.0)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells_across: float) -> np.ndarray:
    """Very smooth zero-mean field of about unit std: a coarse random grid upsampled bicubically.

    Args:
        rng: random generator.
        shape: (H, W).
        cells_across: number of independent values across the width (larger = rougher).

    Returns:
        (H, W) float32.
    """
    grid = max(2, int(round(cells_across)) + 2)
    coarse = rng.standard_normal((grid, grid)).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def reticular_network(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """A reticular (ER-like) meshwork: thin bright lines on the zero set of band-pass noise.

    Args:
        rng: random generator.
        shape: (H, W).
        scale: px per 512 px image unit (image size / 512).

    Returns:
        (H, W) float32 in [0, 1].
    """
    noise = rng.standard_normal(shape, dtype=np.float32)
    band = gaussian_blur(noise, 1.1 * scale) - gaussian_blur(noise, 2.2 * scale)
    width = 0.45 * float(band.std()) + 1e-6
    return np.exp(-((band / width) ** 2))


def acquire(
    signal: np.ndarray,
    rng: np.random.Generator,
    illumination: np.ndarray,
    blur_sigma: float,
    noise: float,
    gain: float,
    offset: float,
) -> np.ndarray:
    """Turn a clean channel into an 8-bit measurement.

    Uneven illumination multiplies the signal, the optics blur it, then shot noise
    (proportional to the square root of the counts) and read noise are added.

    Args:
        signal: (H, W) float32 clean signal, about 0..1.
        rng: random generator.
        illumination: (H, W) float32 multiplicative illumination field (around 1).
        blur_sigma: optical blur in px.
        noise: noise scale (0 = none).
        gain: counts per unit signal.
        offset: background counts.

    Returns:
        (H, W) uint8.
    """
    counts = gaussian_blur(signal * illumination, blur_sigma) * gain + offset
    if noise > 0:
        counts = counts + noise * (0.6 * np.sqrt(np.maximum(counts, 0)) + 1.2) * rng.standard_normal(
            counts.shape, dtype=np.float32
        )
    return np.clip(np.rint(counts), 0, 255).astype(np.uint8)
