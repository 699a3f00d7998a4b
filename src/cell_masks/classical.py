"""Classical nucleus and cell segmentation (no learned weights).

Nuclei come from the blue channel. The typical nucleus size is first estimated on a coarse
copy (median area of convex Otsu blobs; with too few, of the convex blobs of the upper of
three or four Otsu classes, or else inscribed circles, about one nucleus wide in clumps), and the
image is brought to a working scale where a nucleus spans about ``nucleus_diameter_px``
pixels (0.15-0.25 for 2048 px HPA images, full size for small-nucleus images). There the
foreground is the smoothed signal above a fraction of its Otsu level and of its local
maximum over about one nucleus (dim nuclei beside bright ones keep their own edge, the haze
between nuclei in dense tissue is cut); seeds are h-maxima of the
distance transform plus the relative brightness, split by a watershed; touching pieces
with no dark valley between them, a convex union and about one nucleus of area are merged.
Cells come from the microtubule (red) and ER (yellow) channels plus the nuclei: a foreground
above a fraction of the Otsu level of the cell signal, split by a watershed seeded with the
nuclei on the inverted signal plus the distance to the nearest nucleus. Labels come back to
the original size by nearest-neighbour resizing.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_multiotsu, threshold_otsu
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from src.data.io import longer_side_at_most

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassicalParams:
    """Parameters of the classical backend (defaults tuned on DSB2018 nuclei and HPA samples).

    Attributes:
        nucleus_diameter: typical nucleus diameter in original pixels; None estimates it per image.
        nucleus_diameter_px: nucleus diameter at the working scale (sets the working scale).
        max_scale: largest working scale (1.0: never upsample the input).
        min_working_side: the shorter working side is kept at least this long (small images).
        smooth: Gaussian sigma as a fraction of the working nucleus diameter.
        threshold_scale: nuclei are above this fraction of the Otsu level of the smoothed blue channel ...
        local_fraction: ... and above this fraction of the local maximum ...
        local_window: ... taken over a disc this many nucleus diameters wide (about one nucleus: a dim
            nucleus beside bright ones is judged against its own peak, haze between nuclei is not).
        intensity_weight: weight of the relative brightness against the distance transform (in diameters).
        brightness_smooth: Gaussian sigma of the brightness term, as a fraction of the nucleus diameter.
        h_maxima: depth of the seeds in the seed landscape (distance in diameters + weighted brightness).
        merge_ratio: touching nuclei merge when their shared border is at least this bright relative to the
            dimmer one (0 disables merging) ...
        merge_solidity: ... and their union is at least this convex ...
        merge_max_area: ... and their union is at most this multiple of the typical nucleus area.
        min_nucleus_fraction: nuclei smaller than this fraction of the typical nucleus area are removed.
        cell_threshold_scale: the cell foreground is the cytoplasm signal above this fraction of its Otsu level.
        distance_weight: weight of the distance-to-nucleus term in the cell watershed landscape.
        min_cell_fraction: cells smaller than this multiple of the typical nucleus area are dropped.
    """

    nucleus_diameter: float | None = None
    nucleus_diameter_px: float = 24.0
    max_scale: float = 1.0
    min_working_side: int = 64
    smooth: float = 0.06
    threshold_scale: float = 0.4
    local_fraction: float = 0.4
    local_window: float = 1.0
    intensity_weight: float = 2.0
    brightness_smooth: float = 0.1
    h_maxima: float = 0.05
    merge_ratio: float = 0.8
    merge_solidity: float = 0.9
    merge_max_area: float = 3.0
    min_nucleus_fraction: float = 0.15
    cell_threshold_scale: float = 0.15
    distance_weight: float = 0.2
    min_cell_fraction: float = 0.5

    def to_dict(self) -> dict:
        return asdict(self)


def _normalise(channel: np.ndarray, low: float = 1.0, high: float = 99.9) -> np.ndarray:
    """(H, W) any dtype to float32 in [0, 1] by robust percentiles (a flat image gives zeros)."""
    channel = channel.astype(np.float32)
    lo, hi = np.percentile(channel, (low, high))
    if hi - lo < 1e-6:
        hi = float(channel.max())
        if hi - lo < 1e-6:
            return np.zeros_like(channel)
    return np.clip((channel - lo) / (hi - lo), 0.0, 1.0)


def _resize(image: np.ndarray, shape: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize (H, W) to ``shape`` (rows, cols): area when shrinking, linear when growing, nearest for labels."""
    if image.shape[:2] == tuple(shape):
        return image
    if nearest:
        interpolation = cv2.INTER_NEAREST
    elif shape[0] * shape[1] < image.shape[0] * image.shape[1]:
        interpolation = cv2.INTER_AREA
    else:
        interpolation = cv2.INTER_LINEAR
    return cv2.resize(image, (int(shape[1]), int(shape[0])), interpolation=interpolation)


def _otsu(values: np.ndarray) -> float:
    """Otsu level of a float array; the mean when the array is (nearly) constant."""
    if values.size == 0 or float(values.max()) - float(values.min()) < 1e-6:
        return float(values.mean()) if values.size else 0.0
    return float(threshold_otsu(values))


def _log_foreground(image: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """Binary foreground of a [0, 1] image by Otsu on log intensity, and the level used (in image units)."""
    log_image = np.log1p(image * 255.0)
    level = np.expm1(_otsu(log_image) * scale) / 255.0
    return image > level, float(level)


def coarse_nuclear_stain(blue: np.ndarray, side: int = 1024) -> tuple[np.ndarray, float]:
    """The nuclear stain shrunk to at most ``side`` px (area average), then normalised to [0, 1], and the factor.

    Both backends estimate the nucleus size on this copy; normalising after shrinking keeps the percentiles cheap.

    Returns:
        ((h, w) float32 in [0, 1], shrink factor from the original, at most 1).
    """
    height, width = blue.shape
    return _normalise(_resize(blue, longer_side_at_most(height, width, side))), min(1.0, side / max(height, width))


def _blob_sizes(coarse: np.ndarray, level: float, single_solidity: float) -> tuple[np.ndarray, np.ndarray]:
    """Blobs of ``coarse > level``: (largest inscribed radius of each blob, areas of the convex ones).

    Blobs whose inscribed radius is under 2 pixels (specks) are left out of both.
    """
    foreground = (coarse > level).astype(np.uint8)
    count, components = cv2.connectedComponents(foreground, connectivity=8)
    if count <= 1:
        return np.zeros(0), np.zeros(0)
    distance = cv2.distanceTransform(foreground, cv2.DIST_L2, 5)
    inscribed = ndi.maximum(distance, components, np.arange(1, count))
    areas = np.bincount(components.ravel())[1:]
    single = [
        area
        for label, (area, radius, region) in enumerate(zip(areas, inscribed, ndi.find_objects(components)), start=1)
        if radius >= 2.0 and _solidity(components[region] == label) >= single_solidity
    ]
    return inscribed[inscribed >= 2.0], np.asarray(single, dtype=float)


def estimate_nucleus_diameter(
    blue: np.ndarray, coarse_side: int = 512, single_solidity: float = 0.9, min_singles: int = 3
) -> float | None:
    """Typical nucleus diameter in pixels of ``blue``, from the blobs of an Otsu foreground.

    Convex blobs are taken as single nuclei and their median area gives the diameter. When
    there are too few (dense tissue, or a few nuclei), the upper of three, then of four Otsu
    classes is tried next: where bright nuclei sit on a dimmer body (an embryo whose nuclei
    line its surface), they stand apart there. Otherwise the largest inscribed circle of each blob,
    about one nucleus wide even when nuclei touch in clumps, gives it: of the upper class when
    that is less than half as wide as of the Otsu foreground (the Otsu blob was the body, not
    a clump of nuclei), else of the Otsu foreground.

    Args:
        blue: (H, W) nuclear stain, float in [0, 1].
        coarse_side: longer side of the coarse copy the estimate is made on.
        single_solidity: blobs at least this convex count as single nuclei.
        min_singles: fewest single nuclei needed to use their median area.

    Returns:
        Estimated diameter in original pixels, or None when nothing stands out of the background.
    """
    height, width = blue.shape
    factor = min(1.0, coarse_side / max(height, width))
    coarse = _resize(blue, longer_side_at_most(height, width, coarse_side))
    coarse = cv2.GaussianBlur(coarse, (0, 0), 1.0)
    if float(coarse.max()) - float(coarse.min()) < 0.05:
        return None
    inscribed, single = _blob_sizes(coarse, _otsu(coarse), single_solidity)
    if single.size >= min_singles:
        return float(2.0 * np.sqrt(np.median(single) / np.pi) / factor)
    for classes in (3, 4):
        upper_inscribed, upper_single = _blob_sizes(
            coarse, float(threshold_multiotsu(coarse, classes=classes)[-1]), single_solidity
        )
        if upper_single.size >= min_singles:
            return float(2.0 * np.sqrt(np.median(upper_single) / np.pi) / factor)
    # Clumps: the largest inscribed circle of a blob is about one nucleus wide; 2 x radius,
    # times ~1.15 because nuclei are elongated (inscribed circle < equivalent circle). The
    # upper class compared here is the last one tried, of four classes.
    width_otsu = np.percentile(inscribed, 75) if inscribed.size else None
    width_upper = np.percentile(upper_inscribed, 75) if upper_inscribed.size else None
    if width_upper is not None and (width_otsu is None or width_upper < 0.5 * width_otsu):
        return float(2.3 * width_upper / factor)
    return None if width_otsu is None else float(2.3 * width_otsu / factor)


def working_shape(shape: tuple[int, int], nucleus_diameter: float, params: ClassicalParams) -> tuple[int, int]:
    """(rows, cols) of the working copy so that a nucleus spans about ``params.nucleus_diameter_px`` pixels."""
    height, width = shape
    scale = min(params.max_scale, params.nucleus_diameter_px / max(nucleus_diameter, 1.0))
    scale = max(scale, min(1.0, params.min_working_side / min(height, width)))
    return max(1, round(height * scale)), max(1, round(width * scale))


def segment_nuclei_working(blue: np.ndarray, diameter: float, params: ClassicalParams) -> np.ndarray:
    """Nucleus labels of a working-scale blue image.

    Foreground: above ``threshold_scale`` x Otsu and above ``local_fraction`` x the local
    maximum over about one nucleus (a dim nucleus beside bright ones keeps its own edge, the
    haze between nuclei in dense tissue is cut). Seeds: h-maxima of a
    landscape adding the smoothed distance transform (shape) to the intensity relative to the
    local maximum (texture-free brightness); watershed on the same landscape.

    Args:
        blue: (h, w) float32 in [0, 1] at the working scale.
        diameter: typical nucleus diameter at the working scale, pixels.
        params: backend parameters.

    Returns:
        (h, w) int32 labels, 0 = background.
    """
    smoothed = cv2.GaussianBlur(blue, (0, 0), max(0.5, params.smooth * diameter))
    size = int(params.local_window * diameter) | 1
    local_max = cv2.dilate(smoothed, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    local_max = cv2.GaussianBlur(local_max, (0, 0), max(0.5, diameter / 4))
    foreground = (smoothed > params.threshold_scale * _otsu(smoothed)) & (smoothed > params.local_fraction * local_max)
    foreground = ndi.binary_fill_holes(foreground)
    min_area = params.min_nucleus_fraction * np.pi * (diameter / 2.0) ** 2
    if not foreground.any():
        return np.zeros(blue.shape, dtype=np.int32)
    distance = cv2.distanceTransform(foreground.astype(np.uint8), cv2.DIST_L2, 5)
    distance = cv2.GaussianBlur(distance, (0, 0), max(0.5, 0.1 * diameter))
    brightness = cv2.GaussianBlur(blue, (0, 0), max(0.5, params.brightness_smooth * diameter)) / (local_max + 1e-3)
    landscape = (distance / diameter + params.intensity_weight * brightness) * foreground
    seeds = h_maxima(landscape.astype(np.float32), params.h_maxima) & foreground
    markers, _ = ndi.label(seeds)
    labels = watershed(-landscape, markers, mask=foreground)
    if params.merge_ratio > 0:
        typical_area = np.pi * (diameter / 2.0) ** 2
        labels = merge_oversplit(
            labels, smoothed, params.merge_ratio, params.merge_solidity, params.merge_max_area * typical_area
        )
    areas = np.bincount(labels.ravel())
    small = areas < min_area
    small[0] = False
    labels[small[labels]] = 0
    return labels.astype(np.int32)


def _solidity(mask: np.ndarray) -> float:
    """Area over convex-hull area of a binary (h, w) mask (1.0 for tiny masks)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return 1.0
    hull_area = cv2.contourArea(cv2.convexHull(np.concatenate(contours)))
    return float(min(1.0, mask.sum() / hull_area)) if hull_area > 0 else 1.0


def merge_oversplit(
    labels: np.ndarray, intensity: np.ndarray, min_ratio: float, min_solidity: float, max_area: float = np.inf
) -> np.ndarray:
    """Merge touching regions split inside one object: no dark valley between them and a convex union.

    Args:
        labels: (h, w) int32 labels.
        intensity: (h, w) float32 smoothed intensity the labels were made from.
        min_ratio: merge when the mean intensity on the shared border is at least this fraction of the
            dimmer region's mean intensity ...
        min_solidity: ... and the union is at least this convex (area / convex-hull area) ...
        max_area: ... and the union has at most this many pixels (about one object).

    Returns:
        (h, w) int32 labels where merged regions take the smaller id.
    """
    num = int(labels.max())
    if num < 2:
        return labels
    pair_codes, pair_values = [], []
    for first, second, v1, v2 in (
        (labels[:, :-1], labels[:, 1:], intensity[:, :-1], intensity[:, 1:]),
        (labels[:-1, :], labels[1:, :], intensity[:-1, :], intensity[1:, :]),
    ):
        border = (first != second) & (first > 0) & (second > 0)
        low = np.minimum(first[border], second[border]).astype(np.int64)
        high = np.maximum(first[border], second[border]).astype(np.int64)
        pair_codes.append(low * (num + 1) + high)
        pair_values.append((v1[border] + v2[border]) / 2.0)
    codes = np.concatenate(pair_codes)
    if codes.size == 0:
        return labels
    unique_codes, inverse = np.unique(codes, return_inverse=True)
    border_mean = np.bincount(inverse, weights=np.concatenate(pair_values)) / np.bincount(inverse)
    region_mean = ndi.mean(intensity, labels, np.arange(num + 1))
    low, high = unique_codes // (num + 1), unique_codes % (num + 1)
    ratio = border_mean / np.maximum(np.minimum(region_mean[low], region_mean[high]), 1e-6)
    candidates = np.flatnonzero(ratio >= min_ratio)
    if candidates.size == 0:
        return labels
    boxes = ndi.find_objects(labels)
    areas = np.bincount(labels.ravel(), minlength=num + 1)
    owner = np.arange(num + 1)  # group id of each label
    members: dict[int, list[int]] = {i: [i] for i in range(1, num + 1)}
    for index in candidates[np.argsort(-ratio[candidates])]:
        first, second = int(owner[low[index]]), int(owner[high[index]])
        if first == second:
            continue
        union = members[first] + members[second]
        if areas[union].sum() > max_area:
            continue
        rows = slice(min(boxes[m - 1][0].start for m in union), max(boxes[m - 1][0].stop for m in union))
        cols = slice(min(boxes[m - 1][1].start for m in union), max(boxes[m - 1][1].stop for m in union))
        if _solidity(np.isin(labels[rows, cols], union)) >= min_solidity:
            keep, drop = min(first, second), max(first, second)
            owner[members[drop]] = keep
            members[keep] = union
            del members[drop]
    lookup = owner
    return lookup[labels].astype(np.int32)


def segment_cells_working(
    cytoplasm: np.ndarray, nuclei: np.ndarray, diameter: float, params: ClassicalParams
) -> np.ndarray:
    """Cell labels seeded by nuclei at the working scale; label k grows from nucleus k.

    The foreground is the smoothed cell signal above ``cell_threshold_scale`` x the Otsu level
    of the pixels that stand out of the background (log-Otsu), plus the nuclei, holes filled.
    Watershed regions grow from their nucleus, so no cell has detached fragments.

    Args:
        cytoplasm: (h, w) float32 in [0, 1], the cell-body signal (microtubules, ER, nuclei).
        nuclei: (h, w) int32 nucleus labels.
        diameter: typical nucleus diameter at the working scale, pixels.
        params: backend parameters.

    Returns:
        (h, w) int32 cell labels sharing the nuclei's ids (a nucleus may lose its cell if too small).
    """
    if not nuclei.any():
        return np.zeros(nuclei.shape, dtype=np.int32)
    smoothed = cv2.GaussianBlur(cytoplasm, (0, 0), max(0.5, 0.1 * diameter))
    foreground, _ = _log_foreground(smoothed, 1.0)
    level = _otsu(smoothed[foreground]) if foreground.any() else 0.0
    foreground = (smoothed > params.cell_threshold_scale * level) | (nuclei > 0)
    foreground = ndi.binary_fill_holes(foreground)
    distance = cv2.distanceTransform((nuclei == 0).astype(np.uint8), cv2.DIST_L2, 5)
    landscape = -smoothed / max(float(smoothed.max()), 1e-6) + params.distance_weight * distance / diameter
    cells = watershed(landscape, nuclei, mask=foreground)
    min_area = params.min_cell_fraction * np.pi * (diameter / 2.0) ** 2
    areas = np.bincount(cells.ravel())
    small = areas < min_area
    small[0] = False
    cells[small[cells]] = 0
    return cells.astype(np.int32)


def relabel_consistent(nuclei: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep cells that hold their nucleus and number both 1..K in the same order.

    Args:
        nuclei: (H, W) int labels.
        cells: (H, W) int labels, cell k grown from nucleus k.

    Returns:
        (nuclei_mask, cell_mask) uint16 with nucleus k inside cell k; nuclei pixels outside their cell are cleared.
    """
    nuclei = np.where(cells == nuclei, nuclei, 0)
    present = np.zeros(int(max(cells.max(), nuclei.max())) + 1, dtype=bool)
    present[np.unique(nuclei)] = True
    present[0] = False
    lookup = np.zeros(present.size, dtype=np.uint16)
    lookup[present] = np.arange(1, int(present.sum()) + 1, dtype=np.uint16)
    return lookup[nuclei], lookup[cells]


def _working_blue(blue: np.ndarray, params: ClassicalParams) -> tuple[np.ndarray, float] | None:
    """The blue channel at the working scale and the typical nucleus diameter there.

    Args:
        blue: (H, W) nuclear stain, uint8 or uint16.
        params: backend parameters.

    Returns:
        ((h, w) float32 in [0, 1], diameter in working pixels), or None when no nucleus stands out.
    """
    height, width = blue.shape
    blue_coarse, coarse_factor = coarse_nuclear_stain(blue)
    diameter = params.nucleus_diameter
    if diameter is None:
        estimate = estimate_nucleus_diameter(blue_coarse)
        if estimate is None:
            return None
        diameter = estimate / coarse_factor
    elif float(blue_coarse.max()) <= 0.0:
        return None
    shape = working_shape((height, width), diameter, params)
    source = blue_coarse if shape[0] <= blue_coarse.shape[0] else _normalise(blue)
    return _resize(source, shape), diameter * shape[0] / height


def segment_nuclei(blue: np.ndarray, params: ClassicalParams | None = None) -> np.ndarray:
    """Nucleus labels of a nuclear-stain image by the classical method.

    Args:
        blue: (H, W) nuclear stain, uint8 or uint16.
        params: backend parameters (defaults when None).

    Returns:
        (H, W) uint16 labels 1..K, 0 = background.
    """
    params = params or ClassicalParams()
    working = _working_blue(blue, params)
    if working is None:
        return np.zeros(blue.shape, dtype=np.uint16)
    nuclei = segment_nuclei_working(*working, params)
    _, nuclei = relabel_consistent(nuclei, nuclei)
    return _resize(nuclei, blue.shape, nearest=True)


def segment_classical(rgby: np.ndarray, params: ClassicalParams | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nucleus and cell labels of one image by the classical method.

    Args:
        rgby: (H, W, 4) image, channels red, green, blue, yellow; uint8 or uint16.
        params: backend parameters (defaults when None).

    Returns:
        (nuclei_mask, cell_mask): (H, W) uint16, 0 = background, nucleus k inside cell k.
    """
    params = params or ClassicalParams()
    if rgby.ndim != 3 or rgby.shape[2] != 4:
        raise ValueError(f"expected an (H, W, 4) RGBY image, got shape {rgby.shape}")
    height, width = rgby.shape[:2]
    working = _working_blue(rgby[..., 2], params)
    if working is None:
        logger.debug("no nuclei stand out of the background; empty masks")
        return np.zeros((height, width), dtype=np.uint16), np.zeros((height, width), dtype=np.uint16)
    blue, diameter = working
    nuclei = segment_nuclei_working(blue, diameter, params)
    red = _normalise(_resize(rgby[..., 0], blue.shape))
    yellow = _normalise(_resize(rgby[..., 3], blue.shape))
    cytoplasm = np.maximum(np.maximum(red, yellow), blue)
    cells = segment_cells_working(cytoplasm, nuclei, diameter, params)
    nuclei_mask, cell_mask = relabel_consistent(nuclei, cells)
    return _resize(nuclei_mask, (height, width), nearest=True), _resize(cell_mask, (height, width), nearest=True)
