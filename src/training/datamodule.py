"""HPA images for Lightning: a resized on-disk cache, folds, extra data and SC-CAM sub-labels.

Decoding four 2048x2048 PNGs per sample starves any model, so every image is resized once to
``cache_size`` and stored as one 4-channel file ``{cache_dir}/{split}/{ID}.npy`` (or ``.png``),
written atomically and reused by later runs. Batches are dicts: ``image`` uint8 (N, C, H, W),
``target`` float (N, 19) (or a (N, K, H, W) uint8 mask when a ``mask_reader`` is given: a quarter of the bytes a
float mask would carry between processes; the loss converts it on the device), ``sub_target``
(N, 19k) in SC-CAM rounds >= 1, and ``id``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from src.data.atomic import atomic_path
from src.data.folds import N_FOLDS, load_or_make_folds
from src.data.io import labels_to_multihot, parse_label, read_labels, read_rgby
from src.training.augment import build_transforms

logger = logging.getLogger(__name__)

# npy: raw uint8 read without decoding (a 256 px RGBY image in 0.3 ms against 7 ms for png, see
# benchmarks/bench_train_throughput.py), S * S * 4 bytes each; png: about half the disk, decoded on every read
CACHE_FORMATS = ("npy", "png")
DEFAULT_CACHE_FORMAT = "npy"


def default_loader_workers() -> int:
    """DataLoader workers when none are asked for: one per usable core, at most 8 (2 on a 2-core machine)."""
    return min(8, len(os.sched_getaffinity(0)))


EXT_DATA_MODES = {0: "rows with isin_dataset true", 1: "every row"}


def read_ext_data(csv_path: str | os.PathLike, ext_data_mode: int, exclude_ids: set[str] | None = None) -> pd.DataFrame:
    """Rows of the public-HPA extra data csv used for training.

    Columns read: ``ID``, ``Label_idx`` (``|``-joined class ids), optional ``dir`` (sub-folder),
    ``file_ext`` (png/jpg, default png), ``isin_dataset``, ``in_trainset``. IDs already in the
    competition set (``exclude_ids`` or ``in_trainset``) are dropped.

    Returns:
        DataFrame with ID, labels, split (sub-folder), ext.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"extra data csv not found: {csv_path} (--ext_data_csv)")
    if ext_data_mode not in EXT_DATA_MODES:
        raise ValueError(f"--ext_data_mode must be one of {EXT_DATA_MODES}, got {ext_data_mode}")
    frame = pd.read_csv(
        csv_path, dtype={"ID": str, "Label_idx": str, "dir": str, "file_ext": str}, keep_default_na=False
    )
    missing = [c for c in ("ID", "Label_idx") if c not in frame.columns]
    if missing:
        raise ValueError(f"{csv_path}: missing column(s) {missing} (has {list(frame.columns)})")
    keep = np.ones(len(frame), dtype=bool)
    if ext_data_mode == 0:
        if "isin_dataset" not in frame.columns:
            raise ValueError(f"{csv_path}: --ext_data_mode 0 needs the column 'isin_dataset'")
        keep &= frame["isin_dataset"].astype(str).str.lower().isin(["true", "1"]).to_numpy()
    if "in_trainset" in frame.columns:
        keep &= ~frame["in_trainset"].astype(str).str.lower().isin(["true", "1"]).to_numpy()
    if exclude_ids:
        keep &= ~frame["ID"].isin(exclude_ids).to_numpy()
    frame = frame[keep].reset_index(drop=True)
    labels = [parse_label(v, f"{csv_path} ID {i}") for i, v in zip(frame["ID"], frame["Label_idx"], strict=True)]
    return pd.DataFrame(
        {
            "ID": frame["ID"],
            "labels": labels,
            "split": frame["dir"] if "dir" in frame.columns else "",
            "ext": frame["file_ext"].replace("", "png") if "file_ext" in frame.columns else "png",
        }
    )


def cache_file(
    cache_dir: str | os.PathLike, split: str, image_id: str, cache_format: str = DEFAULT_CACHE_FORMAT
) -> Path:
    """``{cache_dir}/{split or 'root'}/{ID}.{png|npy}``."""
    return Path(cache_dir) / (split or "root") / f"{image_id}.{cache_format}"


def write_cached_image(path: Path, image: np.ndarray) -> None:
    """Store an (H, W, 4) uint8 image: a 4-channel PNG holds the planes as they are (no colour reordering)."""
    with atomic_path(path) as tmp:
        if path.suffix == ".npy":
            np.save(tmp, image)
        elif not cv2.imwrite(str(tmp), image):
            raise OSError(f"could not write cache file {path}")


def read_cached_image(path: Path) -> np.ndarray:
    """(H, W, 4) uint8 image written by :func:`write_cached_image`."""
    if path.suffix == ".npy":
        try:
            image = np.load(path)
        except (OSError, ValueError, EOFError):
            image = None
    else:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim != 3 or image.shape[2] != 4:
        raise ValueError(f"corrupt cache file {path}: delete it to rebuild")
    return image


def _cache_one(job: tuple[str, str, str, str, int, str]) -> str:
    data_dir, split, image_id, ext, size, target = job
    write_cached_image(Path(target), read_rgby(data_dir, image_id, split, size=size, ext=ext))
    return image_id


class HPADataset(Dataset):
    """One sample per row of ``frame`` (columns ID, data_dir, split, ext).

    Args:
        frame: image table.
        targets: (N, 19) float32 multi-hot labels.
        transforms: albumentations pipeline (image and optional mask).
        in_chans: 3 drops the yellow channel, 4 keeps RGBY.
        cache_dir: folder of resized images, or None to decode the originals each time.
        cache_size: side of cached images (or the resize of originals when there is no cache).
        cache_format: npy (read without decoding) or png (smaller).
        sub_targets: (N, 19k) float32 sub-category multi-hot or None.
        mask_reader: ``f(ID, (height, width)) -> (mask, lookup)``; when given, ``target`` is the (H, W, K) uint8
            mask transformed with the image, as (K, H, W), or, with a (V, K) ``lookup``, the (H, W) id mask
            transformed with the image (nearest neighbour) and then expanded: ``lookup[mask]``.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        targets: np.ndarray,
        transforms: Callable,
        in_chans: int = 4,
        cache_dir: str | os.PathLike | None = None,
        cache_size: int = 512,
        cache_format: str = DEFAULT_CACHE_FORMAT,
        sub_targets: np.ndarray | None = None,
        mask_reader: Callable[[str, tuple[int, int]], np.ndarray] | None = None,
    ):
        self.records = frame[["ID", "data_dir", "split", "ext"]].to_records(index=False)
        self.targets = targets
        self.transforms = transforms
        self.in_chans = in_chans
        self.cache_dir = cache_dir
        self.cache_size = cache_size
        self.cache_format = cache_format
        self.sub_targets = sub_targets
        self.mask_reader = mask_reader
        self._seeded_pid: int | None = None

    def __len__(self) -> int:
        return len(self.records)

    def _transform(self, **data: np.ndarray) -> dict[str, np.ndarray]:
        # albumentations draws from its own generator, deaf to global seeds: seed it once per process from
        # torch's initial seed, which follows --seed (seed_everything) and differs between DataLoader workers
        if self._seeded_pid != os.getpid():
            self.transforms.set_random_seed(torch.initial_seed() % 2**32)
            self._seeded_pid = os.getpid()
        return self.transforms(**data)

    def read_image(self, index: int) -> np.ndarray:
        """(cache_size, cache_size, 4) uint8."""
        image_id, data_dir, split, ext = self.records[index]
        if self.cache_dir is None:
            return read_rgby(data_dir, image_id, split, size=self.cache_size, ext=ext)
        return read_cached_image(cache_file(self.cache_dir, split, image_id, self.cache_format))

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.read_image(index)[..., : self.in_chans]
        image_id = str(self.records[index][0])
        sample: dict[str, Any] = {"id": image_id}
        if self.mask_reader is not None:
            mask, lookup = self.mask_reader(image_id, image.shape[:2])
            out = self._transform(image=image, mask=mask)
            target = out["mask"] if lookup is None else lookup[out["mask"]]
            sample["target"] = torch.from_numpy(np.ascontiguousarray(target.transpose(2, 0, 1)))
        else:
            out = self._transform(image=image)
            sample["target"] = torch.from_numpy(self.targets[index])
        sample["image"] = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1)))
        if self.sub_targets is not None:
            sample["sub_target"] = torch.from_numpy(self.sub_targets[index])
        return sample


class HPADataModule(pl.LightningDataModule):
    """Kaggle-layout HPA training data with folds, an optional extra-data csv and SC-CAM sub-labels.

    Everything that can be wrong with the inputs is checked in the constructor, before any cache
    building or training: the data folder and its train.csv, the extra csv, the sub-label table.

    Args:
        data_dir: folder with ``train.csv`` and ``train/{ID}_{red,green,blue,yellow}.png``.
        val_fold: validation fold (0..n_splits-1).
        n_splits: number of folds (seed :data:`src.data.folds.FOLD_SEED`, cached as
            ``{data_dir}/folds_k{n}_seed0.csv``).
        input_size: side of the image the network sees at validation and inference.
        crop_size: 0, or the side of random training crops of the input_size image.
        cache_size: side of the resized cache; 0 reads the originals every time.
        cache_dir: cache folder; default ``{data_dir}/cache_{cache_size}``.
        cache_format: npy (read without decoding, the default) or png (half the disk, decoded on every read).
        batch_size, num_workers: DataLoader settings.
        aug_mode: see :data:`src.training.augment.AUG_MODES`.
        in_chans: 3 or 4.
        use_ext_data, ext_data_csv, ext_data_dir, ext_data_mode: extra public HPA images (training only).
        sub_labels: ID -> sub-category ids (SC-CAM round >= 1) or None.
        num_sub_classes: length of the sub-category vector (19 * k).
        mask_reader: optional per-image target mask reader (segmentation stage).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        val_fold: int = 0,
        n_splits: int = N_FOLDS,
        input_size: int = 512,
        crop_size: int = 0,
        cache_size: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        cache_format: str = DEFAULT_CACHE_FORMAT,
        batch_size: int = 16,
        num_workers: int = 4,
        aug_mode: int = 1,
        in_chans: int = 4,
        use_ext_data: bool = False,
        ext_data_csv: str | os.PathLike | None = None,
        ext_data_dir: str | os.PathLike | None = None,
        ext_data_mode: int = 0,
        sub_labels: Mapping[str, list[int]] | None = None,
        num_sub_classes: int = 0,
        mask_reader: Callable[[str, tuple[int, int]], np.ndarray] | None = None,
    ):
        super().__init__()
        self.data_dir = Path(data_dir)
        if not (self.data_dir / "train.csv").is_file():
            raise FileNotFoundError(f"--data_dir {self.data_dir} has no train.csv (expected the Kaggle layout)")
        if not 0 <= val_fold < n_splits:
            raise ValueError(f"--val_fold {val_fold} outside 0..{n_splits - 1}")
        if cache_format not in CACHE_FORMATS:
            raise ValueError(f"cache_format must be one of {CACHE_FORMATS}, got {cache_format!r}")
        build_transforms(aug_mode, input_size, train=True, crop_size=crop_size)  # checks aug_mode and crop now
        self.val_fold, self.n_splits = val_fold, n_splits
        self.input_size, self.crop_size = input_size, crop_size
        self.cache_size = input_size if cache_size is None else cache_size
        self.cache_dir = None
        if self.cache_size > 0:
            self.cache_dir = Path(cache_dir) if cache_dir else self.data_dir / f"cache_{self.cache_size}"
        self.cache_format = cache_format
        self.batch_size, self.num_workers = batch_size, num_workers
        self.aug_mode, self.in_chans = aug_mode, in_chans
        self.num_sub_classes = num_sub_classes
        self.mask_reader = mask_reader
        self.frame = self._image_table(use_ext_data, ext_data_csv, ext_data_dir, ext_data_mode)
        self.sub_targets = None
        if sub_labels is not None:
            self.sub_targets = self._sub_targets(sub_labels)
        self.train_set: HPADataset | None = None
        self.val_set: HPADataset | None = None

    def _image_table(self, use_ext_data: bool, ext_csv, ext_dir, ext_mode: int) -> pd.DataFrame:
        labels = read_labels(self.data_dir / "train.csv")
        frame = load_or_make_folds(labels[["ID", "labels"]], self.data_dir, self.n_splits)
        frame = frame.assign(data_dir=str(self.data_dir), split="train", ext="png")
        if use_ext_data:
            if ext_csv is None:
                raise ValueError("--use_ext_data needs --ext_data_csv (the public HPA extra data csv)")
            ext = read_ext_data(ext_csv, ext_mode, exclude_ids=set(frame["ID"]))
            ext_root = Path(ext_dir) if ext_dir else Path(ext_csv).parent
            ext = ext.assign(data_dir=str(ext_root), fold=-1)  # extra images only ever train
            frame = pd.concat([frame, ext], ignore_index=True)
            logger.info("using %d extra images from %s", len(ext), ext_csv)
        return frame.reset_index(drop=True)

    def _sub_targets(self, sub_labels: Mapping[str, list[int]]) -> np.ndarray:
        missing = [i for i in self.frame["ID"] if i not in sub_labels]
        if missing:
            raise ValueError(
                f"the sub-label table lacks {len(missing)} of {len(self.frame)} images, e.g. {', '.join(missing[:3])}; "
                "re-run extract_feature.py and create_pseudo_label.py on this data"
            )
        sub_targets = np.zeros((len(self.frame), self.num_sub_classes), dtype=np.float32)
        for row, image_id in enumerate(self.frame["ID"]):
            sub_targets[row, sub_labels[image_id]] = 1.0
        return sub_targets

    @property
    def targets(self) -> np.ndarray:
        """(N, 19) multi-hot labels of every image of the table."""
        return labels_to_multihot(self.frame["labels"].tolist())

    def prepare_data(self) -> None:
        """Build the resized cache of every image that lacks one (atomic writes; safe to interrupt)."""
        if self.cache_dir is None:
            return
        jobs = []
        for image_id, data_dir, split, ext in self.frame[["ID", "data_dir", "split", "ext"]].itertuples(index=False):
            target = cache_file(self.cache_dir, split, image_id, self.cache_format)
            if not target.is_file():
                jobs.append((data_dir, split, image_id, ext, self.cache_size, str(target)))
        if not jobs:
            return
        logger.info("caching %d images at %d px under %s", len(jobs), self.cache_size, self.cache_dir)
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OSError(
                f"cannot create the image cache {self.cache_dir} ({error}); choose a writable --cache_dir"
            ) from None
        progress = tqdm(total=len(jobs), desc=f"cache {self.cache_size}px", unit="img")
        if self.num_workers > 0 and len(jobs) > 1:
            # fork (as DataLoader workers do on Linux): spawn would re-import torch and Lightning in every process
            method = "fork" if "fork" in get_all_start_methods() else "spawn"
            with get_context(method).Pool(min(self.num_workers, len(jobs))) as pool:
                for _ in pool.imap_unordered(_cache_one, jobs, chunksize=4):
                    progress.update()
        else:
            for job in jobs:
                _cache_one(job)
                progress.update()
        progress.close()

    def make_dataset(self, rows: np.ndarray, train: bool) -> HPADataset:
        """Dataset of the table rows ``rows`` (bool mask or indices) with training or validation transforms."""
        frame = self.frame.iloc[np.flatnonzero(rows) if rows.dtype == bool else rows]
        index = frame.index.to_numpy()
        return HPADataset(
            frame,
            self.targets[index],
            build_transforms(self.aug_mode, self.input_size, train, self.crop_size),
            in_chans=self.in_chans,
            cache_dir=self.cache_dir,
            cache_size=self.cache_size if self.cache_dir is not None else max(self.cache_size, self.input_size),
            cache_format=self.cache_format,
            sub_targets=None if self.sub_targets is None else self.sub_targets[index],
            mask_reader=self.mask_reader,
        )

    def setup(self, stage: str | None = None) -> None:
        is_val = (self.frame["fold"] == self.val_fold).to_numpy()
        self.train_set = self.make_dataset(~is_val, train=True)
        self.val_set = self.make_dataset(is_val, train=False)

    def _loader(self, dataset: HPADataset, shuffle: bool, drop_last: bool = False) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            drop_last=drop_last,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        drop_last = len(self.train_set) > self.batch_size  # BatchNorm needs more than one sample
        return self._loader(self.train_set, shuffle=True, drop_last=drop_last)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def all_images_dataloader(self) -> DataLoader:
        """Every image of the table (all folds and extra data) in table order, validation transforms."""
        dataset = self.make_dataset(np.arange(len(self.frame)), train=False)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
        )
