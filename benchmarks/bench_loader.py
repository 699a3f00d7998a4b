"""Images/s of the training data loader alone vs the training step, to check the loader is not the bottleneck.

python benchmarks/bench_loader.py --threads 2 --input_size 512 --cache_size 768 --timm_model_name resnet50

Without --data_dir it uses the real 2048x2048 Kaggle samples of ../shared/data/hpa_kaggle_samples
(symlinked under a temporary folder as --num_images distinct IDs, so PNG decoding is real). It times:
1. decoding the four original PNGs and resizing (what a loader without cache pays per image),
2. building the resized cache (one-time cost),
3. the DataLoader over the cache with --aug_mode augmentation (--num_workers processes),
4. forward + backward + SGD step of the classifier on one preloaded batch (--threads torch threads).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.data.io import labels_to_multihot, read_labels, read_rgby
from src.models.classifier import create_classifier
from src.models.losses import ClassificationLoss
from src.models.preprocess import normalize_images
from src.training.augment import build_transforms
from src.training.datamodule import HPADataModule, HPADataset

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "hpa_kaggle_samples"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=None, help="Kaggle layout; default: the real samples, symlinked")
    parser.add_argument("--num_images", type=int, default=24)
    parser.add_argument("--input_size", type=int, default=512)
    parser.add_argument("--cache_size", type=int, default=768)
    parser.add_argument("--cache_format", default="png", choices=("png", "npy"))
    parser.add_argument("--aug_mode", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timm_model_name", default="resnet50")
    parser.add_argument("--train_steps", type=int, default=3)
    return parser.parse_args()


def link_samples(root: Path, num_images: int) -> Path:
    """A Kaggle-layout folder whose ``num_images`` IDs are symlinks to the real samples, cycled."""
    labels = read_labels(SAMPLES / "train.csv")
    (root / "train").mkdir(parents=True)
    rows = []
    for index in range(num_images):
        source = labels.iloc[index % len(labels)]
        image_id = f"sample{index:04d}"
        for channel in ("red", "green", "blue", "yellow"):
            os.symlink(SAMPLES / f"{source['ID']}_{channel}.png", root / "train" / f"{image_id}_{channel}.png")
        rows.append((image_id, source["Label"]))
    pd.DataFrame(rows, columns=["ID", "Label"]).to_csv(root / "train.csv", index=False)
    return root


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_loader_"))
    try:
        measure(args, work)
    finally:
        shutil.rmtree(work)


def measure(args: argparse.Namespace, work: Path) -> None:
    """Time the four stages with a cache under ``work``; print a Markdown table."""
    if args.data_dir is None:
        if not SAMPLES.is_dir():
            raise SystemExit(f"no --data_dir and no real samples at {SAMPLES}")
        data_dir = link_samples(work / "data", args.num_images)
    else:
        data_dir = Path(args.data_dir)
    datamodule = HPADataModule(
        data_dir, n_splits=min(5, args.num_images), input_size=args.input_size, cache_size=args.cache_size,
        cache_dir=work / "cache", cache_format=args.cache_format, batch_size=args.batch_size,
        num_workers=args.num_workers, aug_mode=args.aug_mode,
    )  # fmt: skip
    frame = datamodule.frame.iloc[: args.num_images]
    side = read_rgby(data_dir, frame["ID"].iloc[0]).shape[0]

    start = time.perf_counter()
    for image_id in frame["ID"].iloc[:4]:
        read_rgby(data_dir, image_id, size=args.cache_size)
    decode_rate = 4 / (time.perf_counter() - start)

    start = time.perf_counter()
    datamodule.prepare_data()
    cache_rate = len(datamodule.frame) / (time.perf_counter() - start)

    dataset = HPADataset(
        frame, labels_to_multihot(frame["labels"].tolist()), build_transforms(args.aug_mode, args.input_size, True),
        cache_dir=work / "cache", cache_size=args.cache_size, cache_format=args.cache_format,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.num_workers,
        persistent_workers=args.num_workers > 0,
    )
    for _ in loader:  # warm-up epoch: starts workers, fills the page cache
        pass
    start, seen = time.perf_counter(), 0
    for _ in range(2):
        for batch in loader:
            seen += len(batch["image"])
    loader_rate = seen / (time.perf_counter() - start)

    network = create_classifier(args.timm_model_name, in_chans=4)
    criterion = ClassificationLoss("focal")
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9, weight_decay=4e-5)
    batch = next(iter(loader))
    images = normalize_images(batch["image"])
    network.train()
    timings = []
    for _ in range(args.train_steps + 1):
        start = time.perf_counter()
        loss = criterion(network(images), batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        timings.append(time.perf_counter() - start)
    train_rate = len(images) / float(np.median(timings[1:]))

    print(
        f"data: {len(datamodule.frame)} images of {side} px from {data_dir}; torch threads {args.threads}, loader workers {args.num_workers}"
    )
    print("| stage | images/s |\n|---|---|")
    print(f"| decode 4 PNGs + resize to {args.cache_size} (1 process, no cache) | {decode_rate:.1f} |")
    print(f"| build cache ({args.num_workers} processes, one-time) | {cache_rate:.1f} |")
    print(
        f"| loader from {args.cache_size} px {args.cache_format} cache, aug_mode {args.aug_mode}, {args.input_size} px out | {loader_rate:.1f} |"
    )
    print(f"| {args.timm_model_name} train step at {args.input_size} px, batch {args.batch_size} | {train_rate:.1f} |")
    print(f"loader / train step: {loader_rate / train_rate:.1f}x")


if __name__ == "__main__":
    main(parse_args())
