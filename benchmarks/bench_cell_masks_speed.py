"""Speed of the classical backend on real 2048x2048 HPA images, decode included.

    OMP_NUM_THREADS=1 python benchmarks/bench_cell_masks_speed.py --repeats 4

Prints seconds per image on one core (OpenCV and BLAS limited to one thread) for decode,
segmentation and cache write, then the throughput of 1 and 2 worker processes over the
same tasks. Other processes on the machine distort the figures: run it when it is quiet.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.cell_masks.cache import write_masks  # noqa: E402
from src.cell_masks.classical import segment_classical  # noqa: E402
from src.data.io import read_labels, read_rgby  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hpa_dir", type=Path, default=Path("../shared/data/hpa_kaggle_samples"))
    parser.add_argument("--repeats", type=int, default=4, help="passes over the 3 images")
    parser.add_argument("--max_workers", type=int, default=2)
    return parser.parse_args()


def one_image(hpa_dir: str, image_id: str) -> float:
    """Decode and segment one image in a single thread; returns seconds."""
    cv2.setNumThreads(1)
    start = time.perf_counter()
    segment_classical(read_rgby(hpa_dir, image_id, split=""))
    return time.perf_counter() - start


def main(args: argparse.Namespace) -> None:
    if not (args.hpa_dir / "train.csv").is_file():
        raise SystemExit(f"HPA samples not found in {args.hpa_dir}")
    hpa_ids = read_labels(args.hpa_dir / "train.csv")["ID"].tolist()
    cv2.setNumThreads(1)
    one_image(str(args.hpa_dir), hpa_ids[0])  # warm-up (imports, caches)
    decode, segment, write = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for image_id in hpa_ids:
                t0 = time.perf_counter()
                rgby = read_rgby(args.hpa_dir, image_id, split="")
                t1 = time.perf_counter()
                nuclei_mask, cell_mask = segment_classical(rgby)
                t2 = time.perf_counter()
                write_masks(Path(tmp) / f"{image_id}.npz", nuclei_mask, cell_mask)
                t3 = time.perf_counter()
                decode.append(t1 - t0)
                segment.append(t2 - t1)
                write.append(t3 - t2)
    n = len(decode)
    print(f"one core, {n} images of 2048x2048 (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}):")
    print(
        f"  decode {sum(decode) / n:.3f} s + segment {sum(segment) / n:.3f} s = {(sum(decode) + sum(segment)) / n:.3f} s/image"
    )
    print(f"  cache write (npz, compressed) {sum(write) / n:.3f} s/image")
    tasks = [image_id for _ in range(args.repeats) for image_id in hpa_ids]
    throughput = {}
    for workers in range(1, args.max_workers + 1):
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(one_image, [str(args.hpa_dir)] * workers, hpa_ids[:1] * workers))  # start and warm workers
            start = time.perf_counter()
            list(pool.map(one_image, [str(args.hpa_dir)] * len(tasks), tasks))
            elapsed = time.perf_counter() - start
        throughput[workers] = len(tasks) / elapsed
        print(f"  {workers} worker(s): {throughput[workers]:.2f} images/s ({elapsed:.1f} s for {len(tasks)} images)")
    if len(throughput) > 1:
        print(f"  speed-up {args.max_workers} vs 1 worker: {throughput[args.max_workers] / throughput[1]:.2f}x")


if __name__ == "__main__":
    main(parse_args())
