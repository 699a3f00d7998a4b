"""The CAM inference stage: per-cell scores for every image of a split, as a Kaggle submission.

Images are decoded (and their masks computed when not cached) in DataLoader workers, go
through the checkpoints in batches, and are scored per cell and RLE-encoded in a process
pool. Finished rows are appended to ``{out}.partial.jsonl`` as they come, so a killed or
failed run resumes where it stopped; the CSV is written atomically once every image is done.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from src.cam.cell_source import load_cell_sources, predict_cells
from src.cam.classifier_source import CAM_METHODS
from src.cam.map_source import CheckpointSpec
from src.cam.sources import join_sources, load_sources
from src.cell_masks.cache import MaskCache, shard_ids
from src.crops.store import CropSpec, cut_image
from src.data.atomic import write_text_atomic
from src.data.classes import CHANNELS
from src.data.folds import load_or_make_folds
from src.data.io import channel_path, labels_to_multihot, read_labels, read_rgby, resize_image
from src.scoring.cell_scores import CELL_LOGIT, CellScoreConfig
from src.scoring.fusion import FusionConfig
from src.scoring.score_job import init_scorer, score_image
from src.submission.codec import SUBMISSION_COLUMNS, read_submission, write_submission

logger = logging.getLogger(__name__)

STAGES = ("test", "gen_pseudo")
N_FOLDS = 5  # the training folds (run_classification.py --n_splits default)


@dataclass
class InferConfig:
    """The resolved YAML of ``run_cam_infer.py`` (see ``src/config/*.yaml`` for each key)."""

    data_dir: str
    split: str
    stage: str
    ckpt_paths: list
    fold: int = -1
    conf_how: str = "cam_rate_mean"
    cam_method: str = "cam"
    gradcam_layer: str = ""
    mask_backend: str = "classical"
    mask_dir: str = ""
    mask_params: dict = field(default_factory=dict)
    image_ext: str = "png"
    tta_flips: bool = True
    tta_scales: list = field(default_factory=lambda: [1.0])
    cam_size: int = 128
    score_size: int = 512
    min_image_prob: float = 0.01
    cam_rate_thresh: float = 0.1
    cam_high_value: float = 0.75
    cam_high_rate_thresh: float = 0.04
    min_green_mean: float = 1.0
    min_cell_fraction: float = 0.0
    keep_inactive: bool = False
    cam_weight: float = 1.0
    logit_slope: float = 1.0
    logit_margin: float = 4.0
    negative_how: str = "inactive"
    dark_percentile: float = 99.9
    dark_reference_min: float = 20.0
    negative_from_prob: bool = False
    batch_size: int = 8
    num_workers: int = 2
    device: str = "auto"
    num_shards: int = 1
    shard_index: int = 0
    fusion: dict = field(default_factory=dict)  # cell-classifier fusion (src/scoring/fusion.py), with [cell, w, path]

    @classmethod
    def from_dict(cls, config: dict[str, Any], source: str) -> InferConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; known keys: {sorted(known)}")
        missing = [k for k in ("data_dir", "split", "stage", "ckpt_paths") if k not in config]
        if missing:
            raise ValueError(f"{source}: missing key(s) {missing}")
        settings = cls(**config)
        settings.check(source)
        return settings

    def check(self, source: str) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"{source}: stage must be one of {STAGES}, got {self.stage!r}")
        if self.cam_method not in CAM_METHODS:
            raise ValueError(f"{source}: cam_method must be one of {CAM_METHODS}, got {self.cam_method!r}")
        self.score_config()  # validates conf_how and the scoring thresholds
        FusionConfig.from_dict(self.fusion, f"{source}: fusion")
        if self.conf_how == CELL_LOGIT and self.cam_method != "cam":
            raise ValueError(
                f"{source}: conf_how cell_logit reads the signed logit maps of cam_method 'cam', not gradcam"
            )
        if not self.mask_dir:
            raise ValueError(f"{source}: mask_dir is empty; name the folder of the mask cache")
        if not self.ckpt_paths:
            raise ValueError(f"{source}: ckpt_paths is empty")
        if not all(s > 0 for s in self.tta_scales):
            raise ValueError(f"{source}: tta_scales must be positive, got {self.tta_scales}")
        if self.fold >= 0 and self.split != "train":
            raise ValueError(f"{source}: fold {self.fold} selects training images; it needs split 'train'")
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"{source}: need 0 <= shard_index < num_shards, got {self.shard_index}, {self.num_shards}")

    def score_config(self) -> CellScoreConfig:
        return CellScoreConfig(
            conf_how=self.conf_how,
            min_image_prob=self.min_image_prob,
            cam_rate_thresh=self.cam_rate_thresh,
            cam_high_value=self.cam_high_value,
            cam_high_rate_thresh=self.cam_high_rate_thresh,
            min_green_mean=self.min_green_mean,
            min_cell_fraction=self.min_cell_fraction,
            keep_inactive=self.keep_inactive,
            cam_weight=self.cam_weight,
            logit_slope=self.logit_slope,
            logit_margin=self.logit_margin,
            negative_how=self.negative_how,
            dark_percentile=self.dark_percentile,
            dark_reference_min=self.dark_reference_min,
            negative_from_prob=self.negative_from_prob,
        )

    @property
    def map_kind(self) -> str:
        """The class maps the sources give: signed logits for ``cell_logit``, normalised CAMs otherwise."""
        return "logit" if self.conf_how == CELL_LOGIT else "cam"

    def fingerprint(self) -> str:
        """What decides the output rows (not workers, batch size or sharding)."""
        skip = {"num_workers", "batch_size", "device", "num_shards", "shard_index"}
        return json.dumps({k: v for k, v in vars(self).items() if k not in skip}, sort_keys=True, default=str)


def split_image_ids(data_dir: str | os.PathLike, split: str, fold: int = -1) -> list[str]:
    """IDs of a split: ``sample_submission.csv`` for 'test', ``train.csv`` for 'train'; with ``fold`` >= 0
    only that fold of the training folds (5 folds, seed 0: the validation fold ``--val_fold`` of training)."""
    data_dir = Path(data_dir)
    if split == "test":
        csv = data_dir / "sample_submission.csv"
        if not csv.is_file():
            raise FileNotFoundError(f"split 'test' needs {csv}")
        return pd.read_csv(csv, dtype={"ID": str})["ID"].tolist()
    if split == "train":
        frame = read_labels(data_dir / "train.csv")
        if fold < 0:
            return frame["ID"].tolist()
        frame = load_or_make_folds(frame, data_dir, N_FOLDS)
        if fold >= N_FOLDS:
            raise ValueError(f"fold must lie in 0..{N_FOLDS - 1}, got {fold}")
        return frame.loc[frame["fold"] == fold, "ID"].tolist()
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def check_images_exist(data_dir: str | os.PathLike, split: str, ids: list[str], ext: str) -> None:
    """Raise FileNotFoundError listing the first missing channel files, before any heavy work."""
    paths = (channel_path(data_dir, image_id, color, split, ext) for image_id in ids for color in CHANNELS)
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} channel file(s) of the {split} split are missing, e.g. {missing[:3]}")


def score_shape(height: int, width: int, score_size: int) -> tuple[int, int]:
    """(h, w) at which cells are scored: the longer side at most ``score_size``."""
    factor = min(1.0, score_size / max(height, width))
    return max(1, round(height * factor)), max(1, round(width * factor))


class InferImages(Dataset):
    """Decodes one image, makes sure its masks are cached and returns the model inputs.

    Each item: ``id``, ``height``, ``width``, ``inputs`` {input_size: uint8 (4, S, S)},
    ``green`` (h, w) uint8 at score size, or ``error`` (a message) when the image failed.
    """

    def __init__(
        self, ids: list[str], settings: InferConfig, input_sizes: list[int], crop_spec: CropSpec | None = None
    ):
        self.ids = ids
        self.settings = settings
        self.input_sizes = sorted(set(input_sizes))
        self.crop_spec = crop_spec  # cell sources: also cut every cell (``crops`` (K, S, S, C), ``cell_ids`` (K,))
        self._mask_cache: MaskCache | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.ids[index]
        s = self.settings
        try:
            rgby = read_rgby(s.data_dir, image_id, s.split, ext=s.image_ext)
            if self._mask_cache is None:
                self._mask_cache = MaskCache(s.mask_dir, s.mask_backend, s.mask_params)
            _, cell_mask = self._mask_cache.get(image_id, lambda _id: rgby)
            height, width = rgby.shape[:2]
            h, w = score_shape(height, width, s.score_size)
            cells = {}
            if self.crop_spec is not None:
                cut, _ = cut_image(rgby, cell_mask, self.crop_spec)
                cells = {"crops": cut.crops, "cell_ids": cut.cell_ids}
            return {
                **cells,
                "id": image_id,
                "height": height,
                "width": width,
                "inputs": {
                    size: torch.from_numpy(resize_image(rgby, size)).permute(2, 0, 1) for size in self.input_sizes
                },
                "green": resize_image(rgby[..., 1:2], (w, h))[..., 0],
            }
        except Exception as error:  # reported at the end with the ID; other images go on
            return {"id": image_id, "error": f"{type(error).__name__}: {error}"}


def _collate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


class PartialRows:
    """Append-only JSON-lines record of finished rows, tied to the config fingerprint."""

    def __init__(self, path: Path, fingerprint: str):
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        if path.is_file():
            lines = path.read_text().splitlines()
            header = json.loads(lines[0]) if lines else {}
            if header.get("fingerprint") != fingerprint:
                raise ValueError(
                    f"{path} holds rows of a run with other settings; delete it to start over, or restore those settings"
                )
            for line in lines[1:]:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # the last line of a killed run may be cut short
                    continue
                self.rows[row["ID"]] = row
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps({"fingerprint": fingerprint}) + "\n")
        self._handle = open(path, "a")

    def add(self, row: dict[str, Any]) -> None:
        self.rows[row["ID"]] = row
        self._handle.write(json.dumps(row) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def output_path(sub_path: str | os.PathLike, num_shards: int, shard_index: int) -> Path:
    """The CSV a run writes: ``sub_path`` or, when sharded, ``{stem}.shard{i}-of-{n}.csv`` beside it."""
    sub_path = Path(sub_path)
    if num_shards == 1:
        return sub_path
    return sub_path.with_name(f"{sub_path.stem}.shard{shard_index}-of-{num_shards}{sub_path.suffix}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class InferReport:
    """Outcome of one run."""

    out_path: Path
    done: int
    resumed: int
    failed: dict[str, str]


def run_inference(settings: InferConfig, sub_path: str | os.PathLike) -> InferReport:
    """Score every image of the configured split (or shard) and write the submission CSV.

    Checks checkpoints, labels and image files before any heavy work. Images that fail are
    listed in the report; the CSV is written only when every image succeeded, the finished
    rows stay in ``{out}.partial.jsonl`` for the next run.
    """
    out_path = output_path(sub_path, settings.num_shards, settings.shard_index)
    device = resolve_device(settings.device)
    specs = [CheckpointSpec.parse(entry, i) for i, entry in enumerate(settings.ckpt_paths)]
    all_ids = split_image_ids(settings.data_dir, settings.split, settings.fold)
    truth = None
    if settings.stage == "gen_pseudo":
        frame = read_labels(Path(settings.data_dir) / "train.csv")
        truth = dict(zip(frame["ID"], labels_to_multihot(frame["labels"].tolist())))
        unlabelled = [i for i in all_ids if i not in truth]
        if unlabelled:
            raise ValueError(f"stage gen_pseudo needs labels in train.csv; missing for {unlabelled[:3]}")
    ids = shard_ids(all_ids, settings.num_shards, settings.shard_index)
    check_images_exist(settings.data_dir, settings.split, ids, settings.image_ext)
    sources = load_sources(specs, device, settings.cam_method, settings.gradcam_layer)
    cell_sources = load_cell_sources(specs, device)
    fusion = FusionConfig.from_dict(settings.fusion, "fusion")
    if settings.stage == "test" and not any(s.how_join in ("both", "pred") for s in specs):
        raise ValueError("stage 'test' needs image probabilities: one ckpt_paths entry must join 'both' or 'pred'")
    MaskCache(settings.mask_dir, settings.mask_backend, settings.mask_params)  # manifest check before the run

    # the resolved settings beside the output, so any submission can be reproduced
    write_text_atomic(
        out_path.with_name(out_path.name + ".config.yaml"), yaml.safe_dump(vars(settings), sort_keys=False)
    )
    partial = PartialRows(out_path.with_name(out_path.name + ".partial.jsonl"), settings.fingerprint())
    resumed = sum(1 for i in ids if i in partial.rows)
    todo = [i for i in ids if i not in partial.rows]
    failed: dict[str, str] = {}
    cam_size = (settings.cam_size, settings.cam_size)
    crop_spec = cell_sources[0].crop_spec if cell_sources else None
    dataset = InferImages(todo, settings, [s.input_size for s in sources], crop_spec)
    loader = DataLoader(
        dataset,
        batch_size=settings.batch_size,
        num_workers=settings.num_workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
    )
    score_config = settings.score_config()
    pending: dict[Future, str] = {}
    workers = max(1, settings.num_workers)
    progress = tqdm(total=len(todo), desc=f"CAM inference ({settings.split})", unit="img")

    def collect(block: bool) -> None:
        """Record finished rows (all pending ones when ``block``)."""
        for future in list(pending):
            if not block and not future.done():
                continue
            image_id = pending.pop(future)
            try:
                partial.add(future.result())
            except Exception as error:
                failed[image_id] = f"{type(error).__name__}: {error}"
            progress.update(1)

    try:
        # spawn: forked children of a process that ran torch's OpenMP threads can hang
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=mp.get_context("spawn"), initializer=init_scorer
        ) as pool:
            for items in loader:
                good = []
                for item in items:
                    if "error" in item:
                        failed[item["id"]] = item["error"]
                        progress.update(1)
                    else:
                        good.append(item)
                if not good:
                    continue
                outputs = []
                for source in sources:
                    images = torch.stack([item["inputs"][source.input_size] for item in good])
                    probs, cams = source.predict(
                        images, cam_size, settings.tta_flips, settings.tta_scales, settings.map_kind
                    )
                    outputs.append((source.spec, probs, cams))
                probs, cams = join_sources(outputs)
                for row, item in enumerate(good):
                    image_probs = truth[item["id"]] if truth is not None else probs[row].numpy()
                    job = {
                        "id": item["id"],
                        "height": item["height"],
                        "width": item["width"],
                        "green": item["green"],
                        "probs": np.asarray(image_probs, dtype=np.float32),
                        "cams": cams[row].numpy().astype(np.float16),
                        "mask_dir": settings.mask_dir,
                        "conf_how": settings.conf_how,
                        "score_config": score_config,
                    }
                    if cell_sources:  # fused in the scoring worker (src/scoring/fusion.py)
                        job["cell_ids"] = item["cell_ids"]
                        job["cell_probs"] = predict_cells(cell_sources, item["crops"], settings.tta_flips)
                        job["fusion"] = fusion
                    pending[pool.submit(score_image, job)] = item["id"]
                while len(pending) > 4 * workers:  # bound the images held in memory
                    wait(pending, return_when=FIRST_COMPLETED)
                    collect(block=False)
            while pending:
                collect(block=True)
    finally:
        progress.close()
        partial.close()

    if not failed:
        write_submission(out_path, [partial.rows[i] for i in ids])
        partial.path.unlink()  # complete: a later run with new checkpoints at the same paths starts afresh
    return InferReport(out_path=out_path, done=len(todo) - len(failed), resumed=resumed, failed=failed)


def merge_shards(sub_path: str | os.PathLike, num_shards: int) -> pd.DataFrame:
    """Join ``{stem}.shard{i}-of-{n}.csv`` into ``sub_path``; every shard must exist, IDs unique."""
    paths = [output_path(sub_path, num_shards, i) for i in range(num_shards)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"cannot merge: missing shard file(s) {missing}")
    merged = pd.concat([read_submission(p) for p in paths], ignore_index=True)
    duplicated = merged["ID"][merged["ID"].duplicated()].unique()
    if len(duplicated):
        raise ValueError(f"shards overlap: ID(s) {list(duplicated[:5])} appear in more than one shard")
    merged = merged.sort_values("ID", kind="stable").reset_index(drop=True)
    write_submission(sub_path, merged[SUBMISSION_COLUMNS].to_dict("records"))
    return merged
