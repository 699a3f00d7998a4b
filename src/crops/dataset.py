"""Streaming datasets over the crop store: crops are read one at a time from memory-mapped per-image files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from src.crops.store import CropReader


def augment_crop(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random one of the 8 flips and 90-degree rotations of an (S, S, C) crop (cells have no orientation)."""
    crop = np.rot90(crop, k=int(rng.integers(4)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return crop


class ProcessRng:
    """A numpy generator seeded once per process from torch's initial seed plus ``seed``: torch seeds every
    DataLoader worker differently and from the run's seed, so workers never share a stream and a run repeats."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._rng: np.random.Generator | None = None
        self._pid: int | None = None

    def __call__(self) -> np.random.Generator:
        if self._pid != os.getpid():
            self._rng = np.random.default_rng((torch.initial_seed() + self.seed) % 2**32)
            self._pid = os.getpid()
        return self._rng


class CellCropDataset(Dataset):
    """One sample per cell of ``index`` (columns ID, cell_id, row).

    Each item: ``id`` (image ID), ``cell_id``, ``image`` uint8 (C, S, S), ``target`` (19,) float32,
    ``image_target`` (19,) float32 (the image's labels, for multiple-instance learning) and ``bag`` (int, the
    image's position in ``index``'s image order).

    Args:
        crop_dir, split: the store and split to read.
        index: the cells (rows of the split's index).
        targets: (N, 19) float32 per-cell targets.
        image_targets: (N, 19) float32 labels of each cell's image.
        train: random flips and rotations.
        seed: augmentation seed (each worker and epoch draws its own stream).
    """

    def __init__(
        self,
        crop_dir: str | os.PathLike,
        split: str,
        index: pd.DataFrame,
        targets: np.ndarray,
        image_targets: np.ndarray,
        train: bool,
        seed: int = 0,
    ):
        self.reader = CropReader(crop_dir, split)
        self.ids = index["ID"].to_numpy()
        self.cell_ids = index["cell_id"].to_numpy()
        self.rows = index["row"].to_numpy()
        self.bags = pd.factorize(index["ID"])[0]
        self.targets, self.image_targets = targets, image_targets
        self.train, self.rng = train, ProcessRng(seed)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        crop = self.reader(self.ids[i], int(self.rows[i]))
        if self.train:
            crop = augment_crop(crop, self.rng())
        return {
            "id": str(self.ids[i]),
            "cell_id": int(self.cell_ids[i]),
            "image": torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))),
            "target": torch.from_numpy(self.targets[i]),
            "image_target": torch.from_numpy(self.image_targets[i]),
            "bag": int(self.bags[i]),
        }


class BagBatchSampler(Sampler[list[int]]):
    """Batches of whole images: every cell of ``images_per_batch`` images (multiple-instance learning bags).

    Args:
        bags: (N,) image number of each cell.
        images_per_batch: images per batch.
        shuffle: shuffle the images each epoch.
        seed: shuffling seed.
    """

    def __init__(self, bags: np.ndarray, images_per_batch: int, shuffle: bool = True, seed: int = 0):
        if images_per_batch < 1:
            raise ValueError(f"--bag_images must be >= 1, got {images_per_batch}")
        order = np.argsort(bags, kind="stable")
        _, starts = np.unique(bags[order], return_index=True)
        self.groups = np.split(order, starts[1:])
        self.images_per_batch, self.shuffle = images_per_batch, shuffle
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return (len(self.groups) + self.images_per_batch - 1) // self.images_per_batch

    def __iter__(self) -> Iterator[list[int]]:
        picks = np.arange(len(self.groups))
        if self.shuffle:
            np.random.default_rng(self.seed + self.epoch).shuffle(picks)
            self.epoch += 1
        for start in range(0, len(picks), self.images_per_batch):
            yield np.concatenate([self.groups[g] for g in picks[start : start + self.images_per_batch]]).tolist()


class UnlabelledCropDataset(Dataset):
    """Every cell of one or more splits of the store, without labels, for self-supervised learning.

    Each item: ``image`` uint8 (C, S, S), ``id``, ``split`` and, with ``same_image_partners``, ``partner``: another
    cell of the same image (itself when the image has one cell), SIFLoc's positive pair.

    Args:
        crop_dir: the store.
        index: cells of the splits (columns ID, row, split), e.g. ``pd.concat`` of :func:`read_index` tables.
        same_image_partners: also return a partner cell.
        seed: partner choice seed (each DataLoader worker draws its own stream).
    """

    def __init__(
        self, crop_dir: str | os.PathLike, index: pd.DataFrame, same_image_partners: bool = False, seed: int = 0
    ):
        self.readers = {split: CropReader(crop_dir, split) for split in index["split"].unique()}
        self.ids = index["ID"].to_numpy()
        self.rows = index["row"].to_numpy()
        self.splits = index["split"].to_numpy()
        self.same_image_partners, self.rng = same_image_partners, ProcessRng(seed)
        keys = pd.Series(index["split"].astype(str) + "/" + index["ID"].astype(str))
        self.members = keys.groupby(keys).indices  # image key -> positions of its cells
        self.keys = keys.to_numpy()

    def __len__(self) -> int:
        return len(self.ids)

    def _crop(self, i: int) -> torch.Tensor:
        crop = self.readers[self.splits[i]](self.ids[i], int(self.rows[i]))
        return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {"id": str(self.ids[i]), "split": str(self.splits[i]), "image": self._crop(i)}
        if self.same_image_partners:
            cells = self.members[self.keys[i]]
            others = cells[cells != i]
            item["partner"] = self._crop(int(self.rng().choice(others)) if len(others) else i)
        return item
