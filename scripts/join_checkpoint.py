"""Move a trained checkpoint between machines: slim (and split) it on one, join it again on the other.

    python scripts/join_checkpoint.py --split RUN/checkpoints/last.ckpt --half --out round1.ckpt
        -> round1.ckpt, or round1.part0.ckpt, round1.part1.ckpt, ... when over --max_mb
    python scripts/join_checkpoint.py --join round1.part0.ckpt round1.part1.ckpt --out round1_joined.ckpt

The slim file has no optimiser or loop state; ``--half`` stores the weights as float16. ``--join`` restores one
float32 checkpoint that every stage script (``run_cam_infer.py --ckpt_paths``) reads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.data.atomic import atomic_path  # noqa: E402
from src.training.checkpoints import (  # noqa: E402
    join_checkpoint,
    load_checkpoint_file,
    slim_checkpoint,
    split_checkpoint,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--split", type=Path, metavar="CKPT", help="checkpoint to slim, and split when over --max_mb")
    mode.add_argument("--join", type=Path, nargs="+", metavar="PART", help="the parts written by --split")
    parser.add_argument(
        "--out", type=Path, required=True, help="file written (--split: the name the parts derive from)"
    )
    parser.add_argument("--half", action="store_true", help="--split: float16 weights")
    parser.add_argument("--max_mb", type=float, default=15.0, help="--split: largest part, in MB of weights")
    return parser.parse_args(argv)


def save(checkpoint: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB")


def main(args: argparse.Namespace) -> None:
    if args.max_mb <= 0:
        raise SystemExit(f"--max_mb must be > 0, got {args.max_mb}")
    if args.join:
        try:
            save(join_checkpoint([load_checkpoint_file(path) for path in args.join]), args.out)
        except ValueError as error:
            raise SystemExit(f"--join {' '.join(map(str, args.join))}: {error}") from None
        return
    parts = split_checkpoint(slim_checkpoint(load_checkpoint_file(args.split), args.half), int(args.max_mb * 1e6))
    if len(parts) == 1:
        save(parts[0], args.out)
        return
    for part in parts:
        save(part, args.out.with_name(f"{args.out.stem}.part{part['part']}{args.out.suffix}"))


if __name__ == "__main__":
    main(parse_args())
