"""Training data of the learned mask backend: images with instance truth, targets and augmented patches.

Sources: the synthetic benchmark's train split (nuclei and cells, ``truth/{nuclei,cell}_masks``)
and real fluorescence nuclei in the layout of ``dsb2018_stage1_train_fluo`` (``images/{id}.png``,
``label_masks/{id}.png`` uint16 instance labels; nuclei only, the cell channel is empty there).
Each image is kept at its own size, normalised as at inference, with the factor that brings it
to the working scale; patches are cut and resized to the working scale times a random factor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from skimage.segmentation import find_boundaries

from src.cell_masks.classical import _normalise, _resize
from src.cell_masks.learned import working_factor
from src.cell_masks.learned_net import WorkingScale
from src.data.io import read_rgby

logger = logging.getLogger(__name__)

IGNORE = -100  # target value of pixels without truth (the cell maps of nuclei-only images)
NUCLEUS_RING = 2  # boundary ring width at the working scale, pixels
CELL_RING = 3


@dataclass
class TrainImage:
    """One training image at its own size.

    Attributes:
        name: source and ID, for messages.
        blue: (H, W) uint8 nuclear stain, normalised to 0-255 by robust percentiles.
        cytoplasm: (H, W) uint8 cell-body signal, same normalisation, or None (nuclei-only image).
        nuclei: (H, W) int32 nucleus instance labels.
        cells: (H, W) int32 cell instance labels, or None.
        factor: resize factor from this image to the working scale.
    """

    name: str
    blue: np.ndarray
    cytoplasm: np.ndarray | None
    nuclei: np.ndarray
    cells: np.ndarray | None
    factor: float


def _as_uint8(channel: np.ndarray) -> np.ndarray:
    return (_normalise(channel) * 255.0 + 0.5).astype(np.uint8)


def _factor(blue: np.ndarray, nuclei: np.ndarray, working: WorkingScale) -> float:
    """The working factor inference would use; from the true nucleus size when the estimate fails."""
    factor = working_factor(blue, working)
    if factor is not None:
        return factor
    areas = np.bincount(nuclei.ravel())[1:]
    areas = areas[areas > 0]
    diameter = 2.0 * np.sqrt(np.median(areas) / np.pi) if areas.size else working.nucleus_diameter_px
    return float(np.clip(working.nucleus_diameter_px / diameter, working.min_scale, working.max_scale))


def load_nuclei_folder(folder: str | Path, working: WorkingScale, limit: int | None = None) -> list[TrainImage]:
    """Real nuclei: ``images/{id}.png`` (greyscale or identical colour planes) and ``label_masks/{id}.png``.

    Raises:
        FileNotFoundError: the folder, its images or a label file is missing (the path is named).
    """
    folder = Path(folder)
    image_dir, label_dir = folder / "images", folder / "label_masks"
    if not image_dir.is_dir() or not label_dir.is_dir():
        raise FileNotFoundError(f"--dsb_dir {folder}: expected images/ and label_masks/ (dsb2018_stage1_train_fluo)")
    paths = sorted(image_dir.glob("*.png"))[:limit]
    if not paths:
        raise FileNotFoundError(f"--dsb_dir {folder}: no images/*.png")
    images = []
    for path in paths:
        label_path = label_dir / path.name
        gray = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        nuclei = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
        if gray is None or nuclei is None:
            raise FileNotFoundError(f"{path if gray is None else label_path}: missing or unreadable")
        gray = gray[..., :3].max(axis=-1) if gray.ndim == 3 else gray
        nuclei = nuclei.astype(np.int32)
        images.append(
            TrainImage(f"dsb/{path.stem}", _as_uint8(gray), None, nuclei, None, _factor(gray, nuclei, working))
        )
    return images


def load_synthetic(data_dir: str | Path, working: WorkingScale, split: str = "train") -> list[TrainImage]:
    """Synthetic benchmark images of ``split`` with their nucleus and cell truth.

    Raises:
        FileNotFoundError: no truth folders, or no image of the split has truth.
    """
    data_dir = Path(data_dir)
    truth = data_dir / "truth"
    if not (truth / "cell_masks").is_dir() or not (truth / "nuclei_masks").is_dir():
        raise FileNotFoundError(f"--synthetic_dir {data_dir}: no truth/cell_masks and truth/nuclei_masks")
    ids = sorted(p.name[: -len("_blue.png")] for p in (data_dir / split).glob("*_blue.png"))
    images = []
    for image_id in ids:
        cell_path, nuclei_path = truth / "cell_masks" / f"{image_id}.png", truth / "nuclei_masks" / f"{image_id}.png"
        if not cell_path.is_file() or not nuclei_path.is_file():
            continue
        rgby = read_rgby(data_dir, image_id, split=split)
        nuclei = cv2.imread(str(nuclei_path), cv2.IMREAD_UNCHANGED).astype(np.int32)
        cells = cv2.imread(str(cell_path), cv2.IMREAD_UNCHANGED).astype(np.int32)
        blue, cytoplasm = rgby[..., 2], np.maximum(rgby[..., 0], rgby[..., 3])
        factor = _factor(blue, nuclei, working)
        images.append(TrainImage(f"synthetic/{image_id}", _as_uint8(blue), _as_uint8(cytoplasm), nuclei, cells, factor))
    if not images:
        raise FileNotFoundError(f"--synthetic_dir {data_dir}: no {split} image with truth masks")
    return images


def instance_targets(labels: np.ndarray, ring: int) -> np.ndarray:
    """Per-pixel classes of instance labels: 0 background, 1 interior, 2 boundary ring inside each object.

    Args:
        labels: (h, w) int instance labels.
        ring: width of the boundary ring, pixels (touching objects are split by two rings).

    Returns:
        (h, w) int64 classes.
    """
    boundary = find_boundaries(labels, mode="inner")
    if ring > 1:
        boundary = cv2.dilate(boundary.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=ring - 1) > 0
    classes = (labels > 0).astype(np.int64)
    classes[boundary & (labels > 0)] = 2
    return classes


@dataclass(frozen=True)
class Augmentation:
    """Random changes that cover the range of HPA images at the working scale.

    Attributes:
        scale_range: (low, high) factor on top of the working scale, log-uniform (0.5-2: nuclei of 12-48 px).
        gamma_range: (low, high) gamma applied to each channel, log-uniform.
        gain_range: (low, high) intensity factor per channel.
        max_blur: largest Gaussian blur sigma, working pixels (applied to half the patches).
        max_noise: largest Gaussian noise standard deviation on [0, 1] images (half the patches).
        drop_cytoplasm: probability that a patch with cells is shown without its cell channel (nuclei only).
    """

    scale_range: tuple[float, float] = (0.5, 2.0)
    gamma_range: tuple[float, float] = (0.5, 2.0)
    gain_range: tuple[float, float] = (0.6, 1.4)
    max_blur: float = 1.5
    max_noise: float = 0.06
    drop_cytoplasm: float = 0.2


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]))))


def _crop_resize(array: np.ndarray, top: int, left: int, size: tuple[int, int], out: tuple[int, int], nearest: bool):
    crop = array[top : top + size[0], left : left + size[1]]
    return _resize(crop, out, nearest=nearest)


def _intensity(channel: np.ndarray, rng: np.random.Generator, aug: Augmentation) -> np.ndarray:
    """(h, w) float32 in [0, 1] after gamma, gain, blur and noise."""
    channel = channel ** _log_uniform(rng, aug.gamma_range) * rng.uniform(*aug.gain_range)
    if rng.random() < 0.5 and aug.max_blur > 0:
        channel = cv2.GaussianBlur(channel, (0, 0), rng.uniform(0.3, aug.max_blur))
    if rng.random() < 0.5 and aug.max_noise > 0:
        channel = channel + rng.normal(0.0, rng.uniform(0.0, aug.max_noise), channel.shape).astype(np.float32)
    return np.clip(channel, 0.0, 1.0).astype(np.float32)


def sample_patch(
    image: TrainImage, patch: int, rng: np.random.Generator, aug: Augmentation
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One augmented training patch.

    Args:
        image: the source image.
        patch: side of the patch at the working scale, pixels.
        rng: random generator.
        aug: augmentation ranges.

    Returns:
        (x, nuclei_target, cell_target): (2, patch, patch) float32 in [0, 1]; (patch, patch) int64 classes
        each, the cell target all IGNORE when the image has no cell truth or its cell channel was dropped.
    """
    factor = image.factor * _log_uniform(rng, aug.scale_range)
    height, width = image.blue.shape
    side = max(1, round(patch / factor))
    size = (min(side, height), min(side, width))
    for _ in range(3):  # prefer a crop that holds a nucleus
        top, left = int(rng.integers(0, height - size[0] + 1)), int(rng.integers(0, width - size[1] + 1))
        if image.nuclei[top : top + size[0], left : left + size[1]].any():
            break
    out = (min(patch, max(1, round(size[0] * factor))), min(patch, max(1, round(size[1] * factor))))
    x = np.zeros((2, patch, patch), np.float32)
    nuclei_target = np.zeros((patch, patch), np.int64)
    cell_target = np.full((patch, patch), IGNORE, np.int64)
    use_cells = image.cells is not None and rng.random() >= aug.drop_cytoplasm
    x[0, : out[0], : out[1]] = _crop_resize(image.blue, top, left, size, out, False).astype(np.float32) / 255.0
    nuclei = _crop_resize(image.nuclei, top, left, size, out, True)
    nuclei_target[: out[0], : out[1]] = instance_targets(nuclei, NUCLEUS_RING)
    if use_cells:
        x[1, : out[0], : out[1]] = _crop_resize(image.cytoplasm, top, left, size, out, False).astype(np.float32) / 255
        cells = _crop_resize(image.cells, top, left, size, out, True)
        cell_target[:] = 0
        cell_target[: out[0], : out[1]] = instance_targets(cells, CELL_RING)
    x[0] = _intensity(x[0], rng, aug)
    if use_cells:
        x[1] = _intensity(x[1], rng, aug)
    turns, flip = int(rng.integers(4)), bool(rng.integers(2))
    arrays = [np.rot90(a, turns, axes=(-2, -1)) for a in (x, nuclei_target, cell_target)]
    if flip:
        arrays = [a[..., ::-1] for a in arrays]
    return tuple(np.ascontiguousarray(a) for a in arrays)  # type: ignore[return-value]
