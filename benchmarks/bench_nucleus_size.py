"""Accuracy of the per-image nucleus size estimate that sets both backends' working scale.

    python benchmarks/bench_nucleus_size.py                   # DSB2018 stage-1 train (541) and test (18) images
    python benchmarks/bench_nucleus_size.py --dirs ../shared/data/dsb2018_nuclei --list 0

Each image's estimate (``estimate_nucleus_diameter`` on the 1024 px coarse copy the backends
make) is divided by the median equivalent diameter of its true nuclei. A ratio of 2 puts a
nucleus at half the intended working size, 0.5 at twice it; the working scale of both
backends follows the estimate. Printed per folder: the median of |log ratio|, how many images
are off by more than 2x either way, and the worst images (``--list``). A folder is read in
either DSB2018 layout: ``images/{id}.png`` + ``label_masks/{id}.png`` (stage-1 train, label
images) or ``{id}/images/{id}.png`` + ``{id}/masks/*.png`` (stage-1 test, one file per nucleus).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_cell_masks_quality import read_dsb, read_dsb_labelled  # noqa: E402

from src.cell_masks.classical import coarse_nuclear_stain, estimate_nucleus_diameter  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dirs", type=Path, nargs="+",
                        default=[SHARED / "dsb2018_stage1_train_fluo", SHARED / "dsb2018_nuclei"],
                        help="DSB2018-layout folders with truth")  # fmt: skip
    parser.add_argument("--list", type=int, default=10, help="worst images listed per folder")
    return parser.parse_args()


def read_folder(folder: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(id, (H, W) image, (H, W) int32 truth labels) of every image of a DSB2018-layout folder.

    Raises:
        FileNotFoundError: the folder holds neither layout (the folder is named).
    """
    if (folder / "images").is_dir() and (folder / "label_masks").is_dir():
        return read_dsb_labelled(folder)
    if folder.is_dir() and any(p.is_dir() and (p / "masks").is_dir() for p in folder.iterdir()):
        return read_dsb(folder)
    raise FileNotFoundError(f"{folder}: expected images/ + label_masks/ or <id>/images + <id>/masks")


def size_ratio(gray: np.ndarray, truth: np.ndarray) -> float | None:
    """Estimated over true median nucleus diameter; None when the estimate finds nothing."""
    coarse, coarse_factor = coarse_nuclear_stain(gray)
    estimate = estimate_nucleus_diameter(coarse)
    areas = np.bincount(truth.ravel())[1:]
    areas = areas[areas > 0]
    if estimate is None or areas.size == 0:
        return None
    return float(estimate / coarse_factor / (2.0 * np.sqrt(np.median(areas) / np.pi)))


def main(args: argparse.Namespace) -> None:
    print("| folder | images | median abs log ratio | ratio > 2 | ratio < 0.5 | no estimate |")
    print("|---|---|---|---|---|---|")
    worst: list[str] = []
    for folder in args.dirs:
        if not folder.exists():
            print(f"| {folder} | skipped: not found | | | | |")
            continue
        ratios = {name: size_ratio(gray, truth) for name, gray, truth in tqdm(read_folder(folder), desc=folder.name)}
        found = np.array([r for r in ratios.values() if r is not None])
        log_error = np.abs(np.log(found)) if found.size else np.zeros(0)
        median = f"{np.median(log_error):.3f}" if found.size else "-"
        print(
            f"| {folder.name} | {len(ratios)} | {median} | {int((found > 2).sum())} | {int((found < 0.5).sum())} | "
            f"{len(ratios) - found.size} |"
        )
        ranked = sorted((r for r in ratios.items() if r[1] is not None), key=lambda r: -abs(np.log(r[1])))
        worst += [f"{folder.name}/{name}: {ratio:.2f}" for name, ratio in ranked[: args.list]]
    if worst:
        print("worst estimates (estimate / truth):")
        print("\n".join(worst))


if __name__ == "__main__":
    main(parse_args())
