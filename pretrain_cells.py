"""Self-supervised contrastive pre-training on single-cell crops (SimCLR with NT-Xent, as SIFLoc).

    python pretrain_cells.py --crop_dir outputs/synthetic/crops_64 --splits train,test \
        --timm_model_name cell_cnn --timm_kwargs '{"widths": [16, 32, 64, 128]}' --max_epochs 20 \
        --default_root_dir outputs/synthetic/pretrain

No labels are read. Two random views of every cell (random resized crop, flips, 90-degree rotations, per-channel
intensity and gamma, blur, noise; made on the device) form a positive pair; with --positives image the second
view comes from another cell of the same image (SIFLoc's pairs). Loss: NT-Xent (lightly), temperature --temperature,
through a two-layer 128-d projection head. Logs, checkpoints and hparams.yaml land in
{default_root_dir}/lightning_logs/version_N/ like every training stage; the backbone alone is written to
{default_root_dir}/backbone.pth, which run_classification.py reads with --backbone_ckpt (cell or image classifier).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from src.models.contrastive import PROJECTION_DIM, TEMPERATURE
from src.training.contrastive_run import BACKBONE_FILE, build_pretraining_run, save_backbone
from src.training.datamodule import default_loader_workers
from src.training.lit_model import OPTIM_NAMES, SCHEDULERS
from src.training.trainer import add_trainer_arguments, report_fit, say

POSITIVES = ("view", "image")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--crop_dir", required=True, help="crop store of extract_cell_crops.py")
    data.add_argument("--splits", default="train,test", help="comma-separated splits of the store (no labels used)")
    data.add_argument(
        "--positives", choices=POSITIVES, default="view",
        help="view: two views of one cell; image: a view of another cell of the same image (SIFLoc)",
    )  # fmt: skip
    data.add_argument("--batch_size", type=int, default=128, help="cells per batch (2x views)")
    data.add_argument("--num_workers", type=int, default=default_loader_workers())
    model = parser.add_argument_group("model")
    model.add_argument("--timm_model_name", default="cell_cnn")
    model.add_argument("--timm_kwargs", default='{"widths": [16, 32, 64, 128]}', help="timm.create_model arguments")
    model.add_argument("--backbone_ckpt", default=None, help="start from these backbone weights")
    model.add_argument("--projection_dim", type=int, default=PROJECTION_DIM)
    model.add_argument("--temperature", type=float, default=TEMPERATURE, help="NT-Xent temperature (SIFLoc: 0.1)")
    optim = parser.add_argument_group("optimisation (SIFLoc: SGD lr 0.003, momentum 0.9, weight decay 5e-4, cosine)")
    optim.add_argument("--optim_name", choices=OPTIM_NAMES, default="sgd")
    optim.add_argument("--lr", type=float, default=0.003)
    optim.add_argument("--weight_decay", type=float, default=5e-4)
    optim.add_argument("--warmup_ratio", type=float, default=0.1)
    optim.add_argument("--scheduler", choices=SCHEDULERS, default="cosine")
    optim.add_argument("--max_epochs", type=int, default=20)
    optim.add_argument("--seed", type=int, default=0)
    add_trainer_arguments(parser)
    args = parser.parse_args(argv)
    args.segm_truth_dir = None  # no per-cell truth is read while pre-training
    return args


def main(args: argparse.Namespace) -> None:
    run = build_pretraining_run(args)
    run.trainer.fit(run.model, datamodule=run.datamodule, ckpt_path=run.resume_path)
    report_fit(run.trainer, run.checkpoint, run.logger)
    if run.trainer.is_global_zero:
        path = save_backbone(run.model, Path(args.default_root_dir) / BACKBONE_FILE)
        say(f"backbone weights (--backbone_ckpt): {path}")


if __name__ == "__main__":
    main(parse_args())
