"""Global-average-pooled backbone features of every training image (one view per image)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from src.models.preprocess import normalize_images


@torch.no_grad()
def extract_features(
    network: nn.Module, loader: DataLoader, device: str | torch.device = "cpu"
) -> tuple[list[str], np.ndarray]:
    """GAP of ``network.forward_features`` over every batch of ``loader``.

    Args:
        network: has ``forward_features`` mapping (N, C, H, W) to (N, F, h, w).
        loader: yields dicts with ``image`` uint8 (N, C, H, W) and ``id``.

    Returns:
        IDs in loader order and (N, F) float32 features.
    """
    network = network.to(device).eval()
    ids: list[str] = []
    chunks = []
    for batch in tqdm(loader, desc="features", unit="batch"):
        images = normalize_images(batch["image"].to(device, non_blocking=True))
        chunks.append(network.forward_features(images).float().mean(dim=(2, 3)).cpu().numpy())
        ids.extend(batch["id"])
    return ids, np.concatenate(chunks).astype(np.float32)
