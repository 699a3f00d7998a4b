"""The ``learned`` mask backend: a small U-Net's interior/boundary maps plus seeded watersheds.

The image is brought to the working scale the network was trained at (the nucleus size is
estimated per image as the classical backend does, and the image resized so a nucleus spans
about 24 px: 0.1-0.2 for 2048 px HPA images), normalised by robust percentiles, and run
through the network whole or in overlapping tiles blended towards their centres (bounded memory for
any image size), by default also at 0.7 and 1.4 times the working scale, the maps averaged. Nuclei:
maxima of the interior map plus the distance to the background, inside the interior cores, seed
a watershed over the nucleus foreground. Cells: the
nuclei seed a watershed over the cell foreground on the cell-boundary map (plus a little of the
distance to the nucleus), so label k grows from nucleus k, as in the classical backend; with
``cells='classical'`` the classical cell watershed grows them instead. Labels come back to the
original size by nearest-neighbour resizing. An image where no nucleus stands out gives empty masks.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from src.cell_masks.classical import (
    ClassicalParams,
    _normalise,
    _resize,
    coarse_nuclear_stain,
    estimate_nucleus_diameter,
    relabel_consistent,
    segment_cells_working,
)
from src.cell_masks.learned_net import NUM_CLASSES, OUTPUT_STRIDE, WorkingScale, load_weights
from src.data.io import file_sha256

logger = logging.getLogger(__name__)

CELL_METHODS = ("learned", "classical")


@dataclass(frozen=True)
class LearnedParams:
    """Post-processing and tiling of the learned backend (the weights carry the rest).

    Attributes:
        cells: 'learned' (watershed on the network's cell maps) or 'classical' (the classical cell watershed
            seeded by the learned nuclei).
        tile_size: the network runs on tiles of at most this many working pixels a side ...
        tile_overlap: ... overlapping by this many pixels (their probabilities are averaged).
        foreground_threshold: a pixel is inside a nucleus when the nucleus maps' P(interior) + P(boundary) is above
            this ...
        cell_foreground_threshold: ... and inside a cell when the cell maps' sum is above this (separate: the two
            kinds of object are tuned apart, and a higher nucleus threshold must not shrink the cells).
        seed_threshold: nucleus seeds lie where P(interior) is above this ...
        seed_h: ... and are the h-maxima of this depth of a landscape adding the distance to the background (in
            nucleus diameters) to P(interior), which parts touching nuclei whose interiors the network joined
            (0: the connected interior cores are the seeds).
        min_seed_fraction: (seed_h 0) seeds smaller than this fraction of the typical nucleus area are dropped.
        min_nucleus_fraction: nuclei smaller than this fraction of the typical nucleus area are removed.
        distance_weight: weight of the distance to the nucleus (in nucleus diameters) in the cell landscape.
        min_cell_fraction: cells smaller than this multiple of the typical nucleus area are dropped.
        tta_scales: test-time augmentation: the network runs at these multiples of the working scale and the maps
            are averaged at the working scale ((1.0,): once). Errors of the per-image nucleus size estimate and
            nuclei near the edges of the trained size range average out; the default was chosen on images the
            network never trained on (README, "Test-time augmentation").
        tta_flip: also run on the left-right mirrored image and average (twice the network runs).
    """

    cells: str = "learned"
    tile_size: int = 512
    tile_overlap: int = 64
    foreground_threshold: float = 0.5
    cell_foreground_threshold: float = 0.5
    seed_threshold: float = 0.5
    seed_h: float = 0.05
    min_seed_fraction: float = 0.03
    min_nucleus_fraction: float = 0.1
    distance_weight: float = 0.05
    min_cell_fraction: float = 0.5
    tta_scales: tuple[float, ...] = (0.7, 1.0, 1.4)
    tta_flip: bool = False

    def __post_init__(self) -> None:
        scales = (self.tta_scales,) if isinstance(self.tta_scales, int | float) else tuple(self.tta_scales)
        if not scales or any(not isinstance(v, int | float) or not 0.25 <= v <= 4.0 for v in scales):
            raise ValueError(f"backend 'learned': tta_scales {self.tta_scales!r} must be numbers in [0.25, 4]")
        object.__setattr__(self, "tta_scales", tuple(float(v) for v in scales))
        if not isinstance(self.tta_flip, bool):
            raise ValueError(f"backend 'learned': tta_flip {self.tta_flip!r} must be true or false")
        if self.cells not in CELL_METHODS:
            raise ValueError(f"backend 'learned': cells {self.cells!r}; valid: {', '.join(CELL_METHODS)}")
        if self.tile_size % OUTPUT_STRIDE or self.tile_size <= self.tile_overlap * 2:
            raise ValueError(
                f"backend 'learned': tile_size {self.tile_size} must be a multiple of {OUTPUT_STRIDE} "
                f"and more than twice tile_overlap {self.tile_overlap}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def working_factor(blue: np.ndarray, working: WorkingScale) -> float | None:
    """Resize factor (original to working) of an image from its nuclear stain, or None when it is empty.

    Args:
        blue: (H, W) nuclear stain, any dtype.
        working: the network's working scale.
    """
    coarse, coarse_factor = coarse_nuclear_stain(blue)
    diameter = estimate_nucleus_diameter(coarse)
    if diameter is None:
        return None
    factor = working.nucleus_diameter_px / (diameter / coarse_factor)
    return float(np.clip(factor, working.min_scale, working.max_scale))


def network_input(blue: np.ndarray, cytoplasm: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """The network's (2, h, w) float32 input in [0, 1] at the working ``shape`` (rows, cols).

    Args:
        blue: (H, W) nuclear stain.
        cytoplasm: (H, W) cell-body signal (max of microtubules and ER), or None (nuclei only: zeros).
        shape: working (rows, cols).
    """
    channels = [_normalise(_resize(blue, shape))]
    channels.append(np.zeros(shape, np.float32) if cytoplasm is None else _normalise(_resize(cytoplasm, shape)))
    return np.stack(channels).astype(np.float32)


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def _tile_weight(height: int, width: int, overlap: int) -> np.ndarray:
    """(height, width) blending weight of one tile: rising linearly over ``overlap`` pixels from each edge.

    A tile's outputs near its edges see zero padding instead of the image, so where tiles overlap the inner one
    weighs more; where only one tile covers a pixel the weight cancels out in the normalisation.
    """

    def ramp(length: int) -> np.ndarray:
        to_edge = np.minimum(np.arange(length), np.arange(length)[::-1])
        return np.minimum(1.0, (to_edge + 1.0) / (overlap + 1.0))

    return np.outer(ramp(height), ramp(width)).astype(np.float32)


@torch.inference_mode()
def predict_maps(network: torch.nn.Module, image: np.ndarray, tile_size: int = 512, overlap: int = 64) -> np.ndarray:
    """Class probabilities of a working-scale image, tile by tile.

    Args:
        network: the U-Net in eval mode.
        image: (2, h, w) float32 network input.
        tile_size: largest side run at once (multiple of 32).
        overlap: overlap of neighbouring tiles, pixels; their probabilities are blended with weights falling
            towards each tile's edges.

    Returns:
        (6, h, w) float32: softmax over (background, interior, boundary) for nuclei, then for cells.
    """
    _, height, width = image.shape
    tile_h, tile_w = min(tile_size, height), min(tile_size, width)
    padded_h = -(-tile_h // OUTPUT_STRIDE) * OUTPUT_STRIDE
    padded_w = -(-tile_w // OUTPUT_STRIDE) * OUTPUT_STRIDE
    weight = _tile_weight(tile_h, tile_w, overlap)
    total = np.zeros((2 * NUM_CLASSES, height, width), np.float32)
    weights = np.zeros((height, width), np.float32)
    device = next(network.parameters()).device  # the CPU at inference; the training device when validating
    for top in _tile_starts(height, tile_h, overlap):
        for left in _tile_starts(width, tile_w, overlap):
            tile = np.zeros((1, image.shape[0], padded_h, padded_w), np.float32)
            tile[0, :, :tile_h, :tile_w] = image[:, top : top + tile_h, left : left + tile_w]
            logits = network(torch.from_numpy(tile).to(device))[0, :, :tile_h, :tile_w].float()
            probs = torch.cat([logits[:NUM_CLASSES].softmax(0), logits[NUM_CLASSES:].softmax(0)])
            total[:, top : top + tile_h, left : left + tile_w] += probs.cpu().numpy() * weight
            weights[top : top + tile_h, left : left + tile_w] += weight
    return total / weights


def augmented_maps(
    network: torch.nn.Module,
    blue: np.ndarray,
    cytoplasm: np.ndarray | None,
    shape: tuple[int, int],
    params: LearnedParams,
    working_input: np.ndarray | None = None,
) -> np.ndarray:
    """(6, rows, cols) maps at the working ``shape``, averaged over ``params.tta_scales`` and ``tta_flip``.

    Args:
        network: the U-Net in eval mode.
        blue: (H, W) nuclear stain.
        cytoplasm: (H, W) cell-body signal, or None.
        shape: working (rows, cols); each scale runs at ``shape`` times the scale and is resized back.
        params: the augmentations and tiling.
        working_input: ``network_input(blue, cytoplasm, shape)`` when the caller has it already (reused for the
            scales that land on ``shape``).
    """
    total = np.zeros((2 * NUM_CLASSES, *shape), np.float32)
    for scale in params.tta_scales:
        scaled = (max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale)))
        reuse = working_input is not None and scaled == shape
        image = working_input if reuse else network_input(blue, cytoplasm, scaled)
        maps = predict_maps(network, image, params.tile_size, params.tile_overlap)
        if params.tta_flip:
            mirrored = predict_maps(
                network, np.ascontiguousarray(image[:, :, ::-1]), params.tile_size, params.tile_overlap
            )
            maps = (maps + mirrored[:, :, ::-1]) / 2.0
        if scaled != shape:
            maps = np.stack([cv2.resize(m, shape[::-1], interpolation=cv2.INTER_LINEAR) for m in maps])
        total += maps
    return total / len(params.tta_scales)


def nuclei_from_maps(maps: np.ndarray, params: LearnedParams, diameter: float) -> np.ndarray:
    """Nucleus labels from the nucleus maps: seeds in the interior cores, a watershed over the foreground.

    Args:
        maps: (3, h, w) nucleus probabilities (background, interior, boundary).
        params: post-processing parameters.
        diameter: typical nucleus diameter at the working scale, pixels.

    Returns:
        (h, w) int32 labels, 0 = background.
    """
    interior, boundary = maps[1], maps[2]
    foreground = ndi.binary_fill_holes(interior + boundary > params.foreground_threshold)
    typical_area = np.pi * (diameter / 2.0) ** 2
    core = (interior > params.seed_threshold) & foreground
    if params.seed_h > 0:
        # the image border counts as background (a foreground with no background pixel has no finite distance)
        padded = np.pad(foreground.astype(np.uint8), 1)
        distance = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
        landscape = cv2.GaussianBlur(distance, (0, 0), 1.0) / diameter + interior
        seeds, count = ndi.label(h_maxima(landscape.astype(np.float32), params.seed_h) & core)
    else:
        landscape = interior - boundary
        seeds, count = ndi.label(core)
        small = np.bincount(seeds.ravel()) < params.min_seed_fraction * typical_area
        small[0] = False
        seeds[small[seeds]] = 0
    if count == 0:
        return np.zeros(interior.shape, np.int32)
    labels = watershed(-landscape, seeds, mask=foreground)
    areas = np.bincount(labels.ravel())
    small = areas < params.min_nucleus_fraction * typical_area
    small[0] = False
    labels[small[labels]] = 0
    return labels.astype(np.int32)


def cells_from_maps(maps: np.ndarray, nuclei: np.ndarray, params: LearnedParams, diameter: float) -> np.ndarray:
    """Cell labels grown from the nuclei over the cell foreground, on the cell-boundary map.

    Args:
        maps: (3, h, w) cell probabilities (background, interior, boundary).
        nuclei: (h, w) int32 nucleus labels (the seeds; cell k grows from nucleus k).
        params: post-processing parameters.
        diameter: typical nucleus diameter at the working scale, pixels.

    Returns:
        (h, w) int32 cell labels.
    """
    if not nuclei.any():
        return np.zeros(nuclei.shape, np.int32)
    foreground = ndi.binary_fill_holes((maps[1] + maps[2] > params.cell_foreground_threshold) | (nuclei > 0))
    distance = cv2.distanceTransform((nuclei == 0).astype(np.uint8), cv2.DIST_L2, 5)
    landscape = maps[2] - maps[1] + params.distance_weight * distance / diameter
    cells = watershed(landscape, nuclei, mask=foreground)
    areas = np.bincount(cells.ravel())
    small = areas < params.min_cell_fraction * np.pi * (diameter / 2.0) ** 2
    small[0] = False
    cells[small[cells]] = 0
    return cells.astype(np.int32)


class LearnedSegmenter:
    """Nucleus and cell labels from a U-Net trained by ``train_cell_segmenter.py``.

    The weight file is checked and loaded at construction (it is small); its SHA-256, not its path,
    goes into ``params`` (the mask cache's manifest), so a cache made with other weights is refused.

    Args:
        weights: the weight file.
        **post: ``LearnedParams`` fields.

    Raises:
        FileNotFoundError, ValueError: missing or mismatched weight file (the message names it).
    """

    name = "learned"

    def __init__(self, weights: str | os.PathLike | None = None, **post) -> None:
        known = set(LearnedParams.__dataclass_fields__)
        unknown = sorted(set(post) - known)
        if unknown:
            raise ValueError(f"backend 'learned': unknown parameter(s) {unknown}; valid: weights, {sorted(known)}")
        self.config = LearnedParams(**post)
        self.network, self.working, payload = load_weights(weights)
        self.params = {
            "weights_sha256": file_sha256(weights),
            "network": payload["network"],
            "working": payload["working"],
            **self.config.to_dict(),
        }

    def _maps(self, blue: np.ndarray, cytoplasm: np.ndarray | None) -> tuple[np.ndarray, float] | None:
        """(6, h, w) maps at the working scale and the factor, or None when no nucleus stands out."""
        factor = working_factor(blue, self.working)
        if factor is None:
            return None
        height, width = blue.shape
        shape = (max(1, round(height * factor)), max(1, round(width * factor)))
        image = network_input(blue, cytoplasm, shape)
        if float(image[0].max()) <= 0.0:
            return None
        return augmented_maps(self.network, blue, cytoplasm, shape, self.config, image), factor

    def nuclei(self, blue: np.ndarray) -> np.ndarray:
        """(H, W) uint16 nucleus labels of a nuclear-stain image alone (the cell channel is left empty)."""
        result = self._maps(blue, None)
        if result is None:
            return np.zeros(blue.shape, np.uint16)
        labels = nuclei_from_maps(result[0][:NUM_CLASSES], self.config, self.working.nucleus_diameter_px)
        _, labels = relabel_consistent(labels, labels)
        return _resize(labels, blue.shape, nearest=True)

    def __call__(self, rgby: np.ndarray, image_id: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Segment one (H, W, 4) RGBY image; returns (nuclei_mask, cell_mask), (H, W) uint16, nucleus k in cell k."""
        if rgby.ndim != 3 or rgby.shape[2] != 4:
            raise ValueError(f"image {image_id}: expected an (H, W, 4) RGBY array, got shape {rgby.shape}")
        height, width = rgby.shape[:2]
        cytoplasm = np.maximum(rgby[..., 0], rgby[..., 3])
        result = self._maps(rgby[..., 2], cytoplasm)
        if result is None:
            logger.debug("image %s: no nuclei stand out of the background; empty masks", image_id)
            empty = np.zeros((height, width), np.uint16)
            return empty, empty.copy()
        maps, _ = result
        diameter = self.working.nucleus_diameter_px
        nuclei = nuclei_from_maps(maps[:NUM_CLASSES], self.config, diameter)
        if self.config.cells == "classical":
            shape = maps.shape[1:]
            blue = _normalise(_resize(rgby[..., 2], shape))
            signal = np.maximum(_normalise(_resize(cytoplasm, shape)), blue)
            cells = segment_cells_working(signal, nuclei, diameter, ClassicalParams())
        else:
            cells = cells_from_maps(maps[NUM_CLASSES:], nuclei, self.config, diameter)
        nuclei_mask, cell_mask = relabel_consistent(nuclei, cells)
        return _resize(nuclei_mask, (height, width), nearest=True), _resize(cell_mask, (height, width), nearest=True)
