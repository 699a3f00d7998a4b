"""Held-out images of the learned backend's training: which images stay out, and how a network scores on them.

A share of the real nuclei images and of the synthetic ones (``val_fraction``, drawn with the seed) is never
trained on. Every ``val_every`` steps the network is scored on them as inference post-processes its maps, at the
working scale and without the test-time augmentation (``tta_scales``, ``tta_flip``; it would triple the time):
nucleus F1 at IoU 0.5 on the real images (the DSB2018 measure of the quality benchmark) and
cell F1 at IoU 0.6 on the synthetic ones. Training keeps the weights of the best score (the mean of the two, or the
one there is) and can stop when it no longer improves. The held-out DSB2018 test images never take part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np
import torch

from src.cell_masks.learned import LearnedParams, cells_from_maps, network_input, nuclei_from_maps, predict_maps
from src.cell_masks.learned_data import TrainImage
from src.cell_masks.learned_net import NUM_CLASSES
from src.cell_masks.quality import f1_score, match_instances

T = TypeVar("T")

NUCLEUS_IOU = 0.5  # DSB2018's F1 threshold
CELL_IOU = 0.6  # the competition's cell IoU


@dataclass(frozen=True)
class HeldOutImage:
    """One held-out image at the working scale: network input and truth labels (cells None for nuclei-only)."""

    name: str
    inputs: np.ndarray
    nuclei: np.ndarray
    cells: np.ndarray | None


def split_held_out(images: Sequence[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """(training images, held-out images): ``fraction`` of them held out (at least one when the fraction is above 0
    and there are two or more), drawn with ``seed``; ValueError for a fraction outside [0, 1). The draw depends
    only on the number of images, so the same list of file names gives the same split (tune_learned_masks.py)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"--val_fraction must lie in [0, 1), got {fraction}")
    if fraction == 0.0 or len(images) < 2:
        return list(images), []
    count = max(1, round(len(images) * fraction))
    held = set(np.random.default_rng(seed).permutation(len(images))[:count].tolist())
    return [im for i, im in enumerate(images) if i not in held], [im for i, im in enumerate(images) if i in held]


def _nearest(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(labels.astype(np.int32), shape[::-1], interpolation=cv2.INTER_NEAREST)


def prepare_held_out(images: Sequence[TrainImage]) -> list[HeldOutImage]:
    """The held-out images brought to the working scale once (inputs as inference builds them)."""
    prepared = []
    for image in images:
        height, width = image.blue.shape
        shape = (max(1, round(height * image.factor)), max(1, round(width * image.factor)))
        cells = None if image.cells is None else _nearest(image.cells, shape)
        inputs = network_input(image.blue, image.cytoplasm, shape)
        prepared.append(HeldOutImage(image.name, inputs, _nearest(image.nuclei, shape), cells))
    return prepared


def held_out_scores(
    network: torch.nn.Module, images: Sequence[HeldOutImage], diameter: float, params: LearnedParams | None = None
) -> dict[str, float]:
    """Pooled ``nuclei_f1`` and ``cells_f1`` (absent when no image has that truth) and their mean ``score``.

    Args:
        network: the U-Net in eval mode.
        images: from :func:`prepare_held_out`.
        diameter: nucleus diameter at the working scale (the weights' ``WorkingScale``).
        params: post-processing (default: the backend's defaults).
    """
    params = params or LearnedParams()
    counts = {"nuclei": np.zeros(3, np.int64), "cells": np.zeros(3, np.int64)}
    seen = set()
    for image in images:
        maps = predict_maps(network, image.inputs, params.tile_size, params.tile_overlap)
        nuclei = nuclei_from_maps(maps[:NUM_CLASSES], params, diameter)
        counts["nuclei"] += match_instances(nuclei, image.nuclei, NUCLEUS_IOU)[:3]
        seen.add("nuclei")
        if image.cells is not None:
            cells = cells_from_maps(maps[NUM_CLASSES:], nuclei, params, diameter)
            counts["cells"] += match_instances(cells, image.cells, CELL_IOU)[:3]
            seen.add("cells")
    scores = {f"{kind}_f1": f1_score(*(int(c) for c in counts[kind])) for kind in sorted(seen)}
    if scores:
        scores["score"] = float(np.mean(list(scores.values())))
    return scores


@dataclass(frozen=True)
class HeldOut:
    """What training validates on: the prepared images and the working-scale nucleus diameter."""

    images: list[HeldOutImage]
    diameter: float


class BestWeights:
    """The history of held-out scores, the weights of the best one and how many validations ago it was."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []
        self.score, self.step, self.stale = float("-inf"), 0, 0
        self.state: dict[str, torch.Tensor] | None = None

    def validate(self, network: torch.nn.Module, step: int, held_out: HeldOut) -> dict[str, float]:
        """Score ``network`` (back in training mode afterwards) and keep its weights when they are the best."""
        network.eval()
        scores = held_out_scores(network, held_out.images, held_out.diameter)
        network.train()
        self.history.append({"step": step, **{k: round(v, 4) for k, v in scores.items()}})
        if scores["score"] > self.score:
            self.score, self.step, self.stale = scores["score"], step, 0
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in network.state_dict().items()}
        else:
            self.stale += 1
        return scores

    def summary(self) -> dict:
        return {"held_out": self.history, "best_step": self.step, "best_score": round(self.score, 4)}
