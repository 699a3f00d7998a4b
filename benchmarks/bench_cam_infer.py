"""Seconds per image of the whole CAM inference stage against the model's own forward time.

    .venv/bin/python benchmarks/bench_cam_infer.py --num_images 16 --size 2048

Makes ``--num_images`` synthetic test images of ``--size`` px (once, under ``--work_dir``), fills
their classical mask cache, then times ``run_cam_infer``'s ``run_inference`` with cached masks
(decode, resize, model with flip TTA, CAM resizing, per-cell scoring, CSV) and, on the same
images already decoded and resized, the model alone (``predict``: the same TTA views and batch
size). The model is the ``--ckpt`` checkpoint, or, with ``--timm_model_name``, an untrained
classifier of that backbone and ``--input_size`` (weights do not change the time). Prints both
times per image and the overhead of everything that is not the model, as a share of the model time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.cam.infer_config import InferConfig  # noqa: E402
from src.cam.map_source import CheckpointSpec  # noqa: E402
from src.cam.pipeline import run_inference  # noqa: E402
from src.cam.sources import load_sources  # noqa: E402
from src.cell_masks.cache import fill_mask_cache  # noqa: E402
from src.config import CONFIG_DIR, load_yaml  # noqa: E402
from src.config.device import resolve_device  # noqa: E402
from src.data.io import read_rgby, resize_image  # noqa: E402
from src.data.splits import split_image_ids  # noqa: E402
from src.synthetic import SyntheticConfig, write_dataset  # noqa: E402
from src.training.lit_model import LitModel  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=16)
    parser.add_argument("--size", type=int, default=2048, help="side of the synthetic test images")
    parser.add_argument("--work_dir", type=Path, default=Path("outputs/bench_cam_infer"))
    parser.add_argument("--ckpt", type=Path, default=None, help="classifier checkpoint (default: an untrained one)")
    parser.add_argument("--timm_model_name", default="resnet50", help="backbone of the untrained checkpoint")
    parser.add_argument("--input_size", type=int, default=512, help="input side of the untrained checkpoint")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    return parser.parse_args()


def untrained_checkpoint(path: Path, timm_model_name: str, input_size: int) -> Path:
    """A Lightning-style checkpoint of an untrained round-0 classifier (built once)."""
    if not path.is_file():
        hparams = {"timm_model_name": timm_model_name, "num_inchannels": 4, "input_size": input_size, "round_nb": 0}
        model = LitModel(**hparams)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "state_dict": model.state_dict(),
                "hyper_parameters": hparams,
                "pytorch-lightning_version": pl.__version__,
            },
            path,
        )
    return path


def model_seconds(settings: InferConfig, ids: list[str], device: torch.device) -> float:
    """Seconds of the model alone (``predict`` with the stage's TTA and batch size) over decoded, resized images."""
    source = load_sources([CheckpointSpec.parse(settings.ckpt_paths[0], 0)], device)[0]
    images = [
        torch.from_numpy(resize_image(read_rgby(settings.data_dir, i, "test"), source.input_size)).permute(2, 0, 1)
        for i in ids
    ]
    batches = [torch.stack(images[i : i + settings.batch_size]) for i in range(0, len(images), settings.batch_size)]
    cam_size = (settings.cam_size, settings.cam_size)
    map_kind = settings.map_kind  # the maps the stage computes
    source.predict(batches[0], cam_size, settings.tta_flips, settings.tta_scales, map_kind)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for batch in batches:
        source.predict(batch, cam_size, settings.tta_flips, settings.tta_scales, map_kind)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(args: argparse.Namespace) -> None:
    data_dir = args.work_dir / f"data_{args.size}px_{args.num_images}"
    write_dataset(data_dir, 1, args.num_images, args.size, seed=0, config=SyntheticConfig(), workers=args.num_workers)
    ids = split_image_ids(data_dir, "test")
    mask_dir = args.work_dir / f"masks_{args.size}px_{args.num_images}"
    fill_mask_cache(data_dir, "test", ids, mask_dir, workers=args.num_workers)
    if args.ckpt is None:
        name = f"untrained_{args.timm_model_name}_{args.input_size}.ckpt"
        args.ckpt = untrained_checkpoint(args.work_dir / name, args.timm_model_name, args.input_size)
    config = load_yaml(CONFIG_DIR / "kaggle_submission.yaml")
    config.update(
        data_dir=str(data_dir), mask_dir=str(mask_dir), ckpt_paths=[["both", 1.0, str(args.ckpt)]],
        batch_size=args.batch_size, num_workers=args.num_workers, device=args.device,
    )  # fmt: skip
    settings = InferConfig.from_dict(config, "bench_cam_infer")
    out = args.work_dir / "submission.csv"
    for leftover in (out, out.with_name(out.name + ".partial.jsonl")):
        leftover.unlink(missing_ok=True)
    start = time.perf_counter()
    report = run_inference(settings, out)
    stage = time.perf_counter() - start
    if report.failed:
        raise SystemExit(f"{len(report.failed)} image(s) failed: {report.failed}")
    model = model_seconds(settings, ids, resolve_device(args.device))
    n = len(ids)
    print(f"{n} images of {args.size} px, conf_how {settings.scoring.conf_how}, checkpoint {args.ckpt}, flips {settings.tta_flips}, "
          f"scales {settings.tta_scales}, batch {args.batch_size}, {args.num_workers} workers, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"whole stage (cached masks): {stage / n:.3f} s/image")
    print(f"model alone:                {model / n:.3f} s/image")
    print(
        f"overhead:                   {(stage - model) / n:.3f} s/image = {100 * (stage - model) / model:.0f}% of the model time"
    )


if __name__ == "__main__":
    main(parse_args())
