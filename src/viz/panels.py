"""A row of titled image panels saved atomically: the layout of the side-by-side mask pictures."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib import pyplot as plt

from src.data.atomic import atomic_path

matplotlib.use("Agg")


def save_panels(
    panels: Sequence[tuple[np.ndarray, str]],
    title: str,
    out: str | os.PathLike,
    figsize: tuple[float, float],
    top: float = 0.86,
) -> None:
    """Draw ``panels`` ((image, caption) pairs) in one row under ``title`` and write the figure to ``out``.

    Args:
        panels: RGB uint8 images with their captions, left to right.
        title: the figure's title.
        out: picture file (PNG), written atomically.
        figsize: figure size in inches at 100 dpi.
        top: top of the panels as a fraction of the height (room for the title and two-line captions).
    """
    figure, axes = plt.subplots(1, len(panels), figsize=figsize, dpi=100, squeeze=False)
    for axis, (image, caption) in zip(axes[0], panels, strict=True):
        axis.imshow(image)
        axis.set_title(caption, fontsize=12)
        axis.axis("off")
    figure.suptitle(title, fontsize=13)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=top, wspace=0.02)
    with atomic_path(out) as tmp:
        figure.savefig(tmp)
    plt.close(figure)
