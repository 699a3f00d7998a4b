"""Pack trained checkpoints (e.g. SC-CAM rounds 0 and 1, or the folds) with their hyperparameters into one
safetensors model zoo file.

    python make_model_zoo.py --ckpt round0/.../last.ckpt round1/.../last.ckpt --names round0 round1 \\
        --out outputs/zoo.safetensors

A ``ckpt_paths`` entry of ``run_cam_infer.py`` (and of the Kaggle notebook's YAML) then names a member as
``outputs/zoo.safetensors#round0`` in place of a checkpoint path.
"""

from __future__ import annotations

import argparse
import json

from src.training.model_zoo import read_manifest, write_zoo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", nargs="+", required=True, help="checkpoints to pack")
    parser.add_argument("--names", nargs="+", required=True, help="one member name per checkpoint")
    parser.add_argument("--out", required=True, help="zoo file (.safetensors)")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    if not args.out.endswith(".safetensors"):
        raise SystemExit(f"make_model_zoo.py: --out must end with .safetensors, got {args.out}")
    write_zoo(args.out, args.ckpt, args.names)
    print(json.dumps({"out": args.out, "members": [r["name"] for r in read_manifest(args.out)]}))


if __name__ == "__main__":
    main(parse_args())
