"""The green protein channel: one pattern per class, at the class' true place in the cell.

Each ``_pattern_*`` function draws its class for the cells listed in ``cell_ids`` and
returns an (H, W) float32 map, peaking around 1 inside those cells and 0 elsewhere.
Point-like structures (speckles, bodies, centrosome, vesicles, ...) are splatted as
deltas and blurred once per class; filaments are drawn with OpenCV polylines.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from src.data.classes import NEGATIVE, NUM_CLASSES
from src.synthetic.fields import gaussian_blur
from src.synthetic.geometry import CellGeometry
from src.synthetic.structures import Scene, cell_box, draw_polylines, random_walk_paths


def _spots(scene: Scene, points: np.ndarray, amplitudes: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian spots of peak ``amplitudes`` at ``points`` (n, 2) (x, y); (H, W) float32."""
    canvas = np.zeros((scene.size, scene.size), dtype=np.float32)
    if len(points):
        xy = np.rint(points).astype(np.int64)
        ok = (xy >= 0).all(axis=1) & (xy < scene.size).all(axis=1)
        np.add.at(canvas, (xy[ok, 1], xy[ok, 0]), amplitudes[ok].astype(np.float32))
    if sigma >= 0.3:
        canvas = gaussian_blur(canvas, sigma) * np.float32(2 * np.pi * sigma * sigma)
    return canvas


def _cells(scene: Scene, cell_ids: np.ndarray) -> list[tuple[int, CellGeometry]]:
    return [(int(k), scene.cells[int(k) - 1]) for k in cell_ids]


def _in_nucleus(rng: np.random.Generator, cell: CellGeometry, count: int, reach: float = 0.85) -> np.ndarray:
    """Uniform points inside the nucleus outline scaled by ``reach``; (count, 2)."""
    angles = rng.uniform(0, 2 * np.pi, count).astype(np.float32)
    dist = np.sqrt(rng.random(count)) * reach * cell.nucleus_radius(angles)
    return cell.nucleus_centre[None, :] + np.stack([np.cos(angles), np.sin(angles)], axis=-1) * dist[:, None]


def _in_cytoplasm(rng: np.random.Generator, cell: CellGeometry, count: int, bias: float = 1.0) -> np.ndarray:
    """Points between the nucleus outline and the cell outline; ``bias`` > 1 crowds them near the nucleus."""
    angles = rng.uniform(0, 2 * np.pi, count).astype(np.float32)
    inner = cell.nucleus_radius(angles)
    outer = np.maximum(cell.cell_radius(angles) + np.float32(np.hypot(*(cell.nucleus_centre - cell.centre))), inner)
    dist = inner + rng.random(count) ** bias * (outer - inner)
    return cell.nucleus_centre[None, :] + np.stack([np.cos(angles), np.sin(angles)], axis=-1) * dist[:, None]


def _draw_paths_in_cell(canvas: np.ndarray, scene: Scene, k: int, cell: CellGeometry, paths: np.ndarray) -> None:
    """Draw (P, V, 2) polylines at three intensities into ``canvas``, clipped to the pixels of cell ``k``."""
    rows, cols = cell_box(cell, scene.size)
    crop = np.zeros((rows.stop - rows.start, cols.stop - cols.start), dtype=np.float32)
    for group, value in enumerate((0.5, 0.75, 1.0)):
        draw_polylines(crop, paths[group::3], (cols.start, rows.start), value)
    own = scene.cell_mask[rows, cols] == k
    canvas[rows, cols][own] = crop[own]


def _nucleoplasm(scene: Scene) -> np.ndarray:
    return scene.nucleus * (1.0 - 0.9 * scene.nucleoli) * (0.85 + 0.15 * scene.fine)


def _cytosol(scene: Scene) -> np.ndarray:
    return scene.cytoplasm * (0.85 + 0.1 * scene.medium + 0.08 * scene.fine)


def _pattern_nucleoplasm(scene: Scene, rng: np.random.Generator, cell_ids: np.ndarray) -> np.ndarray:
    return _nucleoplasm(scene)


def _pattern_nuclear_membrane(scene: Scene, rng: np.random.Generator, cell_ids: np.ndarray) -> np.ndarray:
    signed = np.maximum(scene.dist_in + scene.dist_out - 1.0, 0.0)
    rim = np.exp(-((signed / (1.3 * scene.scale)) ** 2)) * (scene.cell_mask > 0)
    return rim * (0.85 + 0.15 * scene.medium) + 0.12 * _nucleoplasm(scene)


def _pattern_nucleoli(scene: Scene, rng: np.random.Generator, cell_ids: np.ndarray) -> np.ndarray:
    return np.minimum(scene.nucleoli * 1.3, 1.0) * (0.9 + 0.1 * scene.fine) + 0.06 * _nucleoplasm(scene)


def _pattern_fibrillar_center(scene: Scene, rng: np.random.Generator, cell_ids: np.ndarray) -> np.ndarray:
    points = []
    for _, cell in _cells(scene, cell_ids):
        for x, y, a, _b, _angle in cell.nucleoli:
            count = int(rng.integers(2, 6))
            offsets = rng.normal(0, 0.45 * a, (count, 2))
            points.append(np.array([x, y]) + offsets)
    points_xy = np.concatenate(points) if points else np.zeros((0, 2))
    dots = _spots(scene, points_xy, rng.uniform(0.6, 1.0, len(points_xy)), 0.8 * scene.scale)
    return np.minimum(dots, 1.2) * (scene.nucleoli > 0.05) + 0.05 * _nucleoplasm(scene)


def _pattern_nuclear_speckles(scene: Scene, rng: np.random.Generator, cell_ids: np.ndarray) -> np.ndarray:
    points = []
    for _, cell in _cells(scene, cell_ids):
        centres = _in_nucleus(rng, cell, int(rng.integers(12, 28)), reach=0.8)
        parts = centres[:, None, :] + rng.normal(0, 1.6 * scene.scale, (len(centres), 5, 2))
        points.append(parts.reshape(-1, 2))
    points_xy = np.concatenate(points) if points else np.zeros((0, 2))
    blobs = _spots(scene, points_xy, rng.uniform(0.25, 0.45, len(points_xy)), 1.3 * scene.scale)
    return np.minimum(blobs, 1.0) * (1.0 - scene.nucleoli) * scene.nucleus + 0.2 * _nucleoplasm(scene)


def _pattern_nuclear_bodies(scene: Scene, rng: np.random.Generator, cell_ids: np.ndarray) -> np.ndarray:
    points = np.concatenate(
        [_in_nucleus(rng, cell, int(rng.integers(1, 7)), reach=0.75) for _, cell in _cells(scene, cell_ids)]
        or [np.zeros((0, 2))]
    )
    dots = _spots(scene, points, rng.uniform(0.7, 1.0, len(points)), 1.3 * scene.scale)
    return dots * scene.nucleus + 0.04 * _nucleoplasm(scene)


def _pattern_endoplasmic_reticulum(scene: Scene, rng: np.random.Generator, cell_ids: np.ndarray) -> np.ndarray:
    rim = np.exp(-((scene.dist_out / (1.5 * scene.scale)) ** 2)) * scene.cytoplasm
    return np.minimum(scene.reticulum * 1.2 + 0.4 * rim, 1.0)


def _pattern_golgi(scene: Scene, rng: np.random.Generator, cell_ids: np.ndarray) -> np.ndarray:
    points = []
    for _, cell in _cells(scene, cell_ids):
        count = int(rng.integers(25, 50))
        angles = cell.mtoc_angle + rng.normal(0, 0.45, count)
        gaps = rng.gamma(2.0, 0.06 * cell.radius, count)
        points.append(cell.point_beside_nucleus(angles, gaps))
    points_xy = np.concatenate(points) if points else np.zeros((0, 2))
    blobs = _spots(scene, points_xy, rng.uniform(0.3, 0.7, len(points_xy)), 1.4 * scene.scale)
    return np.minimum(blobs, 1.0) * scene.cytoplasm


def _pattern_intermediate_filaments(scene: Scene, rng: np.random.Generator, cell_ids: np.ndarray) -> np.ndarray:
    canvas = np.zeros((scene.size, scene.size), dtype=np.float32)
    step = 3.0 * scene.scale
    for k, cell in _cells(scene, cell_ids):
        count = int(45 * (cell.radius / (50 * scene.scale)) ** 2)
        angles = rng.uniform(0, 2 * np.pi, count)
        starts = cell.point_beside_nucleus(angles, rng.uniform(0, 0.5, count) * cell.radius)
        headings = angles + np.pi / 2 * rng.choice([-1, 1], count) + rng.normal(0, 0.5, count)
        paths = random_walk_paths(rng, starts, headings, step, int(1.8 * cell.radius / step), wiggle=0.13)
        rows, cols = cell_box(cell, scene.size)
        crop = np.zeros((rows.stop - rows.start, cols.stop - cols.start), dtype=np.float32)
        draw_polylines(crop, paths, (cols.start, rows.start), 1.0)
        own = scene.cell_mask[rows, cols] == k
        canvas[rows, cols][own] = crop[own]
    canvas = gaussian_blur(canvas, 0.5 * scene.scale)
    return canvas * (0.6 + 0.4 * np.clip(0.5 + 0.5 * scene.medium, 0, 1)) * (1.0 - 0.6 * scene.nucleus)


def _pattern_actin_filaments(scene: Scene, rng: np.random.Generator, cell_ids: np.ndarray) -> np.ndarray:
    canvas = np.zeros((scene.size, scene.size), dtype=np.float32)
    for k, cell in _cells(scene, cell_ids):
        count = int(rng.integers(10, 25))
        direction = rng.uniform(0, np.pi) + rng.normal(0, 0.08, count)
        normal = np.stack([-np.sin(direction), np.cos(direction)], axis=-1)
        along = np.stack([np.cos(direction), np.sin(direction)], axis=-1)
        offsets = rng.uniform(-1, 1, (count, 1)) * cell.radius
        mid = cell.centre[None, :] + normal * offsets
        reach = 1.5 * cell.max_cell_radius()
        paths = np.stack([mid - along * reach, mid + along * reach], axis=1)
        _draw_paths_in_cell(canvas, scene, k, cell, paths)
    fibres = canvas * np.clip(0.6 + 0.5 * scene.medium, 0.2, 1.0)
    cortex = np.exp(-scene.dist_edge / (1.5 * scene.scale)) * (scene.cell_mask > 0)
    return np.maximum(fibres, 0.9 * cortex) + 0.08 * scene.cytoplasm


def _pattern_microtubules(scene: Scene, rng: np.random.Generator, cell_ids: np.ndarray) -> np.ndarray:
    return np.minimum(scene.filaments * 1.1, 1.0) + 0.08 * scene.cytoplasm


def _pattern_mitotic_spindle(scene: Scene, rng: np.random.Generator, cell_ids: np.ndarray) -> np.ndarray:
    return scene.spindles + 0.1 * scene.cytoplasm


def _pattern_centrosome(scene: Scene, rng: np.random.Generator, cell_ids: np.ndarray) -> np.ndarray:
    points = []
    for _, cell in _cells(scene, cell_ids):
        first = cell.point_beside_nucleus(np.array([cell.mtoc_angle]), rng.uniform(1, 5, 1) * scene.scale)
        points.append(first)
        if rng.random() < 0.6:
            points.append(first + rng.normal(0, 2.5 * scene.scale, (1, 2)))
    points_xy = np.concatenate(points) if points else np.zeros((0, 2))
    dots = _spots(scene, points_xy, np.ones(len(points_xy)), 1.2 * scene.scale)
    return np.minimum(dots, 1.0) * (scene.cell_mask > 0) + 0.04 * scene.cytoplasm


def _pattern_plasma_membrane(scene: Scene, rng: np.random.Generator, cell_ids: np.ndarray) -> np.ndarray:
    rim = np.exp(-scene.dist_edge / (1.3 * scene.scale)) * (scene.cell_mask > 0)
    return rim * (0.75 + 0.25 * scene.medium) + 0.08 * scene.cytoplasm


def _pattern_mitochondria(scene: Scene, rng: np.random.Generator, cell_ids: np.ndarray) -> np.ndarray:
    canvas = np.zeros((scene.size, scene.size), dtype=np.float32)
    step = 2.5 * scene.scale
    for k, cell in _cells(scene, cell_ids):
        count = int(220 * (cell.radius / (50 * scene.scale)) ** 2)
        starts = _in_cytoplasm(rng, cell, count, bias=1.6)
        paths = random_walk_paths(
            rng, starts, rng.uniform(0, 2 * np.pi, count), step, int(rng.integers(2, 5)), wiggle=0.4
        )
        _draw_paths_in_cell(canvas, scene, k, cell, paths)
    return gaussian_blur(canvas, 0.5 * scene.scale) * scene.cytoplasm


def _pattern_aggresome(scene: Scene, rng: np.random.Generator, cell_ids: np.ndarray) -> np.ndarray:
    points = []
    for _, cell in _cells(scene, cell_ids):
        centre = cell.point_beside_nucleus(np.array([rng.uniform(0, 2 * np.pi)]), rng.uniform(2, 6, 1) * scene.scale)
        points.append(centre + rng.normal(0, 2.0 * scene.scale, (8, 2)))
    points_xy = np.concatenate(points) if points else np.zeros((0, 2))
    blob = _spots(scene, points_xy, np.full(len(points_xy), 0.35), 2.2 * scene.scale)
    return np.minimum(blob, 1.0) * (scene.cell_mask > 0) + 0.1 * _cytosol(scene)


def _pattern_cytosol(scene: Scene, rng: np.random.Generator, cell_ids: np.ndarray) -> np.ndarray:
    return _cytosol(scene) + 0.06 * scene.nucleus


def _pattern_vesicles(scene: Scene, rng: np.random.Generator, cell_ids: np.ndarray) -> np.ndarray:
    points = []
    for _, cell in _cells(scene, cell_ids):
        points.append(_in_cytoplasm(rng, cell, int(90 * (cell.radius / (50 * scene.scale)) ** 2), bias=1.2))
    points_xy = np.concatenate(points) if points else np.zeros((0, 2))
    dots = _spots(scene, points_xy, rng.uniform(0.3, 1.0, len(points_xy)), 0.9 * scene.scale)
    return np.minimum(dots, 1.0) * scene.cytoplasm + 0.06 * scene.cytoplasm


PATTERNS: dict[int, Callable[[Scene, np.random.Generator, np.ndarray], np.ndarray]] = {
    0: _pattern_nucleoplasm,
    1: _pattern_nuclear_membrane,
    2: _pattern_nucleoli,
    3: _pattern_fibrillar_center,
    4: _pattern_nuclear_speckles,
    5: _pattern_nuclear_bodies,
    6: _pattern_endoplasmic_reticulum,
    7: _pattern_golgi,
    8: _pattern_intermediate_filaments,
    9: _pattern_actin_filaments,
    10: _pattern_microtubules,
    11: _pattern_mitotic_spindle,
    12: _pattern_centrosome,
    13: _pattern_plasma_membrane,
    14: _pattern_mitochondria,
    15: _pattern_aggresome,
    16: _pattern_cytosol,
    17: _pattern_vesicles,
}
assert set(PATTERNS) == set(range(NUM_CLASSES)) - {NEGATIVE}


def green_signal(
    scene: Scene, rng: np.random.Generator, cell_labels: dict[int, list[int]], expression: np.ndarray
) -> np.ndarray:
    """The protein channel: each cell shows the patterns of its own labels.

    Args:
        scene: the image's scene.
        rng: random generator.
        cell_labels: class ids per cell id (1-based); [18] = no signal.
        expression: (n_cells,) protein level per cell (cell-to-cell differences).

    Returns:
        (H, W) float32 signal, about 0..1.5.
    """
    signal = np.zeros((scene.size, scene.size), dtype=np.float32)
    classes = sorted({c for labels in cell_labels.values() for c in labels} - {NEGATIVE})
    for class_id in classes:
        cell_ids = np.array([k for k, labels in cell_labels.items() if class_id in labels], dtype=np.int64)
        has_class = np.zeros(len(scene.cells) + 1, dtype=np.float32)
        has_class[cell_ids] = rng.uniform(0.6, 1.0)
        signal += PATTERNS[class_id](scene, rng, cell_ids) * has_class[scene.cell_mask]
    # Patterns peak near 1; several classes in one cell share the protein.
    signal /= 1.0 + 0.25 * max(len(classes) - 1, 0)
    return signal * scene.per_cell(expression)
