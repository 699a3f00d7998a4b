"""Cell embeddings from a crop store: a trained backbone's pooled features, or CellProfiler-style hand-crafted ones.

Any run's checkpoint serves (self-supervised, cell classifier, image classifier): every network here has a timm
``backbone`` whose ``forward_features`` map is averaged into one vector per cell. ``random:NAME[:KWARGS]`` gives a
randomly initialised backbone, the baseline every learned embedding must beat.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import torch
from skimage.measure import label, regionprops
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from src.crops.dataset import UnlabelledCropDataset
from src.crops.store import read_manifest
from src.models.backbone import create_backbone, parse_timm_kwargs
from src.models.preprocess import normalize_images
from src.training.checkpoints import load_trained_pl_model
from src.training.lit_model import LitModel

HANDCRAFTED = "handcrafted"
RANDOM_PREFIX = "random:"
PERCENTILES = (10, 50, 90)


def load_encoder(spec: str, in_chans: int, seed: int = 0) -> nn.Module:
    """The backbone a ``--model`` spec names: a checkpoint path, or ``random:NAME[:JSON kwargs]``.

    Raises:
        ValueError: a network without a timm backbone, or one that takes another number of channels than the crops.
    """
    if spec.startswith(RANDOM_PREFIX):
        name, _, kwargs = spec[len(RANDOM_PREFIX) :].partition(":")
        torch.manual_seed(seed)
        return create_backbone(name, in_chans, parse_timm_kwargs(kwargs or "{}")).eval()
    model, hparams = load_trained_pl_model(LitModel, spec)
    backbone = getattr(model.network, "backbone", None)
    if backbone is None or not hasattr(backbone, "forward_features"):
        raise ValueError(f"{spec}: its network has no timm backbone to embed cells with")
    have = int(hparams.get("num_inchannels", 4))
    if have != in_chans:
        raise ValueError(f"{spec}: the network takes {have} channels, the crops have {in_chans}")
    return backbone.eval()


@torch.no_grad()
def cell_embeddings(
    encoder: nn.Module, crop_dir: str | os.PathLike, index: pd.DataFrame, batch_size: int = 256, num_workers: int = 0
) -> np.ndarray:
    """(N, F) float32 embeddings of the cells of ``index`` (columns ID, row, split), in its order."""
    device = next(encoder.parameters()).device
    loader = DataLoader(UnlabelledCropDataset(crop_dir, index), batch_size=batch_size, num_workers=num_workers)
    chunks = []
    for batch in tqdm(loader, desc="embeddings", unit="batch", disable=None):
        features = encoder.forward_features(normalize_images(batch["image"].to(device)))
        chunks.append(features.float().mean(dim=(2, 3)).cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)


def _cell_region(crop: np.ndarray, channels: int) -> np.ndarray:
    """(S, S) bool cell pixels: the mask channel of a 'channel' store, else the non-zero pixels of a 'zero' one."""
    if channels == 5:
        return crop[..., 4] > 127
    return crop[..., :4].max(axis=-1) > 0


def handcrafted_features(crop_dir: str | os.PathLike, index: pd.DataFrame) -> np.ndarray:
    """(N, D) CellProfiler-style features of every cell: per stain the mean, spread, percentiles and mean gradient
    inside the cell, and the cell's area, eccentricity and solidity in the crop.

    Raises:
        ValueError: a store cut with ``--crop_mask none``, where a crop does not say which pixels are the cell.
    """
    manifest = read_manifest(crop_dir)
    if manifest["crop_mask"] == "none":
        raise ValueError(f"{crop_dir}: hand-crafted features need crops cut with --crop_mask zero or channel")
    channels = int(manifest["channels"])
    dataset = UnlabelledCropDataset(crop_dir, index)
    rows = []
    for i in tqdm(range(len(dataset)), desc="hand-crafted", unit="cell", disable=None):
        crop = dataset[i]["image"].numpy().transpose(1, 2, 0)
        region = _cell_region(crop, channels)
        if not region.any():
            region = np.ones(region.shape, dtype=bool)
        stains = crop[..., :4].astype(np.float32)
        inside = stains[region]
        gradient = np.stack([np.hypot(*np.gradient(stains[..., c]))[region].mean() for c in range(4)])
        props = max(regionprops(label(region)), key=lambda p: p.area)
        rows.append(
            np.concatenate(
                [
                    inside.mean(axis=0),
                    inside.std(axis=0),
                    np.percentile(inside, PERCENTILES, axis=0).ravel(),
                    gradient,
                    [region.mean(), props.eccentricity, props.solidity],
                ]
            )
        )
    return np.asarray(rows, dtype=np.float32)


def spec_fingerprint(spec: str, crop_dir: str | os.PathLike) -> str:
    """What an embedding file was made from (the spec, its file's size and time, the store's manifest)."""
    stat = os.stat(spec) if os.path.isfile(spec) else None
    source = [spec, stat.st_size if stat else None, stat.st_mtime_ns if stat else None]
    return json.dumps([source, read_manifest(crop_dir)], sort_keys=True)
