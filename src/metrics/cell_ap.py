"""Single-cell mAP of a Kaggle HPA submission against per-cell truth (the competition metric).

Open Images style instance AP per class at IoU >= 0.6: per class, the predictions of all
images are sorted by descending confidence (stable: image order, then PredictionString
order, break ties); each is matched to the truth cell of that class in its image with the
highest IoU and is a true positive when that IoU is >= 0.6 and the cell is not yet
matched, else a false positive (a duplicate). AP is the area under the precision/recall
curve with precision made non-increasing (VOC 2010+ / Open Images interpolation); the
mAP is the mean over the classes that have at least one truth cell. As in the Open
Images code, a prediction whose best cell is already matched is a false positive; truth
cells do not overlap, so with a threshold above 0.5 no other cell could have matched it.

Speed: each distinct RLE of an image is decoded once, to its foreground runs, and its
IoUs with all truth cells come from one ``np.bincount`` over the truth labels under
those runs (one process scores 500 images x 20 cells in a few seconds).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm import tqdm

from src.data.classes import CLASS_NAMES, NUM_CLASSES
from src.metrics.truth import CellTruth, load_truth
from src.submission.codec import CellPrediction, decode_rle_counts, parse_prediction_string

logger = logging.getLogger(__name__)

IOU_THRESHOLD = 0.6
_CELL_KEY = 1 << 17  # > max uint16 cell id: image index * _CELL_KEY + cell id is unique


@dataclass
class CellAPResult:
    """Scores of one submission.

    Attributes:
        per_class_ap: AP of every class with at least one truth cell.
        per_class_num_truth: truth cells per class, all 19 classes.
        per_class_num_pred: (cell, class) predictions per class, all 19 classes.
        mAP: mean of ``per_class_ap`` (NaN when no class has truth).
        num_images: images scored.
        iou_threshold: IoU a true positive needs.
    """

    per_class_ap: dict[int, float]
    per_class_num_truth: dict[int, int]
    per_class_num_pred: dict[int, int]
    mAP: float  # noqa: N815 (the metric's name)
    num_images: int = 0
    iou_threshold: float = IOU_THRESHOLD
    per_class_num_tp: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready form: mAP and one entry per class."""
        return {
            "mAP": None if math.isnan(self.mAP) else self.mAP,
            "num_images": self.num_images,
            "iou_threshold": self.iou_threshold,
            "per_class": {
                str(c): {
                    "name": CLASS_NAMES[c],
                    "ap": self.per_class_ap.get(c),
                    "num_truth": self.per_class_num_truth.get(c, 0),
                    "num_pred": self.per_class_num_pred.get(c, 0),
                    "num_tp": self.per_class_num_tp.get(c, 0),
                }
                for c in range(NUM_CLASSES)
            },
        }


def average_precision(tp_sorted: np.ndarray, num_truth: int) -> float:
    """Open Images AP of predictions already sorted by descending confidence.

    Args:
        tp_sorted: (N,) bool, True for a true positive.
        num_truth: truth instances of the class (NaN is returned when 0).
    """
    if num_truth == 0:
        return float("nan")
    tp_sorted = np.asarray(tp_sorted, dtype=bool)
    if tp_sorted.sum() > num_truth:
        raise ValueError(f"{int(tp_sorted.sum())} true positives for {num_truth} truth instances")
    tp_cum = np.cumsum(tp_sorted)
    precision = tp_cum / np.arange(1, len(tp_sorted) + 1)
    recall = tp_cum / num_truth
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def mask_truth_ious(encoded: str, cell_mask_fortran: np.ndarray, truth_areas: np.ndarray) -> np.ndarray:
    """IoU of one RLE-encoded mask with every truth cell of its image.

    Args:
        encoded: the competition's ascii RLE of an (H, W) mask.
        cell_mask_fortran: (H * W,) truth instance ids in Fortran (column-major) order.
        truth_areas: (M + 1,) pixel count of each id 0..M (``np.bincount`` of the mask).

    Returns:
        (M + 1,) float64 IoUs, index = cell id (index 0, background, is meaningless).

    Raises:
        ValueError: when the RLE is malformed or encodes a mask of another size.
    """
    counts = decode_rle_counts(encoded)
    if counts.sum() != cell_mask_fortran.size:
        raise ValueError(f"RLE encodes {int(counts.sum())} pixels, the truth mask has {cell_mask_fortran.size}")
    bounds = np.cumsum(counts)
    num_runs = len(counts) // 2
    starts, ends = bounds[0 : 2 * num_runs : 2], bounds[1 : 2 * num_runs : 2]
    lengths = ends - starts
    area = int(lengths.sum())
    if area == 0:
        return np.zeros(len(truth_areas))
    pixel = np.arange(area) + np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    intersection = np.bincount(cell_mask_fortran[pixel], minlength=len(truth_areas))
    union = area + truth_areas - intersection
    return intersection / np.maximum(union, 1)


def match_image(
    cell_mask: np.ndarray,
    cell_labels: dict[int, tuple[int, ...]],
    predictions: list[CellPrediction],
    mask_ious: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Best truth cell of the predicted class for each prediction of one image.

    Args:
        cell_mask: (H, W) uint16 truth instance ids.
        cell_labels: ``{cell_id: class ids}`` of the image.
        predictions: the image's (cell, class) predictions.
        mask_ious: ``{rle: IoUs with every truth cell}`` already known for this image (filled in here).

    Returns:
        cell_ids: (N,) int64 truth cell with the highest IoU among the cells of the
            prediction's class (-1 when the image has no cell of that class).
        ious: (N,) float64 IoU with that cell.
    """
    mask_ious = {} if mask_ious is None else mask_ious
    missing = {p.rle for p in predictions} - set(mask_ious)
    if missing:
        cell_mask_fortran = cell_mask.ravel(order="F")
        truth_areas = np.bincount(cell_mask_fortran)
        for rle in missing:
            mask_ious[rle] = mask_truth_ious(rle, cell_mask_fortran, truth_areas)
    return match_predictions(cell_labels, predictions, mask_ious)


def match_predictions(
    cell_labels: dict[int, tuple[int, ...]], predictions: list[CellPrediction], mask_ious: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`match_image` once the IoUs of every predicted mask (``{rle: IoUs}``) are known."""
    cell_ids = np.full(len(predictions), -1, dtype=np.int64)
    ious = np.zeros(len(predictions))
    class_cells: dict[int, list[int]] = {}
    for cell_id, labels in sorted(cell_labels.items()):
        for class_id in labels:
            class_cells.setdefault(class_id, []).append(cell_id)
    cells_of = {c: np.asarray(cells) for c, cells in class_cells.items()}
    for index, prediction in enumerate(predictions):
        cells = cells_of.get(prediction.class_id)
        if cells is None:
            continue
        candidate_ious = mask_ious[prediction.rle][cells]
        best = int(np.argmax(candidate_ious))
        cell_ids[index], ious[index] = cells[best], candidate_ious[best]
    return cell_ids, ious


def _match_image_task(
    task: tuple[CellTruth, str, list[CellPrediction], dict[str, np.ndarray] | None],
) -> tuple[np.ndarray, np.ndarray]:
    truth, image_id, predictions, mask_ious = task
    if not predictions:
        return match_predictions({}, [], {})
    known = mask_ious if mask_ious is not None else {}
    if all(p.rle in known for p in predictions):  # a sweep re-scoring the same masks: no mask read
        return match_predictions(truth.cell_labels[image_id], predictions, known)
    cell_mask = truth.read_cell_mask(image_id)
    try:
        return match_image(cell_mask, truth.cell_labels[image_id], predictions, mask_ious)
    except ValueError as error:
        raise ValueError(f"submission ID {image_id}: {error}") from None


def submission_predictions(
    submission: pd.DataFrame, truth: CellTruth, ids: list[str]
) -> dict[str, list[CellPrediction]]:
    """Parse the PredictionStrings of the scored images and check their sizes against the truth.

    Images of ``ids`` missing from the submission get no predictions; rows of other IDs are
    ignored (with a warning).

    Raises:
        ValueError: naming the ID (and CSV line) of a malformed row or of a size mismatch.
    """
    missing = [c for c in ("ID", "ImageWidth", "ImageHeight", "PredictionString") if c not in submission.columns]
    if missing:
        raise ValueError(f"submission lacks column(s) {missing} (has {list(submission.columns)})")
    submission_ids = submission["ID"].astype(str)
    duplicated = submission_ids[submission_ids.duplicated()].unique()
    if len(duplicated):
        raise ValueError(f"submission has duplicate ID(s): {', '.join(duplicated[:5])}")
    scored = set(ids)
    extra = int((~submission_ids.isin(scored)).sum())
    if extra:
        logger.warning("%d submission row(s) are not among the %d scored images and are ignored", extra, len(ids))
    predictions: dict[str, list[CellPrediction]] = {image_id: [] for image_id in ids}
    rows = zip(submission_ids, submission["ImageWidth"], submission["ImageHeight"], submission["PredictionString"])
    for row, (image_id, width, height, prediction_string) in enumerate(rows):
        if image_id not in scored:
            continue
        where = f"submission ID {image_id} (CSV line {row + 2})"
        parsed = parse_prediction_string(prediction_string, where)
        if not parsed:
            continue
        try:
            size = (int(height), int(width))
        except (TypeError, ValueError):
            raise ValueError(f"{where}: ImageWidth {width!r} / ImageHeight {height!r} are not integers") from None
        truth_size = truth.image_size(image_id)
        if size != truth_size:
            raise ValueError(
                f"{where}: predicted masks are {size[1]}x{size[0]} (WxH) but the truth mask "
                f"{truth.cell_mask_path(image_id)} is {truth_size[1]}x{truth_size[0]}"
            )
        predictions[image_id] = parsed
    return predictions


def evaluate_submission(
    submission: pd.DataFrame,
    truth_dir: str | os.PathLike | CellTruth,
    ids: list[str] | None = None,
    iou_threshold: float = IOU_THRESHOLD,
    workers: int = 1,
    iou_cache: dict[str, dict[str, np.ndarray]] | None = None,
) -> CellAPResult:
    """Single-cell mAP of a Kaggle submission frame (from ``read_submission``).

    Args:
        submission: columns ID, ImageWidth, ImageHeight, PredictionString.
        truth_dir: the ``truth/`` folder, or a ``CellTruth`` from ``load_truth``.
        ids: images to score (missing ones have no predictions); default the submission's IDs.
        iou_threshold: IoU a true positive needs.
        workers: processes matching images (one process scores 500 images x 20 cells in ~3 s).
        iou_cache: ``{image ID: {rle: IoUs with its truth cells}}``, filled in and reused (one process only): a
            sweep that scores the same masks with other confidences (fusion tuning) decodes each mask once.

    Raises:
        FileNotFoundError: an ID without truth (names the ID and the mask file).
        ValueError: a malformed row or a mask of the wrong size (names the ID).
    """
    if ids is None:
        ids = submission["ID"].astype(str).tolist()
    ids = [str(i) for i in ids]
    if len(set(ids)) != len(ids):
        raise ValueError("the scored image IDs contain duplicates")
    if isinstance(truth_dir, CellTruth):
        truth = truth_dir
        lacking = [i for i in ids if i not in truth.cell_labels]
        if lacking:
            raise FileNotFoundError(f"no truth loaded for image {lacking[0]} (truth {truth.truth_dir})")
    else:
        truth = load_truth(truth_dir, ids)

    return evaluate_predictions(
        submission_predictions(submission, truth, ids), truth, ids, iou_threshold, workers, iou_cache
    )


def evaluate_predictions(
    predictions: dict[str, list[CellPrediction]],
    truth: CellTruth,
    ids: list[str],
    iou_threshold: float = IOU_THRESHOLD,
    workers: int = 1,
    iou_cache: dict[str, dict[str, np.ndarray]] | None = None,
) -> CellAPResult:
    """:func:`evaluate_submission` of predictions already parsed and checked (:func:`submission_predictions`).

    ``predictions`` holds every image of ``ids`` (an empty list for an image without predictions).
    """
    if iou_cache is not None and workers > 1:
        raise ValueError("iou_cache is filled in one process: use workers=1 with it")
    caches = [None if iou_cache is None else iou_cache.setdefault(i, {}) for i in ids]
    tasks = [
        (CellTruth(truth.truth_dir, (i,), {i: truth.cell_labels[i]}), i, predictions[i], cache)
        for i, cache in zip(ids, caches, strict=True)
    ]
    quiet = len(ids) < 50 or (iou_cache is not None and all(caches))  # a repeat of a sweep needs no bar
    progress = {"total": len(ids), "desc": "matching cells", "unit": "image", "disable": quiet}
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            matched = list(tqdm(pool.imap(_match_image_task, tasks, chunksize=8), **progress))
    else:
        matched = [_match_image_task(task) for task in tqdm(tasks, **progress)]

    image_index = np.concatenate([np.full(len(predictions[i]), n, dtype=np.int64) for n, i in enumerate(ids)] or [[]])
    class_ids = np.array([p.class_id for i in ids for p in predictions[i]], dtype=np.int64)
    confidences = np.array([p.confidence for i in ids for p in predictions[i]], dtype=np.float64)
    cell_ids = np.concatenate([m[0] for m in matched] or [[]]).astype(np.int64)
    ious = np.concatenate([m[1] for m in matched] or [[]]).astype(np.float64)
    cell_keys = image_index * _CELL_KEY + cell_ids

    num_truth = dict.fromkeys(range(NUM_CLASSES), 0)
    for image_id in ids:
        for labels in truth.cell_labels[image_id].values():
            for class_id in labels:
                num_truth[class_id] += 1
    per_class_ap, num_pred, num_tp = {}, {}, {}
    for class_id in range(NUM_CLASSES):
        selected = np.flatnonzero(class_ids == class_id)
        num_pred[class_id] = len(selected)
        if num_truth[class_id] == 0:
            continue
        order = selected[np.argsort(-confidences[selected], kind="stable")]
        hits = np.flatnonzero(ious[order] >= iou_threshold)
        _, first = np.unique(cell_keys[order][hits], return_index=True)  # later hits of a cell are duplicates
        tp_sorted = np.zeros(len(order), dtype=bool)
        tp_sorted[hits[first]] = True
        num_tp[class_id] = int(tp_sorted.sum())
        per_class_ap[class_id] = average_precision(tp_sorted, num_truth[class_id])
    mean_ap = float(np.mean(list(per_class_ap.values()))) if per_class_ap else float("nan")
    return CellAPResult(per_class_ap, num_truth, num_pred, mean_ap, len(ids), iou_threshold, num_tp)


def format_ap_table(results: dict[str, CellAPResult]) -> str:
    """Per-class AP table: class id, class name, truth cells, one AP column per named result, mAP row.

    Classes without truth cells show '-' (they do not count in the mAP).

    Raises:
        ValueError: when the results were computed on different truth (cell counts differ).
    """
    if not results:
        raise ValueError("no results to tabulate")
    names = list(results)
    num_truth = results[names[0]].per_class_num_truth
    for name in names[1:]:
        if results[name].per_class_num_truth != num_truth:
            raise ValueError(f"result {name!r} was computed on other truth than {names[0]!r}")
    name_width = max(len(n) for n in CLASS_NAMES)
    widths = [max(7, len(n)) for n in names]
    header = f"{'id':>2}  {'class':<{name_width}}  {'cells':>6}  " + "  ".join(
        f"{n:>{w}}" for n, w in zip(names, widths)
    )
    lines = [header, "-" * len(header)]
    for class_id in range(NUM_CLASSES):
        cells = [
            f"{results[n].per_class_ap[class_id]:>{w}.4f}" if class_id in results[n].per_class_ap else f"{'-':>{w}}"
            for n, w in zip(names, widths)
        ]
        lines.append(
            f"{class_id:>2}  {CLASS_NAMES[class_id]:<{name_width}}  {num_truth.get(class_id, 0):>6}  "
            + "  ".join(cells)
        )
    lines.append("-" * len(header))
    map_cells = "  ".join(f"{results[n].mAP:>{w}.4f}" for n, w in zip(names, widths))
    lines.append(f"{'':>2}  {'mAP':<{name_width}}  {'':>6}  " + map_cells)
    return "\n".join(lines)
