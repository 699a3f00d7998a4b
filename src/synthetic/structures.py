"""The reference structures of an HPA image: nuclei (blue), microtubules (red), ER (yellow).

A :class:`Scene` holds the masks and the maps every channel is drawn from (distances to
the nuclear outline and to the cell border, nucleoli, microtubule filaments, the ER
meshwork, textures), so that the green protein patterns can follow the same structures.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from src.synthetic.fields import gaussian_blur, reticular_network, texture
from src.synthetic.geometry import CellGeometry

_SHIFT = 2  # sub-pixel bits for OpenCV drawing
_ONE = 1 << _SHIFT


@dataclass
class Scene:
    """Masks and shared maps of one synthetic image; all maps (H, W) float32 unless noted.

    Attributes:
        size: image side in px.
        scale: size / 512 (lengths are designed at 512 px).
        cells: cell shapes; cell k (1-based id) is ``cells[k - 1]``.
        cell_mask: (H, W) uint16 cell instance ids.
        nuclei_mask: (H, W) uint16 nucleus ids (nucleus of cell k has id k).
        nucleus: soft nucleus map in [0, 1].
        thickness: relative cell thickness in [0.25, 1], highest around the nucleus (scales cytoplasmic signal).
        cytoplasm: soft map of cell minus nucleus in [0, 1], times the thickness.
        dist_out: distance to the nearest nucleus (0 inside nuclei).
        dist_in: distance inside a nucleus to its outline (0 outside).
        dist_edge: distance inside a cell to its border (0 outside).
        nucleoli: soft nucleoli map in [0, 1].
        filaments: microtubule filaments of interphase cells in [0, ~1], each inside its own cell.
        spindles: mitotic spindle fibres of mitotic cells in [0, 1], each inside its own cell.
        reticulum: ER meshwork envelope around the nuclei in [0, ~1].
        fine: fine texture (zero mean, unit std, ~1 px).
        medium: medium texture (zero mean, unit std, ~3 px).
    """

    size: int
    scale: float
    cells: list[CellGeometry]
    cell_mask: np.ndarray
    nuclei_mask: np.ndarray
    nucleus: np.ndarray
    thickness: np.ndarray
    cytoplasm: np.ndarray
    dist_out: np.ndarray
    dist_in: np.ndarray
    dist_edge: np.ndarray
    nucleoli: np.ndarray
    filaments: np.ndarray
    spindles: np.ndarray
    reticulum: np.ndarray
    fine: np.ndarray
    medium: np.ndarray

    def per_cell(self, values: np.ndarray) -> np.ndarray:
        """Spread one value per cell (``values[k - 1]`` for cell k) over its pixels; 0 on background."""
        lut = np.concatenate([[0.0], np.asarray(values, dtype=np.float32)]).astype(np.float32)
        return lut[self.cell_mask]


def cell_box(cell: CellGeometry, size: int) -> tuple[slice, slice]:
    """Row and column slices of a box that holds all of the cell's pixels (possibly empty)."""
    reach = cell.max_cell_radius() * 1.3 + 2
    x0, x1 = max(int(cell.centre[0] - reach), 0), min(int(cell.centre[0] + reach) + 2, size)
    y0, y1 = max(int(cell.centre[1] - reach), 0), min(int(cell.centre[1] + reach) + 2, size)
    return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


def draw_polylines(
    canvas: np.ndarray, paths: np.ndarray, origin: tuple[int, int], value: float, thickness: int = 1
) -> None:
    """Anti-aliased open polylines on a float32 canvas, in place.

    Args:
        canvas: (h, w) float32 crop of the image.
        paths: (n, m, 2) points (x, y) in image coordinates.
        origin: (x0, y0) image coordinates of the crop's corner.
        value: intensity added by the lines (max-combined with what is there).
        thickness: line thickness in px.
    """
    if len(paths) == 0:
        return
    layer = np.zeros(canvas.shape, dtype=np.uint8)
    points = np.rint((paths - np.asarray(origin, dtype=np.float64)) * _ONE).astype(np.int32)
    cv2.polylines(layer, list(points), False, 255, thickness=thickness, lineType=cv2.LINE_AA, shift=_SHIFT)
    np.maximum(canvas, layer.astype(np.float32) * (value / 255.0), out=canvas)


def random_walk_paths(
    rng: np.random.Generator, starts: np.ndarray, headings: np.ndarray, step: float, steps: int, wiggle: float
) -> np.ndarray:
    """Persistent random walks (filament paths).

    Args:
        rng: random generator.
        starts: (n, 2) start points (x, y).
        headings: (n,) initial directions in radians.
        step: step length in px.
        steps: number of steps.
        wiggle: std of the heading change per step, radians.

    Returns:
        (n, steps + 1, 2) points.
    """
    turns = rng.normal(0.0, wiggle, size=(len(starts), steps))
    angles = headings[:, None] + np.cumsum(turns, axis=1)
    moves = np.stack([np.cos(angles), np.sin(angles)], axis=-1) * step
    return np.concatenate([starts[:, None, :], starts[:, None, :] + np.cumsum(moves, axis=1)], axis=1)


def spindle_paths(rng: np.random.Generator, cell: CellGeometry, count: int) -> np.ndarray:
    """Mitotic spindle fibres: curved lines from the two poles to the chromatin plate; (2 * count, 9, 2)."""
    axis = cell.nucleus_angle + np.pi / 2
    along = np.array([np.cos(axis), np.sin(axis)])
    plate_dir = np.array([np.cos(cell.nucleus_angle), np.sin(cell.nucleus_angle)])
    pole_dist = 0.75 * cell.radius
    t = np.linspace(0.0, 1.0, 9)[None, :, None]
    paths = []
    for sign in (-1.0, 1.0):
        pole = cell.nucleus_centre + sign * pole_dist * along
        ends = cell.nucleus_centre[None, :] + rng.uniform(-0.9, 0.9, (count, 1)) * cell.nucleus_axes[0] * plate_dir
        ends = ends + sign * rng.uniform(0, 0.15, (count, 1)) * cell.radius * along
        bulge = (ends - pole) * 0.5 + pole + rng.normal(0, 0.12, (count, 1)) * cell.radius * plate_dir
        curve = (1 - t) ** 2 * pole + 2 * (1 - t) * t * bulge[:, None, :] + t**2 * ends[:, None, :]
        paths.append(curve)
    return np.concatenate(paths, axis=0)


def _soft(mask: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian_blur(mask.astype(np.float32), sigma)


def _draw_nucleoli(cells: list[CellGeometry], size: int) -> np.ndarray:
    layer = np.zeros((size, size), dtype=np.uint8)
    for cell in cells:
        for x, y, a, b, angle in cell.nucleoli:
            centre = (int(round(x * _ONE)), int(round(y * _ONE)))
            axes = (max(int(round(a * _ONE)), 1), max(int(round(b * _ONE)), 1))
            cv2.ellipse(layer, centre, axes, float(np.degrees(angle)), 0, 360, 255, -1, cv2.LINE_AA, _SHIFT)
    return layer.astype(np.float32) / 255.0


def _draw_microtubules(
    rng: np.random.Generator, scene_cells: list[CellGeometry], cell_mask: np.ndarray, scale: float
) -> np.ndarray:
    """Filaments radiating from around the nucleus and curving through each interphase cell."""
    size = cell_mask.shape[0]
    filaments = np.zeros((size, size), dtype=np.float32)
    step = 3.0 * scale
    for k, cell in enumerate(scene_cells, start=1):
        if cell.mitotic:
            continue
        count = int(150 * (cell.radius / (50 * scale)) ** 2)
        from_mtoc = rng.random(count) < 0.3
        angles = rng.uniform(0, 2 * np.pi, count)
        angles[from_mtoc] = cell.mtoc_angle + rng.normal(0, 0.4, from_mtoc.sum())
        starts = cell.point_beside_nucleus(angles, rng.uniform(-2, 3, count) * scale)
        headings = angles + rng.normal(0, 0.6, count)
        steps = int(np.ceil(1.6 * cell.max_cell_radius() / step))
        paths = random_walk_paths(rng, starts, headings, step, steps, wiggle=0.16)
        rows, cols = cell_box(cell, size)
        crop = np.zeros((rows.stop - rows.start, cols.stop - cols.start), dtype=np.float32)
        brightness = rng.uniform(0.15, 0.75, count)
        for group in range(3):
            chosen = np.flatnonzero(np.digitize(brightness, [0.35, 0.55]) == group)
            if len(chosen):
                draw_polylines(crop, paths[chosen], (cols.start, rows.start), float(brightness[chosen].mean()))
        own = cell_mask[rows, cols] == k
        filaments[rows, cols][own] = crop[own]
    return filaments


def build_scene(
    rng: np.random.Generator, cells: list[CellGeometry], cell_mask: np.ndarray, nuclei_mask: np.ndarray
) -> Scene:
    """Derive the shared maps of an image from its masks.

    Args:
        rng: random generator.
        cells: kept cells, cell k is ``cells[k - 1]``.
        cell_mask: (H, W) uint16.
        nuclei_mask: (H, W) uint16.

    Returns:
        The scene.
    """
    size = cell_mask.shape[0]
    scale = size / 512.0
    in_nucleus = nuclei_mask > 0
    in_cell = cell_mask > 0
    dist_out = cv2.distanceTransform((~in_nucleus).astype(np.uint8), cv2.DIST_L2, 3)
    dist_in = cv2.distanceTransform(in_nucleus.astype(np.uint8), cv2.DIST_L2, 3)
    # Cell borders: background, or a neighbour with another id (touching cells each get a border).
    padded = np.pad(cell_mask, 1, mode="edge")
    border = (
        (padded[1:-1, 2:] != cell_mask)
        | (padded[1:-1, :-2] != cell_mask)
        | (padded[2:, 1:-1] != cell_mask)
        | (padded[:-2, 1:-1] != cell_mask)
    )
    dist_edge = cv2.distanceTransform((in_cell & ~border).astype(np.uint8), cv2.DIST_L2, 3)
    nucleus = _soft(in_nucleus, 0.8 * scale)
    # Cells are thickest around the nucleus and thin out towards their border.
    radius = np.concatenate([[1.0], [c.radius for c in cells]]).astype(np.float32)[cell_mask]
    thickness = (0.25 + 0.75 * np.exp(-dist_out / (0.55 * radius))).astype(np.float32)
    cytoplasm = np.clip(_soft(in_cell, 0.6 * scale) - nucleus, 0.0, 1.0) * thickness
    nucleoli = gaussian_blur(_draw_nucleoli(cells, size), 0.8 * scale) * in_nucleus
    filaments = _draw_microtubules(rng, cells, cell_mask, scale)
    envelope = (0.1 + 0.9 * np.exp(-dist_out / (0.35 * radius))) * in_cell * (1.0 - 0.8 * nucleus)
    reticulum = envelope * (0.15 + 1.0 * reticular_network(rng, (size, size), scale))
    return Scene(
        size=size,
        scale=scale,
        cells=cells,
        cell_mask=cell_mask,
        nuclei_mask=nuclei_mask,
        nucleus=nucleus,
        thickness=thickness,
        cytoplasm=cytoplasm,
        dist_out=dist_out,
        dist_in=dist_in,
        dist_edge=dist_edge,
        nucleoli=nucleoli,
        filaments=filaments * np.sqrt(thickness),
        spindles=_draw_spindles(rng, cells, cell_mask, scale),
        reticulum=reticulum.astype(np.float32),
        fine=texture(rng, (size, size), 0.8 * scale),
        medium=texture(rng, (size, size), 2.5 * scale),
    )


def blue_signal(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Nuclear stain: textured nuclei with dim nucleoli; mitotic chromatin bright and clumpy. (H, W) float32."""
    level = scene.per_cell(rng.lognormal(0.0, 0.25, len(scene.cells)))
    mitotic = scene.per_cell(np.array([c.mitotic for c in scene.cells], dtype=np.float32))
    chromatin = 0.8 + 0.16 * scene.medium + 0.1 * scene.fine
    clumps = 1.4 + 0.7 * np.maximum(scene.medium, -0.5)
    body = np.where(mitotic > 0, clumps, chromatin * (1.0 - 0.35 * scene.nucleoli))
    rim = 1.0 + 0.15 * np.exp(-scene.dist_in / (2.0 * scene.scale))
    return (scene.nucleus * body * rim * level).astype(np.float32)


def red_signal(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Microtubules: filaments over a dim cytoplasm, spindles in mitotic cells. (H, W) float32."""
    level = scene.per_cell(rng.lognormal(0.0, 0.3, len(scene.cells)))
    signal = 0.9 * scene.filaments + 0.12 * scene.cytoplasm * (1.0 + 0.3 * scene.medium)
    signal = signal * (1.0 - 0.6 * scene.nucleus)
    mitotic = scene.per_cell(np.array([c.mitotic for c in scene.cells], dtype=np.float32))
    signal = np.where(mitotic > 0, 0.5 * scene.cytoplasm * (1.0 + 0.3 * scene.medium) + 0.5 * scene.spindles, signal)
    return (signal * level).astype(np.float32)


def _draw_spindles(
    rng: np.random.Generator, cells: list[CellGeometry], cell_mask: np.ndarray, scale: float
) -> np.ndarray:
    """Spindle fibres of every mitotic cell, each inside its own cell. (H, W) float32 in [0, 1]."""
    size = cell_mask.shape[0]
    spindles = np.zeros((size, size), dtype=np.float32)
    for k, cell in enumerate(cells, start=1):
        if not cell.mitotic:
            continue
        rows, cols = cell_box(cell, size)
        crop = np.zeros((rows.stop - rows.start, cols.stop - cols.start), dtype=np.float32)
        draw_polylines(crop, spindle_paths(rng, cell, 14), (cols.start, rows.start), 0.8)
        crop = gaussian_blur(crop, 0.8 * scale)
        own = cell_mask[rows, cols] == k
        spindles[rows, cols][own] = np.minimum(crop[own] * 1.2, 1.0)
    return spindles


def yellow_signal(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Endoplasmic reticulum: reticular meshwork densest around the nucleus. (H, W) float32."""
    level = scene.per_cell(rng.lognormal(0.0, 0.3, len(scene.cells)))
    envelope_rim = np.exp(-((scene.dist_out / (1.5 * scene.scale)) ** 2)) * scene.cytoplasm
    return ((scene.reticulum + 0.3 * envelope_rim + 0.08 * scene.nucleus) * level).astype(np.float32)
