"""Cell and nucleus shapes, and their instance masks, by distance-based label growth.

Cell centres are placed by random sequential adsorption (a minimum distance keeps nuclei
apart, and centres may sit just outside the frame so that cells are cut by the border).
Each cell has an irregular star-shaped extent ``R(theta)`` (low harmonics); every pixel
goes to the cell with the smallest normalised distance ``|p - c| / R(theta)``, perturbed by a
smooth field so that the borders between touching cells wander. Nuclei are irregular
ellipses; mitotic cells are rounded, with a compact condensed-chromatin plate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from src.synthetic.domains import NEUTRAL_LINE, CellLine
from src.synthetic.fields import smooth_field

_CELL_HARMONICS = 4
_NUCLEUS_HARMONICS = 4


@dataclass
class CellGeometry:
    """Shape of one cell; lengths in px, angles in radians, positions (x, y).

    Attributes:
        centre: (2,) cell centre.
        radius: base radius of the cell extent.
        shape_amps: (4,) relative amplitudes of harmonics 1..4 of the cell outline.
        shape_phases: (4,) their phases.
        nucleus_centre: (2,) nucleus centre.
        nucleus_axes: (2,) nucleus semi-axes (a, b).
        nucleus_angle: orientation of the nucleus' a axis.
        nucleus_amps: (4,) relative amplitudes of harmonics 2..5 of the nucleus outline.
        nucleus_phases: (4,) their phases.
        mitotic: rounded mitotic cell with a chromatin plate as nucleus.
        mtoc_angle: direction from the nucleus centre to the centrosome / Golgi side.
        nucleoli: (m, 5) nucleoli as ellipses (x, y, a, b, angle); empty for mitotic cells.
    """

    centre: np.ndarray
    radius: float
    shape_amps: np.ndarray
    shape_phases: np.ndarray
    nucleus_centre: np.ndarray
    nucleus_axes: np.ndarray
    nucleus_angle: float
    nucleus_amps: np.ndarray
    nucleus_phases: np.ndarray
    mitotic: bool
    mtoc_angle: float
    nucleoli: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))

    def cell_radius(self, theta: np.ndarray) -> np.ndarray:
        """Extent of the cell in direction ``theta`` (any shape) from its centre."""
        orders = np.arange(1, _CELL_HARMONICS + 1, dtype=np.float32)
        waves = np.cos(theta[..., None] * orders - self.shape_phases.astype(np.float32)) @ self.shape_amps.astype(
            np.float32
        )
        return self.radius * np.maximum(1.0 + waves, 0.35)

    def nucleus_radius(self, theta: np.ndarray) -> np.ndarray:
        """Distance from the nucleus centre to its outline in direction ``theta``."""
        a, b = (float(v) for v in self.nucleus_axes)
        rel = theta - self.nucleus_angle
        ellipse = a * b / np.sqrt((b * np.cos(rel)) ** 2 + (a * np.sin(rel)) ** 2)
        orders = np.arange(2, _NUCLEUS_HARMONICS + 2, dtype=np.float32)
        waves = np.cos(rel[..., None] * orders - self.nucleus_phases.astype(np.float32)) @ self.nucleus_amps.astype(
            np.float32
        )
        return ellipse * np.maximum(1.0 + waves, 0.5)

    def max_cell_radius(self) -> float:
        return float(self.radius * (1.0 + np.abs(self.shape_amps).sum()))

    def max_nucleus_radius(self) -> float:
        return float(self.nucleus_axes.max() * (1.0 + np.abs(self.nucleus_amps).sum()))

    def point_beside_nucleus(self, angle: np.ndarray, gap: np.ndarray) -> np.ndarray:
        """Points ``gap`` px outside the nucleus outline in directions ``angle``; (n, 2) (x, y)."""
        angle = np.asarray(angle, dtype=np.float32)
        dist = self.nucleus_radius(angle) + gap
        return self.nucleus_centre[None, :] + np.stack([np.cos(angle), np.sin(angle)], axis=-1) * dist[..., None]


def _sample_centres(rng: np.random.Generator, size: int, count: int, min_dist: float, margin: float) -> np.ndarray:
    """Random sequential adsorption of up to ``count`` points in [-margin, size + margin]^2; (n, 2)."""
    accepted: list[np.ndarray] = []
    candidates = rng.uniform(-margin, size + margin, size=(60 * count, 2))
    for point in candidates:
        if accepted and np.min(np.hypot(*(np.asarray(accepted) - point).T)) < min_dist:
            continue
        accepted.append(point)
        if len(accepted) == count:
            break
    return np.asarray(accepted, dtype=np.float64).reshape(-1, 2)


def _make_cell(
    rng: np.random.Generator, centre: np.ndarray, radius: float, mitotic: bool, scale: float, line: CellLine
) -> CellGeometry:
    """Random shape parameters of one cell around ``centre``; ``scale`` = image size / 512 (times the line's cell
    scale); ``line`` adds its nucleus scale and elongation."""
    if mitotic:
        cell_radius = radius * rng.uniform(0.55, 0.7)
        shape_amps = rng.uniform(0.0, 0.05, _CELL_HARMONICS)
        a = cell_radius * rng.uniform(0.55, 0.7)
        axes = np.array([a, a * rng.uniform(0.25, 0.4)])
        nucleus_amps = rng.uniform(0.04, 0.12, _NUCLEUS_HARMONICS)
        nucleus_centre = centre.copy()
    else:
        cell_radius = radius * rng.uniform(0.9, 1.2)
        shape_amps = np.array([0.15, 0.55, 0.22, 0.12]) * rng.uniform(0.1, 1.0, _CELL_HARMONICS) ** 0.6
        a = float(np.clip(radius * rng.uniform(0.42, 0.52), 20 * scale, 29 * scale))
        axes = np.array([a, a * rng.uniform(0.6, 0.95)])
        nucleus_amps = np.array([0.06, 0.05, 0.03, 0.02]) * rng.uniform(0.0, 1.0, _NUCLEUS_HARMONICS)
        shift = rng.uniform(0, 0.12 * radius)
        direction = rng.uniform(0, 2 * np.pi)
        nucleus_centre = centre + shift * np.array([np.cos(direction), np.sin(direction)])
    axes = axes * line.nucleus_scale
    shape_amps[1] += line.elongation
    return CellGeometry(
        centre=np.asarray(centre, dtype=np.float64),
        radius=float(cell_radius),
        shape_amps=shape_amps,
        shape_phases=rng.uniform(0, 2 * np.pi, _CELL_HARMONICS),
        nucleus_centre=nucleus_centre,
        nucleus_axes=axes,
        nucleus_angle=float(rng.uniform(0, np.pi)),
        nucleus_amps=nucleus_amps,
        nucleus_phases=rng.uniform(0, 2 * np.pi, _NUCLEUS_HARMONICS),
        mitotic=mitotic,
        mtoc_angle=float(rng.uniform(0, 2 * np.pi)),
    )


def _add_nucleoli(rng: np.random.Generator, cell: CellGeometry) -> None:
    """1-4 nucleoli inside a non-mitotic nucleus."""
    if cell.mitotic:
        return
    count = int(rng.integers(1, 5))
    a_nuc = float(cell.nucleus_axes.min())
    angles = rng.uniform(0, 2 * np.pi, count)
    dist = rng.uniform(0.0, 0.55, count) * cell.nucleus_radius(angles.astype(np.float32))
    xy = cell.nucleus_centre[None, :] + np.stack([np.cos(angles), np.sin(angles)], axis=-1) * dist[:, None]
    a = a_nuc * rng.uniform(0.14, 0.24, count)
    b = a * rng.uniform(0.6, 1.0, count)
    cell.nucleoli = np.column_stack([xy, a, b, rng.uniform(0, np.pi, count)])


def place_cells(
    rng: np.random.Generator,
    size: int,
    num_cells: int,
    mitotic_rate: float,
    min_mitotic: int,
    line: CellLine = NEUTRAL_LINE,
) -> list[CellGeometry]:
    """Random cells for one image, sized like HPA cells (60-150 px across at 512 px).

    Args:
        rng: random generator.
        size: image side in px.
        num_cells: cells to try to place (fewer fit when the field is crowded).
        mitotic_rate: probability that a cell is mitotic.
        min_mitotic: at least this many mitotic cells, chosen among cells well inside the frame.
        line: the cell line (sizes, nucleus scale, elongation; the neutral line changes nothing).

    Returns:
        The cells, in placement order.
    """
    scale = size / 512.0 * line.cell_scale
    fill = rng.uniform(0.55, 0.95)
    radius = float(np.clip(np.sqrt(fill * size * size / (np.pi * num_cells)), 38 * scale, 54 * scale))
    margin = 0.1 * radius
    centres = _sample_centres(rng, size, num_cells, min_dist=1.3 * radius, margin=margin)
    mitotic = rng.random(len(centres)) < mitotic_rate
    inside = np.flatnonzero(np.all((centres > radius) & (centres < size - radius), axis=1))
    if min_mitotic > mitotic.sum():
        pool = inside if len(inside) else np.arange(len(centres))
        pool = pool[~mitotic[pool]]
        chosen = rng.choice(pool, size=min(len(pool), min_mitotic - int(mitotic.sum())), replace=False)
        mitotic[chosen] = True
    cells = [_make_cell(rng, centre, radius, bool(m), scale, line) for centre, m in zip(centres, mitotic, strict=True)]
    for cell in cells:
        _add_nucleoli(rng, cell)
    return cells


def _bbox(centre: np.ndarray, reach: float, size: int) -> tuple[slice, slice, np.ndarray, np.ndarray] | None:
    """Clipped (rows, cols) slices around ``centre`` and the pixel offsets dx (1, w), dy (h, 1) from it."""
    x0, x1 = max(int(centre[0] - reach), 0), min(int(centre[0] + reach) + 2, size)
    y0, y1 = max(int(centre[1] - reach), 0), min(int(centre[1] + reach) + 2, size)
    if x0 >= x1 or y0 >= y1:
        return None
    dx = (np.arange(x0, x1, dtype=np.float32) - np.float32(centre[0]))[None, :]
    dy = (np.arange(y0, y1, dtype=np.float32) - np.float32(centre[1]))[:, None]
    return slice(y0, y1), slice(x0, x1), dx, dy


def render_masks(
    rng: np.random.Generator, cells: list[CellGeometry], size: int, min_nucleus_fraction: float = 0.3
) -> tuple[np.ndarray, np.ndarray, list[CellGeometry]]:
    """Instance masks of cells and nuclei.

    Cells whose nucleus is mostly outside the frame (visible fraction below
    ``min_nucleus_fraction``) are dropped with their cytoplasm; the rest are numbered 1..n in
    the order of ``cells``. Each cell keeps only its connected part that holds its nucleus.

    Args:
        rng: random generator (for the border-wandering field).
        cells: cell shapes.
        size: image side in px.
        min_nucleus_fraction: smallest visible fraction of a nucleus to keep its cell.

    Returns:
        cell_mask (H, W) uint16, nuclei_mask (H, W) uint16 (nucleus of cell k has id k), and the kept cells.
    """
    wander = 1.0 + 0.12 * smooth_field(rng, (size, size), 10)
    best = np.full((size, size), np.inf, dtype=np.float32)
    cell_mask = np.zeros((size, size), dtype=np.int32)
    for k, cell in enumerate(cells, start=1):
        box = _bbox(cell.centre, cell.max_cell_radius() * 1.2, size)
        if box is None:
            continue
        rows, cols, dx, dy = box
        cost = np.hypot(dx, dy) / cell.cell_radius(np.arctan2(dy, dx)) * wander[rows, cols]
        if cell.mitotic:
            cost *= 0.85
        win = cost < best[rows, cols]
        best[rows, cols][win] = cost[win]
        cell_mask[rows, cols][win] = k
    cell_mask[best >= 1.0] = 0

    nuclei_mask = np.zeros((size, size), dtype=np.int32)
    visible = np.zeros(len(cells) + 1, dtype=bool)
    for k, cell in enumerate(cells, start=1):
        reach = cell.max_nucleus_radius() + 2
        rows, cols, dx, dy = _bbox(cell.nucleus_centre, reach, size) or (slice(0, 0), slice(0, 0), None, None)
        if dx is None:
            continue
        inside = np.hypot(dx, dy) <= cell.nucleus_radius(np.arctan2(dy, dx))
        area_full = np.pi * float(np.prod(cell.nucleus_axes))
        inside &= nuclei_mask[rows, cols] == 0
        if inside.sum() < min_nucleus_fraction * area_full:
            continue
        visible[k] = True
        nuclei_mask[rows, cols][inside] = k
        cell_mask[rows, cols][inside] = k

    kept: list[CellGeometry] = []
    relabel = np.zeros(len(cells) + 1, dtype=np.int32)
    for k, cell in enumerate(cells, start=1):
        if not visible[k]:
            continue
        box = _bbox(cell.centre, cell.max_cell_radius() * 1.3, size)
        rows, cols = box[0], box[1]
        own = (cell_mask[rows, cols] == k).astype(np.uint8)
        count, components = cv2.connectedComponents(own, connectivity=4)
        if count > 2:
            nucleus_ids = components[nuclei_mask[rows, cols] == k]
            main = np.bincount(nucleus_ids[nucleus_ids > 0]).argmax()
            cell_mask[rows, cols][(components > 0) & (components != main)] = 0
        kept.append(cell)
        relabel[k] = len(kept)
    return relabel[cell_mask].astype(np.uint16), relabel[nuclei_mask].astype(np.uint16), kept
