"""Generate the synthetic HPA-like benchmark: Kaggle layout plus per-cell truth.

    python make_synthetic_data.py --out data/synthetic --num_train 400 --num_test 100 --size 512 --seed 0

Writes DIR/train/, DIR/test/, DIR/train.csv, DIR/sample_submission.csv, DIR/truth/
(cell_masks, nuclei_masks, cell_labels.csv) and DIR/synthetic_config.json. Re-running with
the same parameters into a complete folder does nothing; other parameters regenerate it.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from src.synthetic import SyntheticConfig, write_dataset
from src.synthetic.domains import DomainConfig
from src.synthetic.duplicates import plant_near_duplicates


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    io = parser.add_argument_group("output")
    io.add_argument("--out", type=Path, required=True, help="output folder")
    io.add_argument("--num_train", type=int, default=400, help="train images (labels in train.csv)")
    io.add_argument("--num_test", type=int, default=100, help="test images (in sample_submission.csv)")
    io.add_argument("--size", type=int, default=512, help="image side in px (cells scale with it)")
    io.add_argument("--seed", type=int, default=0, help="dataset seed")
    io.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (output does not depend on it)")
    io.add_argument(
        "--num_duplicates", type=int, default=0,
        help="plant re-noised copies of this many training images ({id}-dup, for find_duplicates.py)",
    )  # fmt: skip
    domains = parser.add_argument_group("domains: cell lines and acquisition batches (metadata.csv)")
    domains.add_argument("--cell_lines", type=int, default=0, help="morphology families (0: none, images unchanged)")
    domains.add_argument("--batches", type=int, default=0, help="acquisition batches (0: none, images unchanged)")
    domains.add_argument(
        "--holdout_cell_lines", type=int, default=0, help="the last N lines appear in test images only"
    )
    domains.add_argument("--holdout_batches", type=int, default=0, help="the last N batches appear in test images only")
    knobs = parser.add_argument_group("difficulty")
    knobs.add_argument("--min_cells", type=int, default=defaults.min_cells)
    knobs.add_argument("--max_cells", type=int, default=defaults.max_cells)
    knobs.add_argument(
        "--cell_dropout", type=float, default=defaults.cell_dropout,
        help="probability that a cell lacks each of its image's labels",
    )  # fmt: skip
    knobs.add_argument(
        "--negative_cell_rate", type=float, default=defaults.negative_cell_rate,
        help="probability that a cell shows no protein (label 18)",
    )  # fmt: skip
    knobs.add_argument(
        "--mitotic_rate", type=float, default=defaults.mitotic_rate, help="probability of a mitotic cell"
    )
    knobs.add_argument("--noise", type=float, default=defaults.noise, help="shot/read noise scale (0 = none)")
    knobs.add_argument("--blur", type=float, default=defaults.blur, help="optical blur sigma in px at 512 px")
    knobs.add_argument(
        "--illumination", type=float, default=defaults.illumination, help="uneven illumination amplitude"
    )
    knobs.add_argument(
        "--intensity_spread", type=float, default=defaults.intensity_spread,
        help="fold range of per-cell protein expression",
    )  # fmt: skip
    knobs.add_argument(
        "--class_freq_power", type=float, default=defaults.class_freq_power,
        help="1 = real class frequencies, 0 = uniform classes",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = SyntheticConfig(
            min_cells=args.min_cells,
            max_cells=args.max_cells,
            cell_dropout=args.cell_dropout,
            negative_cell_rate=args.negative_cell_rate,
            mitotic_rate=args.mitotic_rate,
            noise=args.noise,
            blur=args.blur,
            illumination=args.illumination,
            intensity_spread=args.intensity_spread,
            class_freq_power=args.class_freq_power,
        )
        domains = DomainConfig(args.cell_lines, args.batches, args.holdout_cell_lines, args.holdout_batches)
    except ValueError as error:
        raise SystemExit(f"make_synthetic_data.py: invalid argument: {error}") from None
    start = time.perf_counter()
    write_dataset(args.out, args.num_train, args.num_test, args.size, args.seed, config, args.workers, domains)
    if args.num_duplicates:
        plant_near_duplicates(args.out, args.num_duplicates, args.seed)
    print(f"synthetic benchmark in {args.out}: {args.num_train} train + {args.num_test} test images "
          f"of {args.size} px ({time.perf_counter() - start:.1f} s)")  # fmt: skip


if __name__ == "__main__":
    main(parse_args())
