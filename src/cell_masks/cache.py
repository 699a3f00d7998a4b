"""Crash-safe, parallel, shardable cache of nucleus and cell masks.

Layout: ``{mask_dir}/{ID}.npz`` (``np.savez_compressed`` with keys ``nuclei_mask`` and
``cell_mask``, (H, W) uint16) written atomically, and ``{mask_dir}/manifest.json`` with the
backend and its parameters. A cache made with another backend or other parameters is
refused; an unreadable file is logged and recomputed; a re-run computes only what is missing.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from src.cell_masks.segment import Segmenter, get_segmenter
from src.data.atomic import atomic_path, write_text_atomic
from src.data.io import read_rgby
from src.data.per_image import run_per_image

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MASK_KEYS = ("nuclei_mask", "cell_mask")


class MaskCacheMismatchError(ValueError):
    """The mask folder was filled with another backend or other parameters."""


class CorruptMaskFileError(ValueError):
    """A cached mask file cannot be read back whole."""


def mask_path(mask_dir: str | os.PathLike, image_id: str) -> Path:
    return Path(mask_dir) / f"{image_id}.npz"


def write_masks(path: str | os.PathLike, nuclei_mask: np.ndarray, cell_mask: np.ndarray) -> None:
    """Write (H, W) uint16 masks to one compressed ``.npz``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, nuclei_mask=nuclei_mask.astype(np.uint16), cell_mask=cell_mask.astype(np.uint16))


def read_masks(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(nuclei_mask, cell_mask), (H, W) uint16, from a cache file.

    Raises:
        CorruptMaskFileError: truncated or damaged file, missing key, or inconsistent arrays.
    """
    try:
        with np.load(path) as archive:
            missing = [key for key in MASK_KEYS if key not in archive.files]
            if missing:
                raise CorruptMaskFileError(f"{path}: missing array(s) {missing}")
            nuclei_mask, cell_mask = archive["nuclei_mask"], archive["cell_mask"]
    except CorruptMaskFileError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise CorruptMaskFileError(f"{path}: unreadable mask file ({type(error).__name__}: {error})") from error
    if nuclei_mask.ndim != 2 or nuclei_mask.shape != cell_mask.shape or cell_mask.dtype != np.uint16:
        raise CorruptMaskFileError(
            f"{path}: bad arrays {nuclei_mask.dtype}{nuclei_mask.shape} {cell_mask.dtype}{cell_mask.shape}"
        )
    return nuclei_mask, cell_mask


def remove_stale_temporaries(mask_dir: str | os.PathLike, min_age_s: float = 600.0) -> int:
    """Delete temporary files left by killed writers (older than ``min_age_s``, so live writers are safe)."""
    now = time.time()
    stale = [p for p in Path(mask_dir).glob(".*.tmp.npz") if now - p.stat().st_mtime > min_age_s]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        logger.info("removed %d stale temporary file(s) from %s", len(stale), mask_dir)
    return len(stale)


def check_manifest(mask_dir: str | os.PathLike, backend: str, params: dict[str, Any]) -> None:
    """Write the manifest of a new cache, or check that an existing one matches.

    Raises:
        MaskCacheMismatchError: the folder holds masks from another backend or other parameters.
    """
    path = Path(mask_dir) / MANIFEST_NAME
    expected = {"backend": backend, "params": json.loads(json.dumps(params, sort_keys=True))}
    if path.is_file():
        try:
            found = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise MaskCacheMismatchError(
                f"{path}: unreadable manifest ({error}); delete it or use another mask_dir"
            ) from error
        if found != expected:
            differences = []
            if found.get("backend") != backend:
                differences.append(f"backend {found.get('backend')!r} != {backend!r}")
            old_params = found.get("params", {})
            for key in sorted(set(old_params) | set(expected["params"])):
                if old_params.get(key) != expected["params"].get(key):
                    differences.append(f"{key}: {old_params.get(key)!r} != {expected['params'].get(key)!r}")
            raise MaskCacheMismatchError(
                f"mask cache {mask_dir} was made with other settings ({'; '.join(differences)}); "
                "use another --mask_dir or delete that folder"
            )
        return
    write_text_atomic(path, json.dumps(expected, indent=2, sort_keys=True) + "\n")


def load_or_compute(
    segmenter: Segmenter, mask_dir: str | os.PathLike, image_id: str, rgby_loader: Callable[[str], np.ndarray]
) -> tuple[tuple[np.ndarray, np.ndarray], str]:
    """Masks of one image from the cache, computing and storing them when missing or corrupt.

    Returns:
        ((nuclei_mask, cell_mask), status) with status 'cached', 'computed' or 'recomputed' (corrupt file).
    """
    path = mask_path(mask_dir, image_id)
    status = "computed"
    if path.is_file():
        try:
            return read_masks(path), "cached"
        except CorruptMaskFileError as error:
            logger.warning("%s; recomputing image %s", error, image_id)
            status = "recomputed"
    rgby = rgby_loader(image_id)
    nuclei_mask, cell_mask = segmenter(rgby, image_id=image_id)
    write_masks(path, nuclei_mask, cell_mask)
    return (nuclei_mask, cell_mask), status


class MaskCache:
    """On-demand access to cached masks for later stages (CAM inference, pseudo labels).

    Example:
        cache = MaskCache("masks/classical", "classical", {})
        nuclei_mask, cell_mask = cache.get(image_id, lambda i: read_rgby(data_dir, i, "test"))
    """

    def __init__(self, mask_dir: str | os.PathLike, backend: str = "classical", params: dict[str, Any] | None = None):
        self.mask_dir = Path(mask_dir)
        self.segmenter = get_segmenter(backend, **(params or {}))
        self.mask_dir.mkdir(parents=True, exist_ok=True)
        check_manifest(self.mask_dir, backend, self.segmenter.params)

    def get(self, image_id: str, rgby_loader: Callable[[str], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(nuclei_mask, cell_mask), (H, W) uint16; ``rgby_loader(image_id)`` is called only when computing."""
        masks, _ = load_or_compute(self.segmenter, self.mask_dir, image_id, rgby_loader)
        return masks


def shard_ids(ids: Sequence[str], num_shards: int = 1, shard_index: int = 0) -> list[str]:
    """The IDs of one shard: sorted unique IDs, every ``num_shards``-th from ``shard_index``."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"need num_shards >= 1 and 0 <= shard_index < num_shards, got {shard_index} of {num_shards}")
    return sorted(set(ids))[shard_index::num_shards]


@dataclass
class FillReport:
    """Counts of one fill run."""

    cached: int = 0
    computed: int = 0
    recomputed: int = 0
    failed: dict[str, str] = field(default_factory=dict)


# Per-process state of the worker pool (set by _init_worker).
_WORKER: dict[str, Any] = {}


def _init_worker(backend: str, params: dict[str, Any], mask_dir: str, data_dir: str, split: str, ext: str) -> None:
    import cv2

    cv2.setNumThreads(1)
    _WORKER.update(
        segmenter=get_segmenter(backend, **params), mask_dir=mask_dir, data_dir=data_dir, split=split, ext=ext
    )


def _fill_one(image_id: str) -> str:
    def loader(image: str) -> np.ndarray:
        return read_rgby(_WORKER["data_dir"], image, split=_WORKER["split"], ext=_WORKER["ext"])

    _, status = load_or_compute(_WORKER["segmenter"], _WORKER["mask_dir"], image_id, loader)
    return status


def fill_mask_cache(
    data_dir: str | os.PathLike,
    split: str,
    ids: Sequence[str],
    mask_dir: str | os.PathLike,
    backend: str = "classical",
    params: dict[str, Any] | None = None,
    workers: int | None = None,
    num_shards: int = 1,
    shard_index: int = 0,
    ext: str = "png",
) -> FillReport:
    """Compute the masks of one shard of ``ids`` that are not cached yet, in parallel.

    Args:
        data_dir: folder holding ``{split}/{ID}_{red,green,blue,yellow}.{ext}``.
        split: sub-folder ('' for a flat folder).
        ids: image IDs (all shards).
        mask_dir: cache folder.
        backend: segmentation backend name.
        params: backend parameters (recorded in the manifest).
        workers: worker processes (None: all cores; 1: in this process).
        num_shards: number of shards the IDs are split into (one per machine or GPU).
        shard_index: this run's shard.
        ext: channel file extension.

    Returns:
        FillReport with the counts; images that failed are listed with their error and logged.
    """
    params = dict(params or {})
    selected = shard_ids(ids, num_shards, shard_index)
    segmenter = get_segmenter(backend, **params)  # validates the backend and its parameters up front
    Path(mask_dir).mkdir(parents=True, exist_ok=True)
    check_manifest(mask_dir, backend, segmenter.params)
    remove_stale_temporaries(mask_dir)
    workers = (os.cpu_count() or 1) if workers is None else workers
    report = FillReport()
    init_args = (backend, params, str(mask_dir), str(data_dir), split, ext)
    progress = tqdm(total=len(selected), desc=f"masks {backend} shard {shard_index}/{num_shards}", unit="image")

    def record(image_id: str, outcome: str | BaseException) -> None:
        if isinstance(outcome, BaseException):
            logger.error("image %s: %s: %s", image_id, type(outcome).__name__, outcome)
            report.failed[image_id] = f"{type(outcome).__name__}: {outcome}"
        else:
            setattr(report, outcome, getattr(report, outcome) + 1)
        progress.update()

    run_per_image(selected, _fill_one, _init_worker, init_args, workers, record)
    progress.close()
    return report
