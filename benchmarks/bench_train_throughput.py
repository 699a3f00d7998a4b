"""Training throughput against its limit: model-only steps vs full steps through the real data path.

    .venv/bin/python benchmarks/bench_train_throughput.py                      # make run settings, 3 stages
    .venv/bin/python benchmarks/bench_train_throughput.py --preset full        # make run FULL=1 (on a GPU)
    .venv/bin/python benchmarks/bench_train_throughput.py --preset resnet50_512 --stages image

For each training stage (image classifier, stage-2 U-Net, cell classifier) the run is built exactly as
``run_classification.py`` builds it (``build_run``), with the settings of ``scripts/run_pipeline.sh`` for the preset,
on a small synthetic benchmark (generated in a temporary folder unless --data_dir is given; the U-Net's targets and
the crop store come from its truth masks). Then, in one process on one device, it times:

- model-only: forward, loss, backward and optimiser step on random uint8 images already on the device, same batch
  size, precision and memory layout (the limit);
- Lightning in memory: the same LitModel fitted by a Lightning trainer over batches held in host memory (the
  trainer's own overhead and the host-to-device copy);
- full: ``trainer.fit`` of the real data module and LitModel (the number that matters), its ratio to model-only;
- loader only: the training DataLoader alone, and the time to the first batch (worker start-up included).

Warm-up steps are excluded from every rate. Other processes on the machine distort the figures; state the machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import extract_cell_crops  # noqa: E402
import run_classification  # noqa: E402
from src.cell_masks.precomputed import read_label_file  # noqa: E402
from src.data.io import parse_label  # noqa: E402
from src.models.preprocess import normalize_images  # noqa: E402
from src.segm_labels.targets import CellPseudoLabels, target_path, write_pseudo_labels  # noqa: E402
from src.synthetic import SyntheticConfig, write_dataset  # noqa: E402
from src.training.run import build_run  # noqa: E402

PRESETS = ("makerun", "full", "resnet50_512")
RESNET50_512 = {
    "image": ["--timm_model_name", "resnet50", "--input_size", "512", "--aug_mode", "1", "--batch_size", "32",
              "--num_workers", "8", "--precision", "16-mixed"],
}  # fmt: skip


def pipeline_settings(full: bool) -> dict[str, str]:
    """The settings of ``scripts/run_pipeline.sh`` as it would see them: ``scripts/pipeline_defaults.sh``, after
    ``scripts/full_scale.env`` for the GPU scale (``make run FULL=1``), over the current environment."""
    files = ["scripts/full_scale.env"] * full + ["scripts/pipeline_defaults.sh"]
    script = "set -a; " + "".join(f". {name}; " for name in files) + "env -0"
    out = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def preset_args(preset: str) -> tuple[dict[str, list[str]], int]:
    """run_classification.py arguments of each stage of ``preset`` and its crop side: `make run` (makerun) and
    `make run FULL=1` (full) read the pipeline's own settings; resnet50_512 is a resnet50 at 512 px."""
    if preset == "resnet50_512":
        return RESNET50_512, 64
    s = pipeline_settings(full=preset == "full")
    image = [
        "--timm_model_name",
        s["TIMM"],
        "--timm_kwargs",
        s["TIMM_KWARGS"],
        "--input_size",
        s["INPUT_SIZE"],
        "--aug_mode",
        s["AUG_MODE"],
        "--num_workers",
        s["NUM_WORKERS"],
        "--precision",
        s["PRECISION"],
    ]
    cell = [
        "--timm_model_name",
        s["CELL_TIMM"],
        "--timm_kwargs",
        s["CELL_TIMM_KWARGS"],
        "--batch_size",
        s["CELL_BATCH_SIZE"],
        "--num_workers",
        s["CELL_NUM_WORKERS"],
        "--precision",
        s["PRECISION"],
    ]
    stages = {
        "image": [*image, "--batch_size", s["BATCH_SIZE"]],
        "segm": [*image, "--batch_size", s["SEGM_BATCH_SIZE"], "--crop_size", s["SEGM_CROP_SIZE"],
                 "--decoder_channels", s["DECODER_CHANNELS"]],
        "cell": cell,
    }  # fmt: skip
    return stages, int(s["CROP_SIZE"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="makerun")
    parser.add_argument("--stages", default="image,segm,cell", help="comma-separated: image, segm, cell")
    parser.add_argument(
        "--data_dir", type=Path, default=None, help="a make_synthetic_data.py folder (default: a new one)"
    )
    parser.add_argument("--num_train", type=int, default=160, help="images of the generated benchmark")
    parser.add_argument("--image_size", type=int, default=512, help="side of the generated images")
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of every rate")
    parser.add_argument("--steps", type=int, default=12, help="timed steps")
    parser.add_argument("--num_workers", type=int, default=None, help="override the preset's loader workers")
    parser.add_argument("--cache_format", choices=("png", "npy"), default=None, help="override the image cache")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--extra", default="", help="further run_classification.py arguments, e.g. '--compile'")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    unknown = set(args.stages.split(",")) - {"image", "segm", "cell"}
    if unknown:
        parser.error(f"--stages: unknown {sorted(unknown)}")
    return args


class StepTimer(pl.Callback):
    """Wall-clock time at the start and end of every training batch, and at the start of the epoch."""

    def __init__(self) -> None:
        self.epoch_start: float | None = None
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.sizes: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.epoch_start is None:
            self.epoch_start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())
        self.sizes.append(len(batch["image"]))

    def rate(self, warmup: int) -> float:
        """Images/s from the end of step ``warmup`` to the end of the last step (data waits included)."""
        if len(self.ends) <= warmup + 1:
            raise RuntimeError(f"only {len(self.ends)} steps ran; lower --warmup or add images")
        return sum(self.sizes[warmup + 1 :]) / (self.ends[-1] - self.ends[warmup])


def make_benchmark(root: Path, data_dir: Path | None, num_train: int, size: int, crop_size: int = 64) -> Path:
    """A synthetic benchmark (``data_dir`` or a new one under ``root``), stage-2 targets from its truth
    (``root/segm_labels``) and a crop store of its truth cells (``root/crops``)."""
    if data_dir is None:
        data_dir = root / "data"
        write_dataset(data_dir, num_train, 0, size, seed=0, config=SyntheticConfig())
    truth_dir = data_dir / "truth"
    if not (truth_dir / "cell_labels.csv").is_file():
        raise SystemExit(f"--data_dir {data_dir} has no truth/cell_labels.csv: give a make_synthetic_data.py folder")
    truth = pd.read_csv(truth_dir / "cell_labels.csv", dtype={"ID": str})
    train_ids = set(pd.read_csv(data_dir / "train.csv", dtype={"ID": str})["ID"])
    for image_id, cells in truth[truth["ID"].isin(train_ids)].groupby("ID"):
        cell_mask = read_label_file(truth_dir / "cell_masks" / f"{image_id}.png").astype(np.uint16)
        confidences = np.zeros((int(cell_mask.max()), 19), dtype=np.float32)
        for cell_id, label in zip(cells["cell_id"], cells["Label"], strict=True):
            confidences[int(cell_id) - 1, parse_label(label, image_id)] = 1.0
        write_pseudo_labels(target_path(root / "segm_labels", image_id), CellPseudoLabels(cell_mask, confidences))
    params = {"cell_dir": str(truth_dir / "cell_masks"), "nuclei_dir": str(truth_dir / "nuclei_masks")}
    crop_args = extract_cell_crops.parse_args(
        ["--data_dir", str(data_dir), "--mask_dir", str(root / "masks"), "--mask_backend", "precomputed",
         "--mask_params", json.dumps(params), "--crop_dir", str(root / "crops"), "--crop_size", str(crop_size)]
    )  # fmt: skip
    if extract_cell_crops.main(crop_args) != 0:
        raise RuntimeError("cutting the crop store failed")
    return data_dir


def stage_argv(args: argparse.Namespace, preset: list[str], stage: str, data_dir: Path, work: Path) -> list[str]:
    """run_classification.py arguments of one stage: its ``preset`` arguments, no validation (epochs are set once
    the data is known)."""
    argv = [*preset, "--data_dir", str(data_dir), "--default_root_dir", str(work / stage)]
    argv += ["--optim_name", "adam", "--lr", "1e-3", "--accelerator", args.accelerator, "--limit_val_batches", "0"]
    if stage == "segm":
        argv += ["--segm_label_dir", str(work / "segm_labels"), "--segm_thresh", "0.5"]
    if stage == "cell":
        argv += ["--cell_crop_dir", str(work / "crops")]
    if args.num_workers is not None:
        argv += ["--num_workers", str(args.num_workers)]
    if args.cache_format is not None:
        argv += ["--cache_format", args.cache_format]
    return argv + args.extra.split()


def autocast(device: torch.device, precision: str):
    dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def model_only_rate(model: pl.LightningModule, batch: dict, device: torch.device, precision: str, args) -> float:
    """Images/s of forward + loss + backward + Adam step on random uint8 images already on ``device``."""
    model = model.to(device).train()
    if device.type == "cuda":
        model.network.to(memory_format=torch.channels_last)
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    images = torch.randint(0, 256, batch["image"].shape, dtype=torch.uint8, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")
    times = []
    for _ in range(args.warmup + args.steps):
        start = time.perf_counter()
        batch["image"] = normalize_images(images)
        if device.type == "cuda":
            batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            loss = model.criterion(model.network(batch["image"]), batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return len(images) / float(np.mean(times[args.warmup :]))


def in_memory_rate(run, batch: dict, device: torch.device, args) -> float:
    """Images/s of a Lightning fit of the same model over copies of one batch held in host memory."""
    timer = StepTimer()
    batches = [
        {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()}
        for _ in range(args.warmup + args.steps + 1)
    ]
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1, precision=run.args.precision, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer], num_sanity_val_steps=0,
        limit_val_batches=0,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(batches, batch_size=None, pin_memory=torch.cuda.is_available())
    trainer.fit(run.model, train_dataloaders=loader)
    return timer.rate(args.warmup)


def loader_rates(datamodule: pl.LightningDataModule, args) -> tuple[float, float, dict, int]:
    """(seconds to the first batch from a cold start, images/s after ``warmup`` batches, the first batch, batches
    per epoch) of the training loader."""
    loader = datamodule.train_dataloader()
    start = time.perf_counter()
    iterator = iter(loader)
    sample = next(iterator)
    first = time.perf_counter() - start
    seen, timed_from = 0, None
    for step in range(1, args.warmup + args.steps + 1):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        if step == args.warmup:
            timed_from = time.perf_counter()
        elif step > args.warmup:
            seen += len(batch["image"])
    return first, seen / (time.perf_counter() - timed_from), sample, len(loader)


def measure_stage(args: argparse.Namespace, preset: list[str], stage: str, data_dir: Path, work: Path) -> dict:
    timer = StepTimer()
    run = build_run(run_classification.parse_args(stage_argv(args, preset, stage, data_dir, work)), callbacks=[timer])
    start = time.perf_counter()
    run.datamodule.prepare_data()
    prepare = time.perf_counter() - start
    run.datamodule.setup("fit")
    first_batch, loader, sample, batches_per_epoch = loader_rates(run.datamodule, args)
    device = torch.device("cuda" if run.trainer.strategy.root_device.type == "cuda" else "cpu")
    limit = model_only_rate(run.model, sample, device, run.args.precision, args)
    memory = in_memory_rate(run, sample, device, args)
    steps = args.warmup + args.steps + 1
    run.trainer.fit_loop.max_epochs = -(-steps // batches_per_epoch)
    run.trainer.fit(run.model, datamodule=run.datamodule)
    full = timer.rate(args.warmup)
    # the limit is timed again after the fit and the better of the two kept: a machine that speeds up or slows down
    # during the run must not flatter the ratio
    limit = max(limit, model_only_rate(run.model, sample, device, run.args.precision, args))
    first_step = timer.starts[0] - timer.epoch_start
    return {
        "stage": stage, "model": run.args.timm_model_name, "input": int(sample["image"].shape[-1]),
        "batch": int(sample["image"].shape[0]), "workers": run.args.num_workers, "precision": run.args.precision,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads",
        "model_only": limit, "lightning_in_memory": memory, "full": full, "ratio": full / limit,
        "loader_only": loader, "first_batch_s": first_batch, "fit_first_step_s": first_step, "prepare_s": prepare,
    }  # fmt: skip


def main(args: argparse.Namespace) -> None:
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    total = time.perf_counter()
    stage_args, crop_size = preset_args(args.preset)  # the pipeline's settings are read once
    try:
        start = time.perf_counter()
        data_dir = make_benchmark(work, args.data_dir, args.num_train, args.image_size, crop_size)
        print(f"benchmark data: {data_dir} ({time.perf_counter() - start:.0f} s to build)")
        rows = [measure_stage(args, stage_args[stage], stage, data_dir, work) for stage in args.stages.split(",")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\npreset {args.preset}; {args.warmup} warm-up steps left out, {args.steps} timed")
    print(
        "| stage | model | input | batch | workers | precision | device | model-only img/s | Lightning in memory "
        "| full img/s | full / model-only | loader only img/s | first batch s | first fit step s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['stage']} | {r['model']} | {r['input']} | {r['batch']} | {r['workers']} | {r['precision']} "
            f"| {r['device']} | {r['model_only']:.1f} | {r['lightning_in_memory']:.1f} | {r['full']:.1f} "
            f"| {r['ratio']:.0%} | {r['loader_only']:.1f} | {r['first_batch_s']:.2f} | {r['fit_first_step_s']:.2f} |"
        )
    print(f"total {time.perf_counter() - total:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main(parse_args())
