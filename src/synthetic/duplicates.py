"""Planted near duplicates: re-noised copies of training images, to check that de-duplication finds them.

A copy of ``{id}`` is ``{id}-dup``: every channel gets fresh Gaussian noise (a re-scan of the same field), and it
is appended to ``train.csv`` with the original's labels. It has no per-cell truth of its own.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from src.data.atomic import write_csv_atomic, write_png_atomic
from src.data.classes import CHANNELS
from src.data.io import channel_path, read_channel

DUPLICATE_SUFFIX = "-dup"


def plant_near_duplicates(out_dir: str | os.PathLike, count: int, seed: int = 0, noise_std: float = 3.0) -> list[str]:
    """Add re-noised copies of ``count`` training images chosen at random (by ``seed``); idempotent.

    Args:
        out_dir: a synthetic benchmark folder (``train.csv``, ``train/``).
        count: copies to plant (at most the number of original training images).
        seed: which images are copied and their noise.
        noise_std: standard deviation of the added noise, in uint8 grey levels.

    Returns:
        the IDs of the copies.
    """
    out_dir = Path(out_dir)
    frame = pd.read_csv(out_dir / "train.csv", dtype={"ID": str}, keep_default_na=False)
    originals = frame[~frame["ID"].str.endswith(DUPLICATE_SUFFIX)]
    if not 0 <= count <= len(originals):
        raise ValueError(f"cannot plant {count} duplicates among {len(originals)} training images of {out_dir}")
    rng = np.random.default_rng(seed)
    chosen = originals.iloc[np.sort(rng.choice(len(originals), size=count, replace=False))]
    copies = []
    for source_id, label in zip(chosen["ID"], chosen["Label"]):
        copy_id = source_id + DUPLICATE_SUFFIX
        for channel in CHANNELS:
            plane = read_channel(channel_path(out_dir, source_id, channel, "train")).astype(np.float32)
            noisy = np.clip(plane + rng.normal(0.0, noise_std, plane.shape), 0, 255).astype(np.uint8)
            write_png_atomic(channel_path(out_dir, copy_id, channel, "train"), noisy)
        copies.append((copy_id, label))
    kept = frame[~frame["ID"].isin([c for c, _ in copies])]
    rows = pd.concat([kept, pd.DataFrame(copies, columns=["ID", "Label"])], ignore_index=True)
    write_csv_atomic(out_dir / "train.csv", rows[["ID", "Label"]])
    return [c for c, _ in copies]
