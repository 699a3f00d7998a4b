"""Image probabilities of a classification checkpoint over the images of a split, their truth, and label CSVs."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from src.data.atomic import write_csv_atomic
from src.data.classes import NUM_CLASSES
from src.data.folds import N_FOLDS
from src.data.io import labels_to_multihot, read_labels, read_rgby
from src.data.splits import split_image_ids
from src.image_labels.tta import tta_image_probs
from src.metrics.truth import load_truth
from src.models.factory import is_segmentation_run
from src.models.preprocess import normalize_images
from src.training.checkpoints import load_trained_pl_model, read_checkpoint_hparams
from src.training.lit_model import LitModel

logger = logging.getLogger(__name__)


def load_classifier(checkpoint_path: str | os.PathLike) -> tuple[torch.nn.Module, int, int]:
    """(network in eval mode on CPU, input size, input channels) of a classification checkpoint."""
    model, hparams = load_trained_pl_model(LitModel, checkpoint_path)
    if is_segmentation_run(hparams):
        raise ValueError(f"{checkpoint_path}: a segmentation checkpoint gives no image probabilities")
    return model.network.eval(), int(hparams.get("input_size", 512)), int(hparams.get("num_inchannels", 4))


def predict_split_probs(
    checkpoint_path: str | os.PathLike,
    data_dir: str | os.PathLike,
    split: str,
    ids: list[str],
    tta: str,
    crop_fraction: float = 0.75,
    batch_size: int = 16,
) -> np.ndarray:
    """(N, 19) image probabilities of ``ids``, each image resized to the checkpoint's input size.

    Args:
        checkpoint_path: a classification run's checkpoint.
        data_dir: the Kaggle-layout folder holding ``{split}/``.
        split: 'train' or 'test'.
        ids: image IDs.
        tta: see :data:`src.image_labels.tta.IMAGE_TTA_MODES`.
        crop_fraction: crop side over the image side for the five-crop modes.
        batch_size: images per forward pass.
    """
    network, input_size, in_chans = load_classifier(checkpoint_path)
    probs = []
    for start in range(0, len(ids), batch_size):
        batch = np.stack([read_rgby(data_dir, i, split, size=input_size) for i in ids[start : start + batch_size]])
        images = normalize_images(torch.from_numpy(batch).permute(0, 3, 1, 2)[:, :in_chans])
        probs.append(tta_image_probs(network, images, tta, crop_fraction).numpy())
    return np.concatenate(probs) if probs else np.zeros((0, NUM_CLASSES))


def image_truth(
    data_dir: str | os.PathLike, split: str, ids: list[str], truth_dir: str | os.PathLike = ""
) -> np.ndarray:
    """(N, 19) 0/1 image labels: ``train.csv`` for 'train', the union of the cells' labels in ``truth_dir``
    (default ``{data_dir}/truth``) for 'test'."""
    if split == "train":
        frame = read_labels(Path(data_dir) / "train.csv").set_index("ID")
        return labels_to_multihot([frame.loc[i, "labels"] for i in ids])
    truth = load_truth(truth_dir or Path(data_dir) / "truth", ids)
    return labels_to_multihot([list(truth.image_labels(i)) for i in ids])


def write_labels_csv(path: str | os.PathLike, ids: list[str], probs: np.ndarray, thresholds: np.ndarray) -> None:
    """``ID,Label`` rows (labels space-separated, as Atlas 2018's submission) at per-class ``thresholds``; an image
    with no class at or above its threshold gets an empty label (as the macro F1 counts it)."""
    labels = [" ".join(str(int(c)) for c in np.flatnonzero(row >= thresholds)) for row in probs]
    write_csv_atomic(path, pd.DataFrame({"ID": ids, "Label": labels}))


def predict_ensemble_probs(checkpoint_paths: Sequence[str | os.PathLike], *args, **kwargs) -> np.ndarray:
    """(N, 19) mean of :func:`predict_split_probs` over the checkpoints (the K fold models), same arguments."""
    return np.mean([predict_split_probs(path, *args, **kwargs) for path in checkpoint_paths], axis=0)


def out_of_fold_probs(
    checkpoint_paths: Sequence[str | os.PathLike],
    data_dir: str | os.PathLike,
    tta: str,
    crop_fraction: float = 0.75,
    batch_size: int = 16,
) -> tuple[list[str], np.ndarray]:
    """Out-of-fold image probabilities: each fold model predicts the training fold it was validated on.

    Returns:
        (IDs, (N, 19) probabilities), the folds one after another.

    Raises:
        ValueError: two checkpoints of one validation fold, or a run of another fold count.
    """
    folds = {}
    for path in checkpoint_paths:
        hparams = read_checkpoint_hparams(path)
        fold, n_splits = int(hparams.get("val_fold", 0)), int(hparams.get("n_splits", N_FOLDS))
        if fold in folds:
            raise ValueError(f"{path}: validation fold {fold} is also that of {folds[fold][0]}")
        folds[fold] = (path, n_splits)
    ids, probs = [], []
    for fold, (path, n_splits) in sorted(folds.items()):
        fold_ids = split_image_ids(data_dir, "train", fold, n_splits)
        ids += fold_ids
        probs.append(predict_split_probs(path, data_dir, "train", fold_ids, tta, crop_fraction, batch_size))
    return ids, np.concatenate(probs)
