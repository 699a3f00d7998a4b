"""The CAM inference stage: per-cell scores for every image of a split, as a Kaggle submission.

Images are decoded (and their masks read, or computed when not cached) in DataLoader workers, go through the
checkpoints in batches, and are scored per cell and RLE-encoded in a process pool. Finished rows are appended to
``{out}.partial.jsonl`` as they come (:class:`src.submission.shards.PartialRows`), so a killed or failed run
resumes where it stopped; the CSV is written atomically once every image is done.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from src.cam.cell_source import CellSource, crop_specs_to_cut, load_cell_sources, predict_cells
from src.cam.infer_config import InferConfig
from src.cam.infer_images import InferImages, collate_items
from src.cam.map_source import CheckpointSpec, MapSource
from src.cam.sources import load_sources, predict_joined
from src.cell_masks.cache import MaskCache, shard_ids
from src.config.device import resolve_device
from src.data.atomic import write_text_atomic
from src.data.folds import N_FOLDS
from src.data.io import labels_to_multihot, read_labels
from src.data.splits import check_images_exist, split_image_ids
from src.scoring.fusion import FusionConfig
from src.scoring.score_job import init_scorer, score_image
from src.submission.codec import write_submission
from src.submission.shards import PartialRows, output_path
from src.training.checkpoints import read_checkpoint_hparams

logger = logging.getLogger(__name__)


def fold_count(specs: Sequence[CheckpointSpec]) -> int:
    """The number of training folds of the checkpoints (their ``n_splits``); ValueError when they disagree."""
    counts = {int(read_checkpoint_hparams(spec.path).get("n_splits", N_FOLDS)) for spec in specs}
    if len(counts) > 1:
        raise ValueError(f"the checkpoints were trained with different fold counts {sorted(counts)}; fold is ambiguous")
    return counts.pop() if counts else N_FOLDS


@dataclass
class InferReport:
    """Outcome of one run."""

    out_path: Path
    done: int
    resumed: int
    failed: dict[str, str]


@dataclass
class InferPlan:
    """What a run will do, checked before any heavy work."""

    out_path: Path
    device: torch.device
    specs: list[CheckpointSpec]
    ids: list[str]
    truth: dict[str, np.ndarray] | None  # gen_pseudo: ID -> true multi-hot labels, used as image probabilities


def plan_inference(settings: InferConfig, sub_path: str | os.PathLike) -> InferPlan:
    """Check checkpoints, labels, image files and the mask cache's manifest; pick this shard's images."""
    specs = [CheckpointSpec.parse(entry, i) for i, entry in enumerate(settings.ckpt_paths)]
    n_splits = fold_count(specs) if settings.fold >= 0 else N_FOLDS
    all_ids = split_image_ids(settings.data_dir, settings.split, settings.fold, n_splits)
    truth = None
    if settings.stage == "gen_pseudo":
        frame = read_labels(Path(settings.data_dir) / "train.csv")
        truth = dict(zip(frame["ID"], labels_to_multihot(frame["labels"].tolist())))
        unlabelled = [i for i in all_ids if i not in truth]
        if unlabelled:
            raise ValueError(f"stage gen_pseudo needs labels in train.csv; missing for {unlabelled[:3]}")
    ids = shard_ids(all_ids, settings.num_shards, settings.shard_index)
    check_images_exist(settings.data_dir, settings.split, ids, settings.image_ext)
    if settings.stage == "test" and not any(s.how_join in ("both", "pred") for s in specs):
        raise ValueError("stage 'test' needs image probabilities: one ckpt_paths entry must join 'both' or 'pred'")
    MaskCache(settings.mask_dir, settings.mask_backend, settings.mask_params)  # manifest check before the run
    out_path = output_path(sub_path, settings.num_shards, settings.shard_index)
    return InferPlan(out_path, resolve_device(settings.device), specs, ids, truth)


def predict_batch(
    sources: Sequence[MapSource], items: list[dict[str, Any]], settings: InferConfig
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Joined image probabilities (N, 19) or None, and maps (N, 19, cam_size, cam_size) of a batch of items."""
    return predict_joined(
        sources, lambda size: torch.stack([item["inputs"][size] for item in items]),
        (settings.cam_size, settings.cam_size), settings.tta_flips, settings.tta_scales, settings.map_kind,
    )  # fmt: skip


def scoring_jobs(
    items: list[dict[str, Any]],
    probs: torch.Tensor | None,
    cams: torch.Tensor,
    plan: InferPlan,
    settings: InferConfig,
    cell_sources: Sequence[CellSource] = (),
) -> list[dict[str, Any]]:
    """One :func:`src.scoring.score_job.score_image` job per item; with cell sources, each job also carries its
    cells' probabilities and the fusion settings."""
    fusion = FusionConfig.from_dict(settings.fusion, "fusion") if cell_sources else None
    jobs = []
    for row, item in enumerate(items):
        image_probs = plan.truth[item["id"]] if plan.truth is not None else probs[row].numpy()
        jobs.append(
            {
                "id": item["id"],
                "height": item["height"],
                "width": item["width"],
                "green": item["green"],
                "nuclei_mask": item["nuclei_mask"],
                "cell_mask": item["cell_mask"],
                "probs": np.asarray(image_probs, dtype=np.float32),
                "cams": cams[row].numpy().astype(np.float16),
                "score_config": settings.scoring,
            }
        )
        if cell_sources:  # fused in the scoring worker (src/scoring/fusion.py)
            jobs[-1].update(
                cell_ids=item["cell_ids"],
                cell_probs=predict_cells(cell_sources, item["crops"], settings.tta_flips),
                fusion=fusion,
            )
    return jobs


def run_inference(settings: InferConfig, sub_path: str | os.PathLike) -> InferReport:
    """Score every image of the configured split (or shard) and write the submission CSV.

    Checks checkpoints, labels and image files before any heavy work. Images that fail are
    listed in the report; the CSV is written only when every image succeeded, the finished
    rows stay in ``{out}.partial.jsonl`` for the next run.
    """
    plan = plan_inference(settings, sub_path)
    sources = load_sources(
        plan.specs, plan.device, settings.cam_method, settings.gradcam_layer, settings.gradcam_min_prob
    )
    cell_sources = load_cell_sources(plan.specs, plan.device)
    # the resolved settings beside the output, so any submission can be reproduced
    out_path = plan.out_path
    write_text_atomic(
        out_path.with_name(out_path.name + ".config.yaml"), yaml.safe_dump(settings.as_dict(), sort_keys=False)
    )
    partial = PartialRows(out_path.with_name(out_path.name + ".partial.jsonl"), settings.fingerprint())
    resumed = sum(1 for i in plan.ids if i in partial.rows)
    todo = [i for i in plan.ids if i not in partial.rows]
    failed: dict[str, str] = {}
    try:
        _score_images(settings, plan, sources, cell_sources, todo, partial, failed)
    finally:
        partial.close()
    if not failed:
        write_submission(out_path, [partial.rows[i] for i in plan.ids])
        partial.path.unlink()  # complete: a later run with new checkpoints at the same paths starts afresh
    return InferReport(out_path=out_path, done=len(todo) - len(failed), resumed=resumed, failed=failed)


def _score_images(
    settings: InferConfig,
    plan: InferPlan,
    sources: Sequence[MapSource],
    cell_sources: Sequence[CellSource],
    todo: list[str],
    partial: PartialRows,
    failed: dict[str, str],
) -> None:
    """Run the images of ``todo`` through the sources and the scoring pool; rows go to ``partial``, errors to
    ``failed``."""
    loader = DataLoader(
        InferImages(todo, settings, [s.input_size for s in sources], crop_specs_to_cut(cell_sources)),
        batch_size=settings.batch_size,
        num_workers=settings.num_workers,
        collate_fn=collate_items,
        pin_memory=plan.device.type == "cuda",
    )
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
                good = [item for item in items if "error" not in item]
                for item in items:
                    if "error" in item:
                        failed[item["id"]] = item["error"]
                        progress.update(1)
                if not good:
                    continue
                probs, cams = predict_batch(sources, good, settings)
                for job in scoring_jobs(good, probs, cams, plan, settings, cell_sources):
                    pending[pool.submit(score_image, job)] = job["id"]
                while len(pending) > 4 * workers:  # bound the images held in memory
                    wait(pending, return_when=FIRST_COMPLETED)
                    collect(block=False)
            while pending:
                collect(block=True)
    finally:
        progress.close()
