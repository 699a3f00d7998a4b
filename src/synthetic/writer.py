"""Write a synthetic benchmark in the Kaggle layout, with per-cell truth.

Layout under ``out_dir``::

    train/{ID}_{red,green,blue,yellow}.png   8-bit channels of the train images
    test/{ID}_{red,green,blue,yellow}.png    8-bit channels of the test images
    train.csv                                ID,Label (union of the cells' labels)
    sample_submission.csv                    ID,ImageWidth,ImageHeight,PredictionString (empty)
    truth/cell_masks/{ID}.png                uint16 cell instance ids, 0 = background
    truth/nuclei_masks/{ID}.png              uint16, the nucleus of cell k has id k
    truth/cell_labels.csv                    ID,cell_id,Label for both splits
    metadata.csv                             ID,split,cell_line,batch (only with cell lines or batches)
    synthetic_config.json                    the parameters, written last

IDs are ``synth-train-00012`` / ``synth-test-00003``. Each image is seeded from
(seed, split, index), so the output does not depend on the number of workers. Every file
is written atomically. Re-running into a folder whose manifest has the same parameters
and whose files are all present does nothing; otherwise every file is regenerated and
overwritten, and synthetic images left from an earlier, larger run are removed.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from src.data.atomic import write_csv_atomic, write_png_atomic, write_text_atomic
from src.data.classes import CHANNELS
from src.data.splits import METADATA
from src.synthetic.config import SyntheticConfig
from src.synthetic.domains import (
    NEUTRAL_BATCH,
    NEUTRAL_LINE,
    NO_DOMAINS,
    DomainConfig,
    assign_domains,
    draw_batches,
    draw_cell_lines,
)
from src.synthetic.generator import generate_image
from src.synthetic.labels import format_label

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
MANIFEST = "synthetic_config.json"
GENERATOR_VERSION = 1
_SPLIT_CODES = {"train": 1, "test": 2}
_SYNTH_FILE = re.compile(r"^synth-(train|test)-\d+(_(red|green|blue|yellow))?\.png$")


def image_id(split: str, index: int, count: int) -> str:
    """Deterministic image ID, e.g. ``synth-train-00012`` (at least 5 digits)."""
    width = max(5, len(str(max(count - 1, 0))))
    return f"synth-{split}-{index:0{width}d}"


def image_seed(seed: int, split: str, index: int) -> int:
    """Seed of one image, derived from the dataset seed, its split and its index."""
    state = np.random.SeedSequence([seed, _SPLIT_CODES[split], index]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


def _manifest(
    num_train: int, num_test: int, size: int, seed: int, config: SyntheticConfig, domains: DomainConfig
) -> dict[str, Any]:
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "num_train": num_train,
        "num_test": num_test,
        "size": size,
        "seed": seed,
        "config": config.to_dict(),
    }
    if domains.enabled:  # benchmarks made without domains keep the manifest they always had
        manifest["domains"] = domains.to_dict()
    return manifest


def _expected_files(out_dir: Path, ids: dict[str, list[str]]) -> list[Path]:
    files = [out_dir / "train.csv", out_dir / "sample_submission.csv", out_dir / "truth" / "cell_labels.csv"]
    for split, split_ids in ids.items():
        for name in split_ids:
            files += [out_dir / split / f"{name}_{channel}.png" for channel in CHANNELS]
            files += [
                out_dir / "truth" / "cell_masks" / f"{name}.png",
                out_dir / "truth" / "nuclei_masks" / f"{name}.png",
            ]
    return files


def _write_image(task: tuple) -> tuple[str, str, list[tuple[int, str]]]:
    """Generate and write one image (task: out_dir, split, ID, seed, size, config, cell line, batch); returns
    (split, ID, [(cell_id, Label), ...])."""
    out_dir, split, name, rng_seed, size, config, cell_line, batch = task
    image = generate_image(rng_seed, size, config, cell_line=cell_line, batch=batch)
    for index, channel in enumerate(CHANNELS):
        write_png_atomic(out_dir / split / f"{name}_{channel}.png", np.ascontiguousarray(image.rgby[..., index]))
    write_png_atomic(out_dir / "truth" / "cell_masks" / f"{name}.png", image.cell_mask)
    write_png_atomic(out_dir / "truth" / "nuclei_masks" / f"{name}.png", image.nuclei_mask)
    rows = [(cell_id, format_label(labels)) for cell_id, labels in sorted(image.cell_labels.items())]
    return split, name, rows


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _remove_stale(out_dir: Path, ids: dict[str, list[str]]) -> None:
    """Delete synthetic image files of IDs not in this run (left by an earlier, larger run)."""
    keep = {name for split_ids in ids.values() for name in split_ids}
    stale = []
    for folder in (
        out_dir / "train",
        out_dir / "test",
        out_dir / "truth" / "cell_masks",
        out_dir / "truth" / "nuclei_masks",
    ):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            match = _SYNTH_FILE.match(path.name)
            if match and path.name.split("_")[0].removesuffix(".png") not in keep:
                stale.append(path)
    for path in stale:
        path.unlink()
    if stale:
        logger.info("removed %d stale synthetic files from an earlier run in %s", len(stale), out_dir)


def write_dataset(
    out_dir: str | os.PathLike,
    num_train: int,
    num_test: int,
    size: int,
    seed: int,
    config: SyntheticConfig,
    workers: int | None = None,
    domains: DomainConfig = NO_DOMAINS,
) -> None:
    """Generate a synthetic benchmark in the Kaggle layout with per-cell truth (see the module docstring).

    Args:
        out_dir: output folder (created if missing).
        num_train: number of train images (labels in train.csv).
        num_test: number of test images (listed in sample_submission.csv).
        size: image side in px.
        seed: dataset seed.
        config: generator parameters.
        workers: processes (default: all cores); the output is identical for any value.
        domains: cell lines and acquisition batches (none by default: the images are those made without them);
            with any, ``metadata.csv`` names each image's line and batch.
    """
    out_dir = Path(out_dir)
    if num_train < 0 or num_test < 0 or num_train + num_test == 0:
        raise ValueError(f"need num_train, num_test >= 0 and at least one image, got {num_train}, {num_test}")
    if size < 64:
        raise ValueError(f"size must be >= 64 px, got {size}")
    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    manifest_path = out_dir / MANIFEST
    if (out_dir / "train.csv").exists() and not manifest_path.exists():
        raise FileExistsError(
            f"{out_dir} holds a train.csv but no {MANIFEST}: not a synthetic benchmark, refusing to overwrite"
        )
    manifest = _manifest(num_train, num_test, size, seed, config, domains)
    counts = {"train": num_train, "test": num_test}
    ids = {split: [image_id(split, i, counts[split]) for i in range(counts[split])] for split in SPLITS}
    if manifest_path.exists():
        previous = json.loads(manifest_path.read_text())
        expected = _expected_files(out_dir, ids) + ([out_dir / METADATA] if domains.enabled else [])
        if previous == manifest and all(path.is_file() for path in expected):
            logger.info("%s is complete for these parameters; nothing to do", out_dir)
            return
        manifest_path.unlink()
    _remove_stale(out_dir, ids)

    metadata = assign_domains(ids, domains, seed)
    lines = {line.name: line for line in draw_cell_lines(domains.cell_lines, seed)} | {"default": NEUTRAL_LINE}
    batches = {batch.name: batch for batch in draw_batches(domains.batches, seed)} | {"default": NEUTRAL_BATCH}
    domain_of = {row.ID: (lines[row.cell_line], batches[row.batch]) for row in metadata.itertuples(index=False)}
    tasks = [
        (out_dir, split, name, image_seed(seed, split, index), size, config, *domain_of[name])
        for split in SPLITS
        for index, name in enumerate(ids[split])
    ]
    workers = min(workers, len(tasks))
    logger.info(
        "writing %d train + %d test images of %d px to %s with %d worker(s)",
        num_train,
        num_test,
        size,
        out_dir,
        workers,
    )
    _write_tables(out_dir, ids, _generate_images(tasks, workers), size)
    if domains.enabled:
        write_csv_atomic(out_dir / METADATA, metadata)
    elif (out_dir / METADATA).exists():
        (out_dir / METADATA).unlink()
    write_text_atomic(manifest_path, json.dumps(manifest, indent=2) + "\n")


def _generate_images(tasks: list[tuple], workers: int) -> list[tuple[str, str, list]]:
    """Run :func:`_write_image` over the tasks (in ``workers`` spawned processes) with a progress bar."""
    progress = tqdm(total=len(tasks), desc="synthetic images", unit="img", disable=None)
    results = []
    if workers == 1:
        for task in tasks:
            results.append(_write_image(task))
            progress.update()
    else:
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for result in pool.imap_unordered(_write_image, tasks, chunksize=4):
                results.append(result)
                progress.update()
    progress.close()
    return results


def _write_tables(out_dir: Path, ids: dict[str, list[str]], results: list[tuple[str, str, list]], size: int) -> None:
    """``truth/cell_labels.csv``, ``train.csv`` (each image's label = the union of its cells') and
    ``sample_submission.csv``, atomically."""
    by_id = {name: (split, rows) for split, name, rows in results}
    cell_rows = [(name, cell_id, label) for split in SPLITS for name in ids[split] for cell_id, label in by_id[name][1]]
    write_csv_atomic(out_dir / "truth" / "cell_labels.csv", pd.DataFrame(cell_rows, columns=["ID", "cell_id", "Label"]))
    train_labels = [
        (name, "|".join(sorted({c for _, label in by_id[name][1] for c in label.split("|")}, key=int)))
        for name in ids["train"]
    ]
    write_csv_atomic(out_dir / "train.csv", pd.DataFrame(train_labels, columns=["ID", "Label"]))
    submission = pd.DataFrame(
        {"ID": ids["test"], "ImageWidth": size, "ImageHeight": size, "PredictionString": [""] * len(ids["test"])}
    )
    write_csv_atomic(out_dir / "sample_submission.csv", submission)
