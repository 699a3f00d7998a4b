"""Read HPA images and labels from the Kaggle layout and the public HPA layout.

Kaggle layout: ``{data_dir}/{split}/{ID}_{red,green,blue,yellow}.png`` (8- or 16-bit
greyscale PNG) and ``{data_dir}/train.csv`` with columns ``ID,Label`` where Label is
``|``-joined class ids. Public HPA layout (extra data): ``{ID}_{color}.jpg``, each an
RGB JPEG whose signal sits in its own plane (yellow in both red and green).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from src.data.classes import CHANNELS, NUM_CLASSES

# Which plane of a public-HPA RGB jpg holds each channel's signal (cv2 reads BGR).
_JPG_PLANES_BGR = {"red": (2,), "green": (1,), "blue": (0,), "yellow": (2, 1)}


def channel_path(
    data_dir: str | os.PathLike, image_id: str, channel: str, split: str = "train", ext: str = "png"
) -> Path:
    """Path of one channel file; ``split`` may be '' for a flat folder."""
    return Path(data_dir) / split / f"{image_id}_{channel}.{ext}"


def read_channel(path: str | os.PathLike) -> np.ndarray:
    """One channel as an (H, W) uint8 array.

    16-bit PNGs are scaled to 8 bits (divided by 256); an RGB jpg of the public HPA
    layout gives the plane(s) that hold the channel named in its file name.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing channel file: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"unreadable image file: {path}")
    if image.ndim == 3:
        channel = path.stem.rsplit("_", 1)[-1]
        planes = _JPG_PLANES_BGR.get(channel, (0, 1, 2)[: min(3, image.shape[2])])
        image = image[..., list(planes)].max(axis=-1)
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"{path}: unsupported pixel type {image.dtype}")
    return image


def read_rgby(
    data_dir: str | os.PathLike,
    image_id: str,
    split: str = "train",
    size: int | tuple[int, int] | None = None,
    ext: str = "png",
) -> np.ndarray:
    """The four channels of one image, stacked red, green, blue, yellow.

    Args:
        data_dir: folder holding ``{split}/``.
        image_id: image ID (file name prefix).
        split: sub-folder, 'train' or 'test' ('' for a flat folder).
        size: resize to (size, size) or (width, height) with area interpolation.
        ext: 'png' (Kaggle layout) or 'jpg' (public HPA layout).

    Returns:
        (H, W, 4) uint8 array.
    """
    paths = [channel_path(data_dir, image_id, c, split, ext) for c in CHANNELS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"image {image_id}: missing channel file(s): {', '.join(missing)}")
    channels = [read_channel(p) for p in paths]
    shapes = {c.shape for c in channels}
    if len(shapes) != 1:
        detail = ", ".join(f"{name}={ch.shape}" for name, ch in zip(CHANNELS, channels))
        raise ValueError(f"image {image_id}: channels differ in shape ({detail})")
    image = np.stack(channels, axis=-1)
    if size is not None:
        image = resize_image(image, size)
    return image


def longer_side_at_most(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(h, w) of an image shrunk so that its longer side is at most ``max_side`` (never enlarged; 0: unchanged)."""
    if max_side <= 0:
        return height, width
    factor = min(1.0, max_side / max(height, width))
    return max(1, round(height * factor)), max(1, round(width * factor))


def resize_image(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, C) image to (size, size) or (width, height): area when shrinking, linear when growing."""
    width, height = (size, size) if isinstance(size, int) else size
    if image.shape[:2] == (height, width):
        return image
    shrink = width * height < image.shape[0] * image.shape[1]
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return resized.reshape(height, width, *image.shape[2:])


def parse_label(label: object, where: str) -> list[int]:
    """Class ids of one ``|``-joined Label cell; ``where`` names the row for errors."""
    text = "" if pd.isna(label) else str(label).strip()
    if not text:
        raise ValueError(f"{where}: empty label")
    try:
        ids = [int(tok) for tok in text.split("|")]  # strict: '1.5' or 'inf' is an error, not class 1
    except ValueError:
        raise ValueError(f"{where}: label {text!r} is not '|'-joined class ids") from None
    bad = [i for i in ids if not 0 <= i < NUM_CLASSES]
    if bad:
        raise ValueError(f"{where}: class id(s) {bad} outside 0..{NUM_CLASSES - 1} in label {text!r}")
    return ids


def read_labels(csv_path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a ``train.csv``: columns ID, Label; unique IDs; ids in 0..18.

    Returns:
        DataFrame with columns ID, Label (str) and ``labels`` (list of class ids).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"label file not found: {csv_path}")
    frame = pd.read_csv(csv_path, dtype={"ID": str, "Label": str}, keep_default_na=False)
    for column in ("ID", "Label"):
        if column not in frame.columns:
            raise ValueError(f"{csv_path}: missing column {column!r} (has {list(frame.columns)})")
    duplicated = frame["ID"][frame["ID"].duplicated()].unique()
    if len(duplicated):
        raise ValueError(f"{csv_path}: duplicate ID(s): {', '.join(duplicated[:5])}")
    frame["labels"] = [
        parse_label(label, f"{csv_path} row {row + 2} (ID {image_id})")
        for row, (image_id, label) in enumerate(zip(frame["ID"], frame["Label"]))
    ]
    return frame


def labels_to_multihot(labels: list[list[int]]) -> np.ndarray:
    """Lists of class ids to an (N, 19) float32 multi-hot matrix."""
    multihot = np.zeros((len(labels), NUM_CLASSES), dtype=np.float32)
    for row, ids in enumerate(labels):
        multihot[row, ids] = 1.0
    return multihot


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks: a file's identity in manifests and thresholds files."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
