"""Cell lines and acquisition batches of the synthetic benchmark: the domain shifts of HPA's real data.

A cell line is a family of morphologies (cell and nucleus size, elongation, crowding); an acquisition batch a set of
microscope conditions (per-channel gains, background, blur, uneven illumination). Each image belongs to one of each.
Both are drawn from the dataset seed alone, never from an image's generator, so an image without them (the neutral
line and batch) is exactly the image the generator made before they existed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

_LINE_STREAM, _BATCH_STREAM, _ASSIGN_STREAM = 7001, 7002, 7003


@dataclass(frozen=True)
class CellLine:
    """A family of cell morphologies; 1.0 and 0.0 leave the generator's shapes as they are.

    Attributes:
        name: label written to the metadata.
        cell_scale: multiplies every cell's radius (and with it the nucleus).
        nucleus_scale: multiplies the nucleus axes on top of ``cell_scale``.
        elongation: added to the amplitude of the outline's second harmonic (elongated, spindle-like cells).
        density: multiplies the number of cells an image tries to place.
    """

    name: str = "default"
    cell_scale: float = 1.0
    nucleus_scale: float = 1.0
    elongation: float = 0.0
    density: float = 1.0


@dataclass(frozen=True)
class AcquisitionBatch:
    """Microscope conditions shared by the images of one batch; the defaults change nothing.

    Attributes:
        name: label written to the metadata.
        gains: multipliers of the red, green, blue and yellow channel gains.
        background: counts added to every channel's background offset.
        blur_scale: multiplies the optical blur.
        illumination_scale: multiplies the amplitude of the uneven illumination.
    """

    name: str = "default"
    gains: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    background: float = 0.0
    blur_scale: float = 1.0
    illumination_scale: float = 1.0


NEUTRAL_LINE = CellLine()
NEUTRAL_BATCH = AcquisitionBatch()


def draw_cell_lines(count: int, seed: int) -> list[CellLine]:
    """``count`` cell lines ``line0..``: sizes 0.8-1.25x, nuclei 0.8-1.2x, elongation 0-0.5, density 0.7-1.4x."""
    rng = np.random.default_rng([seed, _LINE_STREAM])
    return [
        CellLine(
            name=f"line{k}",
            cell_scale=float(rng.uniform(0.8, 1.25)),
            nucleus_scale=float(rng.uniform(0.8, 1.2)),
            elongation=float(rng.uniform(0.0, 0.5)),
            density=float(rng.uniform(0.7, 1.4)),
        )
        for k in range(count)
    ]


def draw_batches(count: int, seed: int) -> list[AcquisitionBatch]:
    """``count`` batches ``batch0..``: channel gains lognormal (sigma 0.25), background +0-12 counts, blur 0.7-1.8x,
    illumination 0.5-2x."""
    rng = np.random.default_rng([seed, _BATCH_STREAM])
    return [
        AcquisitionBatch(
            name=f"batch{k}",
            gains=tuple(float(g) for g in rng.lognormal(0.0, 0.25, 4)),
            background=float(rng.uniform(0.0, 12.0)),
            blur_scale=float(rng.uniform(0.7, 1.8)),
            illumination_scale=float(rng.uniform(0.5, 2.0)),
        )
        for k in range(count)
    ]


@dataclass(frozen=True)
class DomainConfig:
    """How many cell lines and batches a benchmark has, and how many of each only the test split sees.

    Attributes:
        cell_lines: number of cell lines (0: every image has the neutral line).
        batches: number of acquisition batches (0: the neutral batch).
        holdout_cell_lines: the last this many lines appear in test images only: the test split mixes seen and
            unseen lines, so one split measures the drop under domain shift.
        holdout_batches: the same for batches.
    """

    cell_lines: int = 0
    batches: int = 0
    holdout_cell_lines: int = 0
    holdout_batches: int = 0

    def __post_init__(self) -> None:
        for kind in ("cell_lines", "batches"):
            count, held = getattr(self, kind), getattr(self, f"holdout_{kind}")
            if count < 0 or held < 0:
                raise ValueError(f"--{kind} and --holdout_{kind} must be >= 0, got {count}, {held}")
            if held and held >= count:
                raise ValueError(f"--holdout_{kind} {held} must leave training at least one of the {count} {kind}")

    @property
    def enabled(self) -> bool:
        return bool(self.cell_lines or self.batches)

    def to_dict(self) -> dict:
        return asdict(self)


NO_DOMAINS = DomainConfig()


def assign_domains(ids: dict[str, list[str]], domains: DomainConfig, seed: int) -> pd.DataFrame:
    """The cell line and batch of every image: uniform draws; training images never draw a held-out one.

    Args:
        ids: image IDs per split (``train``, ``test``).
        domains: counts and hold-outs.
        seed: dataset seed.

    Returns:
        DataFrame ID, split, cell_line, batch (the names of :func:`draw_cell_lines` / :func:`draw_batches`, or
        ``default``), in the order of ``ids``.
    """
    rng = np.random.default_rng([seed, _ASSIGN_STREAM])
    rows = []
    for split, names in ids.items():
        for name in names:
            row = {"ID": name, "split": split}
            for kind, column, prefix in (("cell_lines", "cell_line", "line"), ("batches", "batch", "batch")):
                count = getattr(domains, kind)
                if count == 0:
                    row[column] = "default"
                    continue
                seen = count if split == "test" else count - getattr(domains, f"holdout_{kind}")
                row[column] = f"{prefix}{int(rng.integers(0, seen))}"
            rows.append(row)
    return pd.DataFrame(rows, columns=["ID", "split", "cell_line", "batch"])
