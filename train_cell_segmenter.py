"""Train the U-Net of the ``learned`` mask backend from synthetic truth and real fluorescence nuclei.

    python train_cell_segmenter.py --synthetic_dir data/synthetic --dsb_dir ../shared/data/dsb2018_stage1_train_fluo

Synthetic images (train split, nuclei and cells from ``truth/``) and the real nuclei of
dsb2018_stage1_train_fluo (never the held-out dsb2018_nuclei test images) are cut into patches at
the working scale (a nucleus about 24 px wide) with rotations, flips, scale 0.5-2x, gamma, gain,
blur and noise. A share of both (``--val_fraction``) is held out of training: the network is scored on
it every ``--val_every`` steps (nucleus F1@0.5 on the real images, cell F1@0.6 on the synthetic ones, with the
inference post-processing) and the best weights are kept (``--patience`` stops a run that stopped improving).
The weights are written atomically to --out (default outputs/cell_segmenter/weights.pt,
where the quality benchmark finds them) with the arguments they were trained with; use them with
``make_cell_masks.py --backend learned --weights PATH``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from src.cell_masks.learned_data import Augmentation, load_nuclei_folder, load_synthetic
from src.cell_masks.learned_net import DEFAULT_WEIGHTS, NetworkConfig, WorkingScale, build_network, save_weights
from src.cell_masks.learned_train import TrainSettings, train_network
from src.cell_masks.learned_val import HeldOut, prepare_held_out, split_held_out
from src.config.device import resolve_device

HELD_OUT = "dsb2018_nuclei"  # the 18 stage-1 test images: the benchmark's held-out check, never training data


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults, net, aug = TrainSettings(), NetworkConfig(), Augmentation()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--synthetic_dir", type=Path, default=Path("data/synthetic"),
                      help="synthetic benchmark (make_synthetic_data.py); '' for none")  # fmt: skip
    data.add_argument("--dsb_dir", type=Path, default=Path("../shared/data/dsb2018_stage1_train_fluo"),
                      help="real nuclei: images/{id}.png + label_masks/{id}.png; '' for none")  # fmt: skip
    data.add_argument("--dsb_limit", type=int, default=None, help="use only the first N real images")
    data.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="weight file written")
    model = parser.add_argument_group("network")
    model.add_argument("--encoder", default=net.encoder, help="timm encoder name (random initialisation)")
    model.add_argument("--encoder_depth", type=int, default=net.encoder_depth)
    model.add_argument("--decoder_channels", default=",".join(map(str, net.decoder_channels)),
                       help="one width per encoder stage")  # fmt: skip
    model.add_argument("--nucleus_diameter_px", type=float, default=WorkingScale().nucleus_diameter_px,
                       help="nucleus width at the working scale")  # fmt: skip
    train = parser.add_argument_group("training")
    train.add_argument("--steps", type=int, default=defaults.steps)
    train.add_argument("--batch_size", type=int, default=defaults.batch_size)
    train.add_argument("--patch", type=int, default=defaults.patch, help="patch side, multiple of 32")
    train.add_argument("--lr", type=float, default=defaults.lr)
    train.add_argument("--boundary_weight", type=float, default=defaults.boundary_weight)
    train.add_argument("--real_fraction", type=float, default=defaults.real_fraction,
                       help="share of patches from the real nuclei")  # fmt: skip
    train.add_argument("--scale_range", type=float, nargs=2, default=list(aug.scale_range))
    train.add_argument("--max_minutes", type=float, default=0.0, help="stop early after this long (0: no limit)")
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument("--val_fraction", type=float, default=0.1,
                       help="share of the real and of the synthetic images held out of training (0: none)")  # fmt: skip
    train.add_argument("--val_every", type=int, default=250,
                       help="score the held-out images every N steps and keep the best weights (0: at the end)")  # fmt: skip
    train.add_argument("--patience", type=int, default=defaults.patience,
                       help="stop after N validations without a better held-out score (0: never)")  # fmt: skip
    train.add_argument("--workers", type=int, default=defaults.workers,
                       help="loader processes drawing patches (0: the main process)")  # fmt: skip
    train.add_argument("--device", default=defaults.device, choices=("auto", "cpu", "cuda"),
                       help="auto: CUDA (bf16 autocast) when available")  # fmt: skip
    train.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def _given(path: Path) -> bool:
    return str(path) not in ("", ".")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.patch % 32:
        raise SystemExit(f"--patch {args.patch}: must be a multiple of 32")
    if _given(args.dsb_dir) and args.dsb_dir.resolve().name == HELD_OUT:
        raise SystemExit(f"--dsb_dir {args.dsb_dir}: that is the held-out test set; train on dsb2018_stage1_train_fluo")
    try:
        decoder = tuple(int(c) for c in args.decoder_channels.split(","))
    except ValueError:
        raise SystemExit(f"--decoder_channels {args.decoder_channels!r}: expected comma-separated integers") from None
    config = NetworkConfig(args.encoder, args.encoder_depth, decoder)
    working = WorkingScale(nucleus_diameter_px=args.nucleus_diameter_px)
    try:
        build_network(config)
        resolve_device(args.device)
        start = time.perf_counter()
        real = load_nuclei_folder(args.dsb_dir, working, args.dsb_limit) if _given(args.dsb_dir) else []
        synthetic = load_synthetic(args.synthetic_dir, working) if _given(args.synthetic_dir) else []
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    try:
        real, real_held = split_held_out(real, args.val_fraction, args.seed)
        synthetic, synthetic_held = split_held_out(synthetic, args.val_fraction, args.seed)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"{len(real)} real nuclei images, {len(synthetic)} synthetic images ({time.perf_counter() - start:.1f} s); "
          f"held out: {len(real_held)} real, {len(synthetic_held)} synthetic")  # fmt: skip
    held_out = HeldOut(prepare_held_out(real_held + synthetic_held), working.nucleus_diameter_px)
    settings = TrainSettings(
        steps=args.steps, batch_size=args.batch_size, patch=args.patch, lr=args.lr,
        boundary_weight=args.boundary_weight, real_fraction=args.real_fraction, max_minutes=args.max_minutes,
        seed=args.seed, workers=args.workers, device=args.device, val_every=args.val_every, patience=args.patience,
    )  # fmt: skip
    augmentation = Augmentation(scale_range=tuple(args.scale_range))
    try:
        network, summary = train_network(
            real, synthetic, config, settings, augmentation, not args.no_progress, held_out
        )
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    train_params = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    train_params.update(real_images=len(real), synthetic_images=len(synthetic), real_held_out=len(real_held),
                        synthetic_held_out=len(synthetic_held), **summary)  # fmt: skip
    save_weights(args.out, network, config, working, train_params)
    print(f"weights in {args.out} ({summary['steps']} steps, {summary['seconds']:.0f} s, "
          f"loss {summary['final_loss']:.3f}); parameters: {json.dumps(train_params, sort_keys=True)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
