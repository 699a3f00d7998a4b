"""Cutting every segmented cell out of an image: a square, padded box around the cell, resized to one side.

A cell's tight bounding box is made square around its centre and enlarged by ``padding`` on each side; the
parts outside the image are zeros. ``crop_mask`` says what the crop shows around the cell:

* ``zero``: pixels outside the cell are zeroed (the cell alone);
* ``channel``: raw context, plus the cell mask as a 5th channel (0 or 255);
* ``none``: raw context only.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

CROP_MASKS = ("zero", "channel", "none")


def crop_channels(crop_mask: str, in_chans: int = 4) -> int:
    """Channels of a crop: the image's, plus one for the mask with ``crop_mask='channel'``."""
    check_crop_mask(crop_mask)
    return in_chans + (crop_mask == "channel")


def check_crop_mask(crop_mask: str) -> None:
    if crop_mask not in CROP_MASKS:
        raise ValueError(f"--crop_mask must be one of {CROP_MASKS}, got {crop_mask!r}")


@dataclass
class CellCrops:
    """The crops of one image.

    Attributes:
        crops: (K, S, S, C) uint8, C = 4 (RGBY) or 5 (RGBY + cell mask).
        cell_ids: (K,) int cell labels of the mask, ascending.
        boxes: (K, 4) int tight bounding boxes ``y0, x0, y1, x1`` (end exclusive) in image pixels.
        area: (K,) int cell areas in pixels.
    """

    crops: np.ndarray
    cell_ids: np.ndarray
    boxes: np.ndarray
    area: np.ndarray


def square_box(box: tuple[int, int, int, int], padding: float) -> tuple[int, int, int]:
    """(y0, x0, side) of the square centred on a tight ``y0, x0, y1, x1`` box, each side enlarged by ``padding``
    times the longer side; may extend past the image."""
    y0, x0, y1, x1 = box
    side = max(y1 - y0, x1 - x0)
    side = max(1, int(round(side * (1.0 + 2.0 * padding))))
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    return int(round(cy - side / 2.0)), int(round(cx - side / 2.0)), side


def extract_cell_crops(
    image: np.ndarray, cell_mask: np.ndarray, crop_size: int, crop_mask: str = "zero", padding: float = 0.1
) -> CellCrops:
    """One square crop per cell of ``cell_mask``.

    Args:
        image: (H, W, C) uint8 image, C = 4 (RGBY).
        cell_mask: (H, W) integer cell labels, 0 = background.
        crop_size: side S of every crop.
        crop_mask: 'zero', 'channel' or 'none' (see the module docstring).
        padding: context added on each side, as a fraction of the cell's longer side.

    Returns:
        :class:`CellCrops`; K = 0 (empty arrays) for an image without cells.
    """
    check_crop_mask(crop_mask)
    if image.ndim != 3 or image.shape[:2] != cell_mask.shape:
        raise ValueError(f"shape mismatch: image {image.shape}, cell_mask {cell_mask.shape}")
    if crop_size < 1:
        raise ValueError(f"--crop_size must be >= 1, got {crop_size}")
    height, width, in_chans = image.shape
    channels = crop_channels(crop_mask, in_chans)
    slices = ndimage.find_objects(cell_mask)
    cell_ids = np.array([i + 1 for i, s in enumerate(slices) if s is not None], dtype=np.int64)
    crops = np.zeros((len(cell_ids), crop_size, crop_size, channels), dtype=np.uint8)
    boxes = np.zeros((len(cell_ids), 4), dtype=np.int64)
    area = np.zeros(len(cell_ids), dtype=np.int64)
    size = (crop_size, crop_size)
    for row, cell_id in enumerate(cell_ids):
        rows, cols = slices[cell_id - 1]
        boxes[row] = rows.start, cols.start, rows.stop, cols.stop
        y0, x0, side = square_box(tuple(boxes[row]), padding)
        # the part of the square inside the image, and the zero border that completes it
        iy0, ix0, iy1, ix1 = max(y0, 0), max(x0, 0), min(y0 + side, height), min(x0 + side, width)
        border = (iy0 - y0, y0 + side - iy1, ix0 - x0, x0 + side - ix1)  # top, bottom, left, right
        inside = (cell_mask[iy0:iy1, ix0:ix1] == cell_id).view(np.uint8)
        area[row] = int(np.count_nonzero(inside))
        patch, plane = image[iy0:iy1, ix0:ix1], inside
        if any(border):
            patch = cv2.copyMakeBorder(patch, *border, cv2.BORDER_CONSTANT, value=0)
            plane = cv2.copyMakeBorder(inside, *border, cv2.BORDER_CONSTANT, value=0)
        interpolation = cv2.INTER_AREA if side > crop_size else cv2.INTER_LINEAR
        # resized first, masked after: the cost is the crop's, not the cell's pixels
        crops[row, ..., :in_chans] = cv2.resize(patch, size, interpolation=interpolation).reshape(*size, in_chans)
        if crop_mask != "none":
            cover = cv2.resize(plane * np.uint8(255), size, interpolation=interpolation)
            if crop_mask == "zero":
                crops[row, ..., :in_chans] *= (cover >= 128)[..., None]
            else:
                crops[row, ..., in_chans] = cover
    return CellCrops(crops=crops, cell_ids=cell_ids, boxes=boxes, area=area)
