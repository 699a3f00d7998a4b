"""The data module of the cell stage: crops of the store, folds by image, per-cell targets.

Folds are the image folds of :class:`src.training.datamodule.HPADataModule` (``folds_k{n}_seed0.csv`` beside the
data), so no image's cells are split across training and validation, and the validation fold is the one the
image classifier held out.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from src.crops.dataset import BagBatchSampler, CellCropDataset
from src.crops.store import read_index, read_manifest
from src.crops.targets import cell_targets
from src.data.folds import load_or_make_folds
from src.data.io import labels_to_multihot, read_labels
from src.data.splits import read_metadata

logger = logging.getLogger(__name__)


class CropStoreDataModule(pl.LightningDataModule):
    """What every data module over a crop store shares: its manifest, the crop format it fixes and the loader
    settings (streaming workers, pinned memory on CUDA).

    Raises:
        FileNotFoundError: ``crop_dir`` is not a crop store.
    """

    def __init__(self, crop_dir: str | os.PathLike, num_workers: int):
        super().__init__()
        self.crop_dir, self.num_workers = crop_dir, num_workers
        self.manifest = read_manifest(crop_dir)

    @property
    def crop_channels(self) -> int:
        return int(self.manifest["channels"])

    @property
    def crop_size(self) -> int:
        return int(self.manifest["crop_size"])

    def record_crop_format(self, args: argparse.Namespace) -> None:
        """Set the run's ``num_inchannels``, ``input_size`` and ``crop_spec`` (saved with the checkpoint, so
        inference cuts the same crops) from the store."""
        args.num_inchannels, args.input_size, args.crop_spec = self.crop_channels, self.crop_size, self.manifest

    def loader_options(self) -> dict:
        """DataLoader keywords of every loader over the store."""
        return dict(
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )


EXCLUDE_FLAGS = {"cell_line": "--exclude_cell_lines", "batch": "--exclude_batches"}  # metadata column -> option


def domain_images(data_dir: str | os.PathLike, names: Mapping[str, Sequence[str]]) -> set[str]:
    """IDs of the images whose ``metadata.csv`` value in a column (``cell_line``, ``batch``) is one of that
    column's ``names``; the file is read once, and not at all when every list is empty.

    Raises:
        FileNotFoundError: no ``metadata.csv``.
        ValueError: a name the metadata does not have (the known ones listed).
    """
    wanted = {column: listed for column, listed in names.items() if listed}
    if not wanted:
        return set()
    metadata = read_metadata(data_dir, " and ".join(EXCLUDE_FLAGS[column] for column in wanted))
    images = set()
    for column, listed in wanted.items():
        unknown = sorted(set(listed) - set(metadata[column]))
        if unknown:
            known = sorted(set(metadata[column]))
            raise ValueError(
                f"{EXCLUDE_FLAGS[column]} {unknown}: the {column} column of {data_dir}/metadata.csv holds only {known}"
            )
        images |= set(metadata.loc[metadata[column].isin(listed), "ID"])
    return images


class CellCropDataModule(CropStoreDataModule):
    """Training cells of a crop store with their targets.

    Args:
        crop_dir: store written by ``extract_cell_crops.py --split train``.
        data_dir: Kaggle layout with ``train.csv`` (image labels, folds).
        val_fold, n_splits: image folds.
        targets: 'image', 'pseudo' or 'mixed' (see :mod:`src.crops.targets`).
        pseudo_csv: ``gen_pseudo`` CSV for 'pseudo' and 'mixed'.
        pseudo_weight: share of the pseudo labels in 'mixed'.
        batch_size: cells per batch (without bags).
        bag_images: images per batch for multiple-instance learning (0: plain cell batches).
        num_workers: DataLoader workers.
        seed: augmentation and bag shuffling seed.
        label_fraction: share of the training images whose cells are used (1: all).
        exclude_cell_lines: cell lines (names in ``metadata.csv``) whose images are neither trained nor validated
            on: a line held out of the labels, for a domain-shift test on the same test images.
        exclude_batches: the same for acquisition batches.
    """

    def __init__(
        self,
        crop_dir: str | os.PathLike,
        data_dir: str | os.PathLike,
        val_fold: int = 0,
        n_splits: int = 5,
        targets: str = "image",
        pseudo_csv: str | os.PathLike | None = None,
        pseudo_weight: float = 0.5,
        batch_size: int = 128,
        bag_images: int = 0,
        num_workers: int = 2,
        seed: int = 0,
        label_fraction: float = 1.0,
        exclude_cell_lines: Sequence[str] = (),
        exclude_batches: Sequence[str] = (),
    ):
        super().__init__(crop_dir, num_workers)
        self.split = "train"
        labels = read_labels(os.path.join(data_dir, "train.csv"))
        if not 0 <= val_fold < n_splits:
            raise ValueError(f"--val_fold {val_fold} outside 0..{n_splits - 1}")
        folds = load_or_make_folds(labels, data_dir, n_splits, seed=0)
        index = read_index(crop_dir, "train")
        unknown = sorted(set(index["ID"]) - set(labels["ID"]))
        if unknown:
            raise ValueError(
                f"--cell_crop_dir {crop_dir}: {len(unknown)} image(s) not in {data_dir}/train.csv, e.g. {unknown[:3]}"
            )
        if index.empty:
            raise ValueError(f"--cell_crop_dir {crop_dir}: the store holds no training cells")
        image_labels = dict(zip(labels["ID"], labels["labels"]))
        self.index = index.assign(fold=index["ID"].map(dict(zip(folds["ID"], folds["fold"]))).to_numpy())
        self.targets = cell_targets(targets, self.index, image_labels, pseudo_csv, pseudo_weight)
        self.image_targets = labels_to_multihot([image_labels[i] for i in self.index["ID"]])
        self.val_fold = val_fold
        self.batch_size, self.bag_images, self.seed = batch_size, bag_images, seed
        if not 0.0 < label_fraction <= 1.0:
            raise ValueError(f"--label_fraction must lie in (0, 1], got {label_fraction}")
        self.label_fraction = label_fraction
        excluded = domain_images(data_dir, {"cell_line": exclude_cell_lines, "batch": exclude_batches})
        self.kept = ~self.index["ID"].isin(excluded).to_numpy()
        if not self.train_rows.any():
            raise ValueError(
                f"--exclude_cell_lines {list(exclude_cell_lines)} and --exclude_batches {list(exclude_batches)} "
                "leave no training image"
            )
        self.train_set: CellCropDataset | None = None
        self.val_set: CellCropDataset | None = None

    def _dataset(self, rows: np.ndarray, train: bool) -> CellCropDataset:
        return CellCropDataset(
            self.crop_dir,
            self.split,
            self.index[rows].reset_index(drop=True),
            self.targets[rows],
            self.image_targets[rows],
            train=train,
            seed=self.seed,
        )

    @property
    def val_rows(self) -> np.ndarray:
        return (self.index["fold"] == self.val_fold).to_numpy() & self.kept

    @property
    def train_rows(self) -> np.ndarray:
        """Cells of the training folds outside the excluded lines; with ``label_fraction`` < 1 only those of a
        seeded share of their images (the labelled few of a semi-supervised comparison; at least one image)."""
        rows = (self.index["fold"] != self.val_fold).to_numpy() & self.kept
        if self.label_fraction >= 1.0:
            return rows
        images = np.array(sorted(set(self.index.loc[rows, "ID"])))
        keep = max(1, round(self.label_fraction * len(images)))
        chosen = np.random.default_rng(self.seed).choice(images, size=keep, replace=False)
        return rows & self.index["ID"].isin(chosen).to_numpy()

    def setup(self, stage: str | None = None) -> None:
        self.train_set = self._dataset(self.train_rows, train=True)
        self.val_set = self._dataset(self.val_rows, train=False)
        logger.info("cells: %d training, %d validation", len(self.train_set), len(self.val_set))

    def _loader(self, dataset: CellCropDataset, shuffle: bool) -> DataLoader:
        common = self.loader_options()
        if self.bag_images > 0:
            sampler = BagBatchSampler(dataset.bags, self.bag_images, shuffle=shuffle, seed=self.seed)
            return DataLoader(dataset, batch_sampler=sampler, **common)
        drop_last = shuffle and len(dataset) > self.batch_size  # BatchNorm needs more than one sample
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, drop_last=drop_last, **common)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
