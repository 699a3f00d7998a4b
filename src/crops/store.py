"""The crop store: every cell of a split cut out once, sharded per image, written atomically, resumable.

Layout under ``crop_dir``:

* ``manifest.json``: crop size, masking mode, padding, channels and the mask backend and parameters the crops
  were cut with; a store is never mixed with crops of other settings or masks of another backend.
* ``{split}/{ID}.npy``: (K, S, S, C) uint8 crops of one image (read with ``mmap_mode='r'``, never all at once).
* ``{split}/{ID}.cells.json``: the K cells (cell_id, tight box, area, protein-channel statistics); written after
  the crops, so its presence marks the image as done.
* ``{split}_masks.json``: the mask cache the split's crops were cut from (read by validation to score cells).
* ``{split}_index.csv``: one row per cell of every finished image (ID, cell_id, row, y0, x0, y1, x1, area,
  green_mean, green_high, darkness, split), rebuilt after every run.

A re-run cuts only the images without ``.cells.json``; a killed run resumes there.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from src.cell_masks.cache import MaskCache, shard_ids
from src.crops.geometry import CellCrops, crop_channels, extract_cell_crops
from src.data.atomic import atomic_path, write_csv_atomic, write_text_atomic
from src.data.io import read_rgby
from src.data.per_image import run_per_image
from src.scoring.cell_scores import CellScoreConfig, dark_negative

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
INDEX_COLUMNS = ["ID", "cell_id", "row", "y0", "x0", "y1", "x1", "area", "green_mean", "green_high", "darkness"]
# the protein-darkness rule of inference (conf_how ... negative_how dark), at its defaults
DARK_RULE = CellScoreConfig(negative_how="dark")


class CropStoreMismatchError(ValueError):
    """The crop store was filled with other crop settings or masks of another backend."""


@dataclass(frozen=True)
class CropSpec:
    """What decides the crops of a store (its manifest)."""

    crop_size: int = 64
    crop_mask: str = "zero"
    padding: float = 0.1
    in_chans: int = 4
    mask_backend: str = "classical"
    mask_params: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return crop_channels(self.crop_mask, self.in_chans)

    def to_manifest(self) -> dict[str, Any]:
        manifest = asdict(self)
        manifest["channels"] = self.channels
        return json.loads(json.dumps(manifest, sort_keys=True))


def read_manifest(crop_dir: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a store; FileNotFoundError naming the folder when there is none."""
    path = Path(crop_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{crop_dir} is not a crop store (no {MANIFEST_NAME}); run extract_cell_crops.py")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CropStoreMismatchError(f"{path}: unreadable manifest ({error})") from None


def check_store_manifest(crop_dir: str | os.PathLike, spec: CropSpec) -> None:
    """Write the manifest of a new store, or check that an existing one holds crops of ``spec``.

    Raises:
        CropStoreMismatchError: names every setting that differs and the folder.
    """
    path = Path(crop_dir) / MANIFEST_NAME
    expected = spec.to_manifest()
    if not path.is_file():
        write_text_atomic(path, json.dumps(expected, indent=2, sort_keys=True) + "\n")
        return
    found = read_manifest(crop_dir)
    differences = [
        f"{key}: store {found.get(key)!r} != requested {expected.get(key)!r}"
        for key in sorted(set(found) | set(expected))
        if found.get(key) != expected.get(key)
    ]
    if differences:
        raise CropStoreMismatchError(
            f"crop store {crop_dir} was made with other settings ({'; '.join(differences)}); "
            "use another --crop_dir or delete that folder"
        )


def crop_path(crop_dir: str | os.PathLike, split: str, image_id: str) -> Path:
    return Path(crop_dir) / split / f"{image_id}.npy"


def cells_path(crop_dir: str | os.PathLike, split: str, image_id: str) -> Path:
    return Path(crop_dir) / split / f"{image_id}.cells.json"


def mask_source_path(crop_dir: str | os.PathLike, split: str) -> Path:
    return Path(crop_dir) / f"{split}_masks.json"


def read_mask_dir(crop_dir: str | os.PathLike, split: str) -> Path:
    """The mask cache the crops of ``split`` were cut from."""
    path = mask_source_path(crop_dir, split)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run extract_cell_crops.py --split {split} --crop_dir {crop_dir}")
    return Path(json.loads(path.read_text())["mask_dir"])


def index_path(crop_dir: str | os.PathLike, split: str) -> Path:
    return Path(crop_dir) / f"{split}_index.csv"


def cell_table(cut: CellCrops, cell_mask: np.ndarray, green: np.ndarray) -> dict[str, list]:
    """The per-cell columns of one image: ids, boxes, areas and the protein statistics of the darkness rule.

    Statistics are read inside each cell's box only (cost ~ the cells' pixels, not the image's).
    """
    green_mean = np.zeros(len(cut.cell_ids))
    green_high = np.zeros(len(cut.cell_ids))
    for row, (cell_id, (y0, x0, y1, x1)) in enumerate(zip(cut.cell_ids, cut.boxes)):
        values = green[y0:y1, x0:x1][cell_mask[y0:y1, x0:x1] == cell_id]
        green_mean[row] = values.mean(dtype=np.float64)
        rank = int(np.floor((len(values) - 1) * DARK_RULE.dark_percentile / 100.0))  # as segment_percentile
        green_high[row] = np.partition(values, rank)[rank]
    darkness = dark_negative(np.zeros(19), green_mean, green_high, DARK_RULE)
    return {
        "cell_id": cut.cell_ids.tolist(),
        "y0": cut.boxes[:, 0].tolist(),
        "x0": cut.boxes[:, 1].tolist(),
        "y1": cut.boxes[:, 2].tolist(),
        "x1": cut.boxes[:, 3].tolist(),
        "area": cut.area.tolist(),
        "green_mean": np.round(green_mean, 4).tolist(),
        "green_high": np.round(green_high, 4).tolist(),
        "darkness": np.round(darkness, 6).tolist(),
    }


def write_image_crops(crop_dir: str | os.PathLike, split: str, image_id: str, cut: CellCrops, cells: dict) -> None:
    """Crops first, then the cell table (the done marker); each atomically."""
    with atomic_path(crop_path(crop_dir, split, image_id)) as tmp:
        np.save(tmp, cut.crops)
    write_text_atomic(cells_path(crop_dir, split, image_id), json.dumps(cells))


def cut_image(rgby: np.ndarray, cell_mask: np.ndarray, spec: CropSpec) -> tuple[CellCrops, dict[str, list]]:
    """(crops, cell table) of one image: the one function extraction and inference share."""
    cut = extract_cell_crops(rgby[..., : spec.in_chans], cell_mask, spec.crop_size, spec.crop_mask, spec.padding)
    return cut, cell_table(cut, cell_mask, rgby[..., 1])


@dataclass
class ExtractReport:
    """Counts of one extraction run."""

    done_before: int = 0
    extracted: int = 0
    cells: int = 0
    failed: dict[str, str] = field(default_factory=dict)


_WORKER: dict[str, Any] = {}


def _init_worker(spec: CropSpec, mask_dir: str, crop_dir: str, data_dir: str, split: str, ext: str) -> None:
    import cv2

    cv2.setNumThreads(1)
    _WORKER.update(
        spec=spec,
        cache=MaskCache(mask_dir, spec.mask_backend, spec.mask_params),
        crop_dir=crop_dir,
        data_dir=data_dir,
        split=split,
        ext=ext,
    )


def _extract_one(image_id: str) -> int:
    w = _WORKER
    rgby = read_rgby(w["data_dir"], image_id, split=w["split"], ext=w["ext"])
    _, cell_mask = w["cache"].get(image_id, lambda _id: rgby)
    if cell_mask.shape != rgby.shape[:2]:
        raise ValueError(f"image {image_id}: cached masks are {cell_mask.shape}, image is {rgby.shape[:2]}")
    cut, cells = cut_image(rgby, cell_mask, w["spec"])
    write_image_crops(w["crop_dir"], w["split"], image_id, cut, cells)
    return len(cut.cell_ids)


def extract_split(
    data_dir: str | os.PathLike,
    split: str,
    ids: Sequence[str],
    mask_dir: str | os.PathLike,
    crop_dir: str | os.PathLike,
    spec: CropSpec,
    workers: int = 1,
    num_shards: int = 1,
    shard_index: int = 0,
    ext: str = "png",
) -> ExtractReport:
    """Cut the cells of one shard of ``ids`` that are not in the store yet, in parallel, then rebuild the index.

    Masks come from the cache in ``mask_dir`` (computed there when missing, with ``spec.mask_backend``).

    Raises:
        MaskCacheMismatchError: ``mask_dir`` holds masks of another backend or other parameters.
        CropStoreMismatchError: ``crop_dir`` holds crops of other settings.
    """
    selected = shard_ids(ids, num_shards, shard_index)
    MaskCache(mask_dir, spec.mask_backend, spec.mask_params)  # manifest check before any work
    Path(crop_dir, split).mkdir(parents=True, exist_ok=True)
    check_store_manifest(crop_dir, spec)
    write_text_atomic(mask_source_path(crop_dir, split), json.dumps({"mask_dir": str(Path(mask_dir).resolve())}))
    report = ExtractReport()
    todo = [i for i in selected if not cells_path(crop_dir, split, i).is_file()]
    report.done_before = len(selected) - len(todo)
    init_args = (spec, str(mask_dir), str(crop_dir), str(data_dir), split, ext)
    progress = tqdm(total=len(todo), desc=f"crops {split} shard {shard_index}/{num_shards}", unit="image")

    def record(image_id: str, outcome: int | BaseException) -> None:
        if isinstance(outcome, BaseException):
            logger.error("image %s: %s: %s", image_id, type(outcome).__name__, outcome)
            report.failed[image_id] = f"{type(outcome).__name__}: {outcome}"
        else:
            report.extracted += 1
            report.cells += outcome
        progress.update()

    run_per_image(todo, _extract_one, _init_worker, init_args, workers if len(todo) > 1 else 1, record)
    progress.close()
    build_index(crop_dir, split, ids)
    return report


def build_index(crop_dir: str | os.PathLike, split: str, ids: Sequence[str]) -> pd.DataFrame:
    """Write ``{split}_index.csv`` from the cell tables of every finished image of ``ids`` (all shards)."""
    frames = []
    for image_id in sorted(set(ids)):
        path = cells_path(crop_dir, split, image_id)
        if not path.is_file():
            continue
        cells = pd.DataFrame(json.loads(path.read_text()))
        cells.insert(0, "ID", image_id)
        cells.insert(2, "row", np.arange(len(cells)))
        frames.append(cells)
    index = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=INDEX_COLUMNS)
    index = index.reindex(columns=INDEX_COLUMNS)
    index["split"] = split
    write_csv_atomic(index_path(crop_dir, split), index)
    return index


def read_index(crop_dir: str | os.PathLike, split: str) -> pd.DataFrame:
    """The cell index of a split; FileNotFoundError naming the file when the split was never extracted."""
    path = index_path(crop_dir, split)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run extract_cell_crops.py --split {split} --crop_dir {crop_dir}")
    return pd.read_csv(path, dtype={"ID": str})


class CropReader:
    """Reads single crops of a store by (ID, row), keeping up to ``max_open`` memory-mapped per-image files open.

    Each open map holds one file descriptor. 512 keeps a CPU-scale store open whole (shuffled reads of 400 images
    with 64 open spent 10% of a pre-training epoch reopening files) and stays well inside the usual limit of 1024.
    """

    def __init__(self, crop_dir: str | os.PathLike, split: str, max_open: int = 512):
        self.crop_dir, self.split, self.max_open = Path(crop_dir), split, max_open
        self._open: dict[str, np.ndarray] = {}

    def image_crops(self, image_id: str) -> np.ndarray:
        """(K, S, S, C) uint8 memory map of one image's crops."""
        crops = self._open.get(image_id)
        if crops is None:
            if len(self._open) >= self.max_open:
                self._open.pop(next(iter(self._open)))
            crops = np.load(crop_path(self.crop_dir, self.split, image_id), mmap_mode="r")
            self._open[image_id] = crops
        return crops

    def __call__(self, image_id: str, row: int) -> np.ndarray:
        """(S, S, C) uint8 crop."""
        return np.asarray(self.image_crops(image_id)[row])
