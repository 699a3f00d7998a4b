"""Training loop of the learned mask backend (plain PyTorch: one small network, patches drawn on the fly).

Each batch mixes real nuclei (a ``real_fraction`` of the patches, when real images are given)
with synthetic images that have nuclei and cells. The loss is class-weighted cross-entropy on
the nucleus maps plus the same on the cell maps where there is cell truth. Batches are drawn in the
main process or, with ``workers``, in loader processes (each with its own random stream), and the
network runs on the CPU or on CUDA (bf16 autocast, channels_last) when it is there. With held-out images
(:mod:`src.cell_masks.learned_val`) the network is scored on them every ``val_every`` steps and at the end, the
best weights are the ones returned, and ``patience`` validations without progress stop the run.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from src.cell_masks.learned_data import IGNORE, Augmentation, TrainImage, sample_patch
from src.cell_masks.learned_net import NUM_CLASSES, NetworkConfig, build_network
from src.cell_masks.learned_val import BestWeights, HeldOut
from src.config.device import resolve_device

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings.

    Attributes:
        steps: optimiser steps (the learning rate follows a cosine over them).
        batch_size: patches per step.
        patch: patch side at the working scale, pixels (a multiple of 32).
        lr: peak learning rate (AdamW), reached after a 5% warm-up.
        weight_decay: AdamW weight decay.
        boundary_weight: weight of the boundary class in the cross-entropy (background and interior: 1).
        real_fraction: share of patches drawn from real nuclei images when there are any.
        max_minutes: stop after this long (0: no limit); the learning-rate schedule follows whichever of
            steps and time runs out first, so a run cut by time still ends at a low learning rate.
        seed: seed of patch sampling and initialisation.
        workers: loader processes drawing batches (0: the main process draws them).
        device: 'auto' (CUDA when available), 'cpu' or 'cuda'.
        val_every: score the held-out images every this many steps (0: only at the end).
        patience: stop after this many validations without a better score (0: never stop early).
    """

    steps: int = 1000
    batch_size: int = 8
    patch: int = 192
    lr: float = 3e-3
    weight_decay: float = 1e-4
    boundary_weight: float = 3.0
    real_fraction: float = 0.5
    max_minutes: float = 0.0
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    val_every: int = 0
    patience: int = 0


def training_progress(step: int, seconds: float, settings: TrainSettings) -> float:
    """Fraction of training done, in [0, 1]: by steps, or by time when ``max_minutes`` runs out first."""
    done = step / max(1, settings.steps)
    if settings.max_minutes:
        done = max(done, seconds / (settings.max_minutes * 60))
    return min(1.0, done)


def lr_factor(progress: float, warmup: float = 0.05) -> float:
    """Learning-rate multiplier: linear warm-up over the first ``warmup`` of training, then a cosine to 0."""
    if progress < warmup:
        return (progress + 1e-3) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (progress - warmup) / (1.0 - warmup)))


def draw_batch(
    real: Sequence[TrainImage],
    synthetic: Sequence[TrainImage],
    settings: TrainSettings,
    aug: Augmentation,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x (N, 2, P, P) float32, nuclei targets (N, P, P) int64, cell targets (N, P, P) int64)."""
    samples = []
    for _ in range(settings.batch_size):
        pool = real if real and (not synthetic or rng.random() < settings.real_fraction) else synthetic
        samples.append(sample_patch(pool[int(rng.integers(len(pool)))], settings.patch, rng, aug))
    return tuple(torch.from_numpy(np.stack(parts)) for parts in zip(*samples))  # type: ignore[return-value]


class PatchStream(IterableDataset):
    """An endless stream of training batches; each loader process draws from its own seeded generator."""

    def __init__(self, real: Sequence[TrainImage], synthetic: Sequence[TrainImage], settings: TrainSettings,
                 aug: Augmentation):  # fmt: skip
        self.real, self.synthetic, self.settings, self.aug = real, synthetic, settings, aug

    def __iter__(self):
        worker = get_worker_info()
        stream = [self.settings.seed] if worker is None else [self.settings.seed, worker.id + 1]
        rng = np.random.default_rng(stream)
        while True:
            yield draw_batch(self.real, self.synthetic, self.settings, self.aug, rng)


def segmentation_loss(logits: torch.Tensor, nuclei: torch.Tensor, cells: torch.Tensor, weight: torch.Tensor):
    """Cross-entropy of the nucleus maps plus that of the cell maps over the pixels with cell truth.

    Args:
        logits: (N, 6, H, W) network output.
        nuclei: (N, H, W) int64 classes.
        cells: (N, H, W) int64 classes or IGNORE.
        weight: (3,) class weights.
    """
    loss = nn.functional.cross_entropy(logits[:, :NUM_CLASSES], nuclei, weight=weight)
    if bool((cells != IGNORE).any()):
        loss = loss + nn.functional.cross_entropy(logits[:, NUM_CLASSES:], cells, weight=weight, ignore_index=IGNORE)
    return loss


def train_network(
    real: Sequence[TrainImage],
    synthetic: Sequence[TrainImage],
    config: NetworkConfig,
    settings: TrainSettings,
    aug: Augmentation,
    progress: bool = True,
    held_out: HeldOut | None = None,
) -> tuple[nn.Module, dict]:
    """Train the U-Net from scratch.

    Args:
        real: nuclei-only images (may be empty).
        synthetic: images with nuclei and cells (may be empty when ``real`` is not).
        config: architecture.
        settings: optimisation settings.
        aug: augmentation.
        progress: show a progress bar with the running loss.
        held_out: images never trained on, to keep the best weights by (None: the last weights).

    Returns:
        (network in eval mode, summary {'steps', 'seconds', 'final_loss', 'device'}; with ``held_out`` also
        'held_out' (scores per validation), 'best_step' and 'best_score').

    Raises:
        ValueError: no training images at all.
    """
    if not real and not synthetic:
        raise ValueError("no training images: give real nuclei (--dsb_dir) and/or a synthetic benchmark")
    device = resolve_device(settings.device)
    cuda = device.type == "cuda"
    torch.manual_seed(settings.seed)
    network = build_network(config).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(network.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    start, running, step = time.perf_counter(), None, 0
    weight = torch.tensor([1.0, 1.0, settings.boundary_weight], device=device)
    batches = iter(DataLoader(PatchStream(real, synthetic, settings, aug), batch_size=None,
                              num_workers=settings.workers, pin_memory=cuda))  # fmt: skip
    bar = tqdm(total=settings.steps, desc=f"train cell segmenter ({device.type})", unit="step", disable=not progress)
    best = BestWeights() if held_out is not None and held_out.images else None
    network.train()
    for step in range(1, settings.steps + 1):
        lr = settings.lr * lr_factor(training_progress(step - 1, time.perf_counter() - start, settings))
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, nuclei, cells = (part.to(device, non_blocking=True) for part in next(batches))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            logits = network(x.contiguous(memory_format=torch.channels_last))
        loss = segmentation_loss(logits.float(), nuclei, cells, weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        bar.update()
        bar.set_postfix(loss=f"{running:.3f}", lr=f"{lr:.1e}")
        if best is not None and settings.val_every and step % settings.val_every == 0:
            scores = best.validate(network, step, held_out)
            logger.info("step %d: held-out %s", step, {k: round(v, 3) for k, v in scores.items()})
            if settings.patience and best.stale >= settings.patience:
                logger.warning("stopped after %d of %d steps: no better held-out score for %d validations",
                               step, settings.steps, settings.patience)  # fmt: skip
                break
        if settings.max_minutes and time.perf_counter() - start > settings.max_minutes * 60:
            logger.warning("stopped after %d of %d steps: --max_minutes %s reached", step, settings.steps,
                           settings.max_minutes)  # fmt: skip
            break
    bar.close()
    summary = {"steps": step, "seconds": round(time.perf_counter() - start, 1), "final_loss": running,
               "device": device.type}  # fmt: skip
    if best is not None:
        if not best.history or best.history[-1]["step"] != step:
            best.validate(network, step, held_out)
        network.load_state_dict(best.state)
        summary.update(best.summary())
    return network.to("cpu", memory_format=torch.contiguous_format).eval(), summary
