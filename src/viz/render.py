"""HPA-style colour display of four-channel images, used for every picture in the project."""

from __future__ import annotations

import numpy as np


def rgby_to_rgb(rgby: np.ndarray, yellow_weight: float = 0.5, gain: float = 1.0) -> np.ndarray:
    """Display colours of an RGBY image as on the HPA site.

    Red = microtubules, green = protein, blue = nucleus; yellow (ER) is shown as red plus
    green, so ER signal looks yellow and the protein stays pure green.

    Args:
        rgby: (H, W, 4) uint8 channels red, green, blue, yellow.
        yellow_weight: how much of yellow is added to the red and green planes.
        gain: brightness multiplier applied before clipping.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    if rgby.ndim != 3 or rgby.shape[-1] != 4:
        raise ValueError(f"expected an (H, W, 4) RGBY image, got shape {rgby.shape}")
    channels = rgby.astype(np.float32)
    red, green, blue, yellow = (channels[..., i] for i in range(4))
    rgb = np.stack([red + yellow_weight * yellow, green + yellow_weight * yellow, blue], axis=-1) * gain
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def rgby_to_display(rgby: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """:func:`rgby_to_rgb` with the gain that puts the ``percentile`` of the displayed values at full brightness."""
    gain = 255.0 / max(1.0, float(np.percentile(rgby_to_rgb(rgby), percentile)))
    return rgby_to_rgb(rgby, gain=gain)
