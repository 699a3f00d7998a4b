"""Speed of the crop store on real 2048x2048 HPA images, from cached masks (decode included).

    OMP_NUM_THREADS=1 python benchmarks/bench_crops.py --repeats 3

Masks of the real sample images are computed once (classical backend) into a temporary cache; then each image
is decoded, its masks read from the cache, every cell cut (64 px, ``zero``) and the shard written, on one core.
Prints seconds per image for each step. Other processes on the machine distort the figures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.cell_masks.cache import mask_path, read_masks, write_masks  # noqa: E402
from src.cell_masks.classical import segment_classical  # noqa: E402
from src.crops.store import CropSpec, cut_image, write_image_crops  # noqa: E402
from src.data.io import read_rgby  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hpa_dir", type=Path, default=Path("../shared/data/hpa_kaggle_samples"))
    parser.add_argument("--repeats", type=int, default=3, help="passes over the images")
    parser.add_argument("--crop_size", type=int, default=64)
    parser.add_argument("--crop_mask", default="zero")
    return parser.parse_args()


def main(args: argparse.Namespace) -> None:
    cv2.setNumThreads(1)
    if not args.hpa_dir.is_dir():
        raise SystemExit(f"--hpa_dir {args.hpa_dir} not found (real HPA sample images)")
    ids = sorted(p.name[: -len("_blue.png")] for p in args.hpa_dir.glob("*_blue.png"))
    spec = CropSpec(crop_size=args.crop_size, crop_mask=args.crop_mask)
    with tempfile.TemporaryDirectory() as tmp:
        for image_id in ids:
            rgby = read_rgby(args.hpa_dir, image_id, "")
            write_masks(mask_path(tmp, image_id), *segment_classical(rgby))
        times = {"decode": 0.0, "masks": 0.0, "cut": 0.0, "write": 0.0}
        cells = runs = 0
        for _ in range(args.repeats):
            for image_id in ids:
                t0 = time.perf_counter()
                rgby = read_rgby(args.hpa_dir, image_id, "")
                t1 = time.perf_counter()
                _, cell_mask = read_masks(mask_path(tmp, image_id))
                t2 = time.perf_counter()
                cut, table = cut_image(rgby, cell_mask, spec)
                t3 = time.perf_counter()
                write_image_crops(Path(tmp) / "crops", "train", image_id, cut, table)
                t4 = time.perf_counter()
                for key, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    times[key] += seconds
                cells += len(cut.cell_ids)
                runs += 1
    size = "x".join(map(str, rgby.shape[:2]))
    print(f"{runs} image passes ({size} px, {cells / runs:.1f} cells per image), one core, seconds per image:")
    for key, seconds in times.items():
        print(f"  {key:7s} {seconds / runs:.3f}")
    total = sum(times.values()) / runs
    print(
        f"  total   {total:.3f} (from cached masks; target <= 0.2); without decode {total - times['decode'] / runs:.3f}"
    )


if __name__ == "__main__":
    main(parse_args())
