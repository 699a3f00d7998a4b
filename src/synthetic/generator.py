"""One synthetic HPA-like image with per-cell truth."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from src.data.classes import NEGATIVE
from src.synthetic.config import SyntheticConfig
from src.synthetic.domains import NEUTRAL_BATCH, NEUTRAL_LINE, AcquisitionBatch, CellLine
from src.synthetic.fields import acquire, smooth_field
from src.synthetic.geometry import place_cells, render_masks
from src.synthetic.label_stats import label_count_probabilities, sampling_weights
from src.synthetic.labels import MITOTIC_SPINDLE, assign_cell_labels, sample_label_sets, union_label
from src.synthetic.patterns import green_signal
from src.synthetic.structures import blue_signal, build_scene, red_signal, yellow_signal

logger = logging.getLogger(__name__)

_MAX_LAYOUT_TRIES = 20


@dataclass
class SyntheticImage:
    """A synthetic image and its truth.

    Attributes:
        rgby: (H, W, 4) uint8 channels red, green, blue, yellow.
        cell_mask: (H, W) uint16 cell instance ids 1..n, 0 = background.
        nuclei_mask: (H, W) uint16; the nucleus of cell k has id k.
        cell_labels: class ids of each cell id; [18] for a cell without protein signal.
        mitotic: ids of the mitotic cells.
    """

    rgby: np.ndarray
    cell_mask: np.ndarray
    nuclei_mask: np.ndarray
    cell_labels: dict[int, list[int]]
    mitotic: set[int]

    @property
    def image_labels(self) -> list[int]:
        """The image label: sorted union of the cells' labels."""
        return union_label(list(self.cell_labels.values()))


def generate_image(
    rng_seed: int,
    size: int,
    config: SyntheticConfig,
    image_labels: list[int] | None = None,
    cell_line: CellLine = NEUTRAL_LINE,
    batch: AcquisitionBatch = NEUTRAL_BATCH,
) -> SyntheticImage:
    """Generate one image; the same seed, size, config (and labels) give identical arrays.

    Args:
        rng_seed: seed of the image's random generator.
        size: image side in px (lengths are designed at 512 px and scale with it).
        config: generator parameters.
        image_labels: force the image's drawn class ids (for pictures and tests) instead of
            sampling them; cells still get subsets of them as usual.
        cell_line: morphology family (the neutral line leaves the image as it was).
        batch: acquisition conditions (the neutral batch leaves the image as it was).

    Returns:
        The image with its cell and nucleus masks and per-cell labels.
    """
    if size < 64:
        raise ValueError(f"size must be >= 64 px, got {size}")
    rng = np.random.default_rng(rng_seed)
    drawn = sample_label_sets(rng, 1, sampling_weights(config.class_freq_power), label_count_probabilities())[0]
    if image_labels is None:
        image_labels = [int(c) for c in np.flatnonzero(drawn)]
    else:
        image_labels = sorted({int(c) for c in image_labels})
        if not image_labels or not all(0 <= c <= NEGATIVE for c in image_labels):
            raise ValueError(f"image_labels must be class ids in 0..{NEGATIVE}, got {image_labels}")
    min_mitotic = int(rng.integers(1, 3)) if MITOTIC_SPINDLE in image_labels else 0
    for _ in range(_MAX_LAYOUT_TRIES):
        num_cells = int(rng.integers(config.min_cells, config.max_cells + 1))
        if cell_line.density != 1.0:
            num_cells = max(config.min_cells, round(num_cells * cell_line.density))
        cells = place_cells(rng, size, num_cells, config.mitotic_rate, min_mitotic, cell_line)
        cell_mask, nuclei_mask, cells = render_masks(rng, cells, size)
        mitotic = np.array([c.mitotic for c in cells], dtype=bool)
        if config.min_cells <= len(cells) and mitotic.sum() >= min(min_mitotic, 1):
            break
    else:
        raise RuntimeError(f"seed {rng_seed}: could not lay out {config.min_cells}+ cells at size {size}")
    labels = assign_cell_labels(rng, image_labels, mitotic, config.cell_dropout, config.negative_cell_rate)
    cell_labels = {k: ids for k, ids in enumerate(labels, start=1)}

    scene = build_scene(rng, cells, cell_mask, nuclei_mask)
    spread = np.log(config.intensity_spread) / 3.92
    expression = rng.lognormal(0.0, spread, len(cells))
    signals = {
        "red": red_signal(scene, rng),
        "green": green_signal(scene, rng, cell_labels, expression),
        "blue": blue_signal(scene, rng),
        "yellow": yellow_signal(scene, rng),
    }
    gains = {"red": (45, 110), "green": (80, 180), "blue": (75, 145), "yellow": (80, 150)}
    amplitude = config.illumination * batch.illumination_scale
    illumination = np.clip(1.0 + amplitude * smooth_field(rng, (size, size), 2) * 0.5, 0.3, None)
    blur_sigma = config.blur * size / 512.0 * batch.blur_scale
    channels = [
        acquire(
            signals[name],
            rng,
            illumination,
            blur_sigma,
            config.noise,
            rng.uniform(*gains[name]) * batch.gains[index],
            rng.uniform(0, 2) + batch.background,
        )  # fmt: skip
        for index, name in enumerate(("red", "green", "blue", "yellow"))
    ]
    if NEGATIVE in image_labels and len(image_labels) > 1:
        raise AssertionError(f"seed {rng_seed}: Negative drawn with other labels {image_labels}")
    return SyntheticImage(
        rgby=np.stack(channels, axis=-1),
        cell_mask=cell_mask,
        nuclei_mask=nuclei_mask,
        cell_labels=cell_labels,
        mitotic={k for k, m in enumerate(mitotic, start=1) if m},
    )
