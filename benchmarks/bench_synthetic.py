"""Time the synthetic benchmark generator: N images of S px written with W workers.

    python benchmarks/bench_synthetic.py --num_images 500 --size 512 --workers 2

Target (issue 2): 500 images of 512x512 in at most 120 s on 2 cores. Also reports the
time of one in-process ``generate_image`` call (no file writing).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.synthetic import SyntheticConfig, generate_image, write_dataset  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=500, help="images in all (80%% train, 20%% test)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget_s", type=float, default=120.0, help="target wall time for the whole run")
    return parser.parse_args()


def main(args: argparse.Namespace) -> None:
    config = SyntheticConfig()
    start = time.perf_counter()
    for seed in range(10):
        generate_image(seed, args.size, config)
    per_image = (time.perf_counter() - start) / 10
    print(f"generate_image at {args.size} px: {per_image * 1000:.0f} ms per image (1 process, no writing)")

    num_train = int(round(0.8 * args.num_images))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_dataset(
            Path(tmp) / "synthetic", num_train, args.num_images - num_train, args.size, args.seed, config, args.workers
        )
        elapsed = time.perf_counter() - start
    verdict = "OK" if elapsed <= args.budget_s else "OVER BUDGET"
    print(
        f"write_dataset: {args.num_images} images of {args.size} px with {args.workers} workers in {elapsed:.1f} s "
        f"({args.num_images / elapsed:.1f} img/s); target <= {args.budget_s:.0f} s: {verdict}"
    )


if __name__ == "__main__":
    main(parse_args())
