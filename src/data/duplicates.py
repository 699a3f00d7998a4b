"""Near-duplicate images by perceptual hash, grouped so that a group never straddles two folds.

Atlas 2018 de-duplicated with a 64-bit pHash (``imagehash.phash``) before splitting: slices of one scan look
alike and leak between folds. Two images are near duplicates when their hashes differ in at most
``max_distance`` bits (4 of 64: similarity >= 0.9375); groups are the connected components of that relation.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from src.data.classes import CHANNELS
from src.data.io import channel_path, read_channel, read_rgby

logger = logging.getLogger(__name__)

HASH_CHANNELS = (*CHANNELS, "mean")  # one channel (green: the protein), or the mean of the four
DUPLICATE_GROUPS_CSV = "duplicate_groups.csv"  # beside train.csv: the fold builder keeps each group in one fold


def image_phash(
    data_dir: str | os.PathLike, image_id: str, split: str, channel: str = "green", ext: str = "png"
) -> np.ndarray:
    """(64,) bool pHash of one channel (or the four channels' mean) of an image."""
    if channel not in HASH_CHANNELS:
        raise ValueError(f"channel must be one of {HASH_CHANNELS}, got {channel!r}")
    if channel == "mean":
        plane = read_rgby(data_dir, image_id, split, ext=ext).mean(axis=-1).astype(np.uint8)
    else:
        plane = read_channel(channel_path(data_dir, image_id, channel, split, ext))
    return imagehash.phash(Image.fromarray(plane)).hash.flatten()


def hash_images(
    data_dir: str | os.PathLike, images: list[tuple[str, str]], channel: str = "green", ext: str = "png"
) -> tuple[list[tuple[str, str]], np.ndarray, list[str]]:
    """pHashes of (split, ID) images; an unreadable image is reported by file and skipped, the rest go on.

    Returns:
        (the hashed (split, ID) pairs, (N, 64) bool hashes, one error line per skipped image).
    """
    kept, hashes, errors = [], [], []
    for split, image_id in images:
        try:
            hashes.append(image_phash(data_dir, image_id, split, channel, ext))
            kept.append((split, image_id))
        except Exception as error:  # one bad file must not stop the scan of thousands
            errors.append(f"{split}/{image_id}: {type(error).__name__}: {error}")
            logger.warning("cannot hash %s/%s: %s", split, image_id, error)
    return kept, np.asarray(hashes, dtype=bool).reshape(len(kept), 64), errors


def group_near_duplicates(hashes: np.ndarray, max_distance: int = 4, chunk: int = 1024) -> np.ndarray:
    """Group index of each of (N, 64) bool hashes: connected components of Hamming distance <= ``max_distance``.

    Returns:
        (N,) int64 group ids, numbered in order of first appearance.
    """
    n = len(hashes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    bits = hashes.astype(np.uint8)
    rows, cols = [], []
    for start in range(0, n, chunk):
        block = bits[start : start + chunk]
        distance = block.sum(1)[:, None] + bits.sum(1)[None, :] - 2 * (block.astype(np.int32) @ bits.T.astype(np.int32))
        r, c = np.nonzero(distance <= max_distance)
        rows.append(r + start)
        cols.append(c)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, first = np.unique(labels, return_index=True)
    order = {label: rank for rank, label in enumerate(labels[np.sort(first)])}
    return np.array([order[label] for label in labels], dtype=np.int64)


def read_duplicate_groups(path: str | os.PathLike) -> dict[str, int]:
    """ID -> group of a ``duplicate_groups.csv`` (columns split, ID, group, ...)."""
    frame = pd.read_csv(Path(path), dtype={"ID": str})
    missing = {"ID", "group"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    return dict(zip(frame["ID"], frame["group"].astype(np.int64)))
