"""Grid search of the learned backend's post-processing (``LearnedParams``) on tuning sets, not the held-out ones.

    python make_synthetic_data.py --out /tmp/synth_tune --num_train 20 --num_test 1 --size 512 --seed 7
    python benchmarks/tune_learned_masks.py --weights outputs/gpu_checks/cell_segmenter.pt \\
        --dsb_dir ../shared/data/dsb2018_stage1_train_fluo --dsb_limit 80 --synthetic_dir /tmp/synth_tune \\
        --seed_h 0,0.02,0.05,0.1 --foreground_threshold 0.4,0.5,0.6 --cell_foreground_threshold 0.4,0.5,0.6 \\
        --out outputs/learned_params.yaml
    python benchmarks/bench_cell_masks_quality.py --weights outputs/gpu_checks/cell_segmenter.pt \\
        --learned_params outputs/learned_params.yaml --synthetic_dir /tmp/synth_cells    # held-out check

With ``--dsb_held_out`` the nuclei are the images of the DSB2018 folder that the weights held out of their training
(their ``--val_fraction`` and ``--seed``, recomputed from the sorted file names; the folder must be the one they
trained on): tuning then scores images the network never saw, as the quality benchmark's held-out sets are.
``--fixed`` sets fields for every grid point, for example the test-time augmentation::

    python benchmarks/tune_learned_masks.py --weights outputs/gpu_run2/cell_segmenter.pt \\
        --dsb_dir ../shared/data/dsb2018_stage1_train_fluo --dsb_held_out --fixed "{tta_scales: [0.7, 1, 1.4]}" \\
        --foreground_threshold 0.5,0.6,0.7 --seed_h 0.03,0.05,0.08 --out outputs/learned_params.yaml

Tuning sets: the first --dsb_limit images of a ``dsb2018_stage1_train_fluo``-style folder (``images/{id}.png``,
``label_masks/{id}.png``; nucleus F1 at IoU >= 0.5) and the train split of a synthetic benchmark (cell F1 at
IoU >= 0.6), scored as bench_cell_masks_quality.py does (pooled F1). Keep the held-out sets of that benchmark
(dsb2018_nuclei, the HPA samples, its synthetic set) out of the tuning. The network runs once per image (its maps
are cached); only the post-processing runs per grid point. Every float field of ``LearnedParams`` takes a
comma-separated list; the grid is their product. Rows are ranked by the mean of the two F1s, best first, and the
best setting is written as YAML of ``LearnedParams`` fields (``--learned_params`` of the quality benchmark; add
``weights`` for ``--mask_params``).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from bench_cell_masks_quality import Tally, read_dsb_labelled  # noqa: E402

from src.cell_masks.learned import LearnedParams, LearnedSegmenter  # noqa: E402
from src.cell_masks.learned_net import load_weights  # noqa: E402
from src.cell_masks.learned_val import split_held_out  # noqa: E402
from src.cell_masks.quality import f1_score  # noqa: E402
from src.data.atomic import write_text_atomic  # noqa: E402
from src.data.io import read_rgby  # noqa: E402

GRID_FIELDS = tuple(name for name, value in LearnedParams().to_dict().items() if isinstance(value, float))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, required=True, help="learned backend weight file")
    parser.add_argument("--dsb_dir", type=Path, default=None, help="images/ + label_masks/ (nuclei truth)")
    parser.add_argument("--dsb_limit", type=int, default=80, help="first N images of --dsb_dir (sorted by ID)")
    parser.add_argument(
        "--dsb_held_out",
        action="store_true",
        help="instead of the first --dsb_limit: the --dsb_dir images the weights held out of training",
    )
    parser.add_argument("--fixed", default="{}", help="LearnedParams fields set at every grid point (YAML mapping)")
    parser.add_argument("--synthetic_dir", type=Path, default=None, help="make_synthetic_data.py output (train split)")
    parser.add_argument("--out", type=Path, required=True, help="YAML file for the best setting")
    parser.add_argument("--top", type=int, default=20, help="rows of the table to print")
    defaults = LearnedParams()
    for name in GRID_FIELDS:
        parser.add_argument(f"--{name}", default=str(getattr(defaults, name)), help="comma-separated values")
    args = parser.parse_args(argv)
    if args.dsb_dir is None and args.synthetic_dir is None:
        parser.error("give --dsb_dir, --synthetic_dir or both")
    if args.dsb_held_out and args.dsb_dir is None:
        parser.error("--dsb_held_out needs --dsb_dir")
    fixed = yaml.safe_load(args.fixed)
    fields = set(LearnedParams.__dataclass_fields__) - set(GRID_FIELDS)
    if not isinstance(fixed, dict) or not set(fixed) <= fields:
        parser.error(f"--fixed {args.fixed!r}: expected a YAML mapping of fields outside the grid: {sorted(fields)}")
    args.fixed = fixed
    return args


class CachedSegmenter(LearnedSegmenter):
    """A ``LearnedSegmenter`` whose network maps are computed once per input image; change ``config`` freely."""

    def __init__(self, weights: Path) -> None:
        super().__init__(weights)
        self._cache: dict[bytes, object] = {}

    def _maps(self, blue: np.ndarray, cytoplasm: np.ndarray | None):
        augment = repr((self.config.tta_scales, self.config.tta_flip, self.config.tile_size, self.config.tile_overlap))
        image = blue.tobytes() + (b"" if cytoplasm is None else cytoplasm.tobytes())
        key = hashlib.blake2b(image + augment.encode()).digest()
        if key not in self._cache:
            self._cache[key] = super()._maps(blue, cytoplasm)
        return self._cache[key]


def held_out_paths(paths: list[Path], weights: Path) -> list[Path]:
    """The images of ``paths`` (sorted, the training folder's) that ``weights`` held out of training.

    Raises:
        SystemExit: the weights record no held-out images, or the folder holds another number of images than the
            one they trained on.
    """
    trained = load_weights(weights)[2].get("train_params") or {}
    count = int(trained.get("real_images", 0)) + int(trained.get("real_held_out", 0))
    if not trained.get("real_held_out"):
        raise SystemExit(
            f"--dsb_held_out: {weights} records no held-out DSB2018 images (trained with --val_fraction 0?)"
        )
    limited = paths[: trained.get("dsb_limit")]
    if len(limited) != count:
        raise SystemExit(
            f"--dsb_held_out: {weights} trained on {count} DSB2018 images, the folder gives {len(limited)}"
        )
    return split_held_out(limited, float(trained["val_fraction"]), int(trained["seed"]))[1]


def read_dsb_folder(folder: Path, limit: int, held_out_of: Path | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(gray image, int32 labels) of the first ``limit`` images (or those ``held_out_of`` held out of training), read
    as the quality benchmark reads DSB2018."""
    paths = sorted((folder / "images").glob("*.png"))
    chosen = held_out_paths(paths, held_out_of) if held_out_of else paths[:limit]
    samples = [(gray, labels) for _, gray, labels in read_dsb_labelled(folder, chosen)]
    if not samples:
        raise SystemExit(f"--dsb_dir {folder}: no images/*.png")
    return samples


def read_synthetic_train(data_dir: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(RGBY image, cell truth) of every train image of a synthetic benchmark."""
    samples = []
    for path in sorted((data_dir / "train").glob("*_blue.png")):
        image_id = path.name[: -len("_blue.png")]
        truth = cv2.imread(str(data_dir / "truth" / "cell_masks" / f"{image_id}.png"), cv2.IMREAD_UNCHANGED)
        if truth is not None:
            samples.append((read_rgby(data_dir, image_id, split="train"), truth))
    if not samples:
        raise SystemExit(f"--synthetic_dir {data_dir}: no train image with truth/cell_masks")
    return samples


def tune(args: argparse.Namespace) -> list[dict]:
    """Score every grid point; rows (setting, F1s, score) best first. Writes the best setting to ``args.out``."""
    held_out_of = args.weights if args.dsb_held_out else None
    dsb = read_dsb_folder(args.dsb_dir, args.dsb_limit, held_out_of) if args.dsb_dir else []
    synthetic = read_synthetic_train(args.synthetic_dir) if args.synthetic_dir else []
    segmenter = CachedSegmenter(args.weights)
    values = [[float(v) for v in str(getattr(args, name)).split(",")] for name in GRID_FIELDS]
    rows = []
    for point in itertools.product(*values):
        setting = {**args.fixed, **dict(zip(GRID_FIELDS, point, strict=True))}
        segmenter.config = LearnedParams(**setting)
        start, scores = time.perf_counter(), {}
        if dsb:
            tally = Tally()
            for gray, truth in dsb:
                tally.add(segmenter.nuclei(gray), truth, 0.5)
            scores["dsb_nuclei_f1"] = f1_score(tally.tp, tally.fp, tally.fn)
        if synthetic:
            tally = Tally()
            for rgby, truth in synthetic:
                tally.add(segmenter(rgby)[1], truth, 0.6)
            scores["synthetic_cells_f1"] = f1_score(tally.tp, tally.fp, tally.fn)
        score = float(np.mean(list(scores.values())))
        rows.append({"setting": setting, **scores, "score": score, "seconds": time.perf_counter() - start})
    rows.sort(key=lambda row: -row["score"])
    header = f"# tune_learned_masks.py, weights {args.weights}: " + ", ".join(
        f"{key} {rows[0][key]:.3f}" for key in ("dsb_nuclei_f1", "synthetic_cells_f1", "score") if key in rows[0]
    )
    write_text_atomic(args.out, header + "\n" + yaml.safe_dump(rows[0]["setting"], sort_keys=False))
    return rows


def main(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    rows = tune(args)
    varied = [name for name in GRID_FIELDS if "," in str(getattr(args, name))] or list(GRID_FIELDS[:1])
    metrics = [key for key in ("dsb_nuclei_f1", "synthetic_cells_f1") if key in rows[0]]
    print("| rank | " + " | ".join(varied + metrics) + " | mean F1 | seconds |")
    print("|" + "---|" * (len(varied) + len(metrics) + 3))
    for rank, row in enumerate(rows[: args.top], start=1):
        cells = [f"{row['setting'][name]:g}" for name in varied] + [f"{row[key]:.3f}" for key in metrics]
        print(f"| {rank} | " + " | ".join(cells) + f" | {row['score']:.3f} | {row['seconds']:.1f} |")
    print(f"\n{len(rows)} settings in {time.perf_counter() - start:.0f} s; best written to {args.out}")


if __name__ == "__main__":
    main(parse_args())
