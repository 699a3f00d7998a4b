"""What every map source shares: ``ckpt_paths`` entries, map kinds and the one TTA loop.

A *map source* wraps one checkpoint and gives, for a batch of images, TTA-averaged image probabilities (or None)
and per-class maps. :class:`MapSource` owns checkpoint loading, input preparation and the TTA loop (scales x
flips, each flipped view flipped back before averaging); a subclass supplies only its forward pass and how it
rescales an input.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from src.data.classes import NUM_CLASSES
from src.models.preprocess import normalize_images
from src.training.checkpoints import load_trained_pl_model
from src.training.lit_model import LitModel
from src.training.model_zoo import resolve_zoo_member

HOW_JOINS = ("both", "cam", "pred", "cell")  # cell: a cell classifier on crops (src/cam/cell_source.py)
MAP_KINDS = ("cam", "logit")  # cam: ReLU'd and divided by each map's maximum; logit: signed, as the head gives it


@dataclass(frozen=True)
class CheckpointSpec:
    """One ``ckpt_paths`` entry: how to join it, its weight and its path."""

    how_join: str
    weight: float
    path: str

    @classmethod
    def parse(cls, entry: object, index: int) -> CheckpointSpec:
        if not isinstance(entry, (list, tuple)) or len(entry) != 3:
            raise ValueError(f"ckpt_paths[{index}] must be [how_join, weight, path], got {entry!r}")
        how_join, weight, path = entry
        if how_join not in HOW_JOINS:
            raise ValueError(f"ckpt_paths[{index}]: how_join must be one of {HOW_JOINS}, got {how_join!r}")
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise ValueError(f"ckpt_paths[{index}]: weight {weight!r} is not a number") from None
        if weight <= 0:
            raise ValueError(f"ckpt_paths[{index}]: weight must be > 0, got {weight}")
        path = resolve_zoo_member(str(path))  # ZOO.safetensors#member: unpacked once, then an ordinary checkpoint
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ckpt_paths[{index}]: checkpoint not found: {path}")
        return cls(how_join, weight, path)


def tta_views(flips: bool) -> list[tuple[int, ...]]:
    """Spatial dims to flip for each view of (N, C, H, W) images: identity, horizontal, vertical."""
    return [(), (3,), (2,)] if flips else [()]


def normalise_per_class(cams: torch.Tensor) -> torch.Tensor:
    """Divide each (N, C) map of (N, C, h, w) by its own maximum (+1e-5)."""
    return cams / (cams.amax(dim=(2, 3), keepdim=True) + 1e-5)


def check_map_kind(map_kind: str) -> None:
    if map_kind not in MAP_KINDS:
        raise ValueError(f"map_kind must be one of {MAP_KINDS}, got {map_kind!r}")


def view_maps(maps: torch.Tensor, map_kind: str) -> torch.Tensor:
    """One TTA view's (N, 19, h, w) maps as they are averaged: 'cam' ReLU'd and divided by each map's maximum,
    'logit' as they are."""
    return normalise_per_class(F.relu(maps)) if map_kind == "cam" else maps


class MapSource:
    """Base of the map sources: loads the checkpoint and runs the TTA loop.

    Args:
        spec: the ``ckpt_paths`` entry.
        device: torch device.

    Subclasses implement :meth:`forward_view` and :meth:`rescale`, and may check the run in :meth:`check_run`.
    """

    def __init__(self, spec: CheckpointSpec, device: torch.device):
        model, hparams = load_trained_pl_model(LitModel, spec.path)
        self.check_run(spec, hparams)
        self.spec = spec
        self.network: nn.Module = model.network.to(device).eval()
        self.device = device
        self.input_size = int(hparams.get("input_size", 512))
        self.in_chans = int(hparams.get("num_inchannels", 4))

    def check_run(self, spec: CheckpointSpec, hparams: dict[str, Any]) -> None:
        """Raise ValueError naming ``spec.path`` when the run cannot be this kind of source."""

    def check_request(self, map_kind: str) -> None:
        """Raise ValueError when this source cannot give ``map_kind`` maps."""
        check_map_kind(map_kind)

    def forward_view(self, images: torch.Tensor, map_kind: str) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Normalised (N, C, H, W) -> (probabilities (N, 19) or None, unnormalised maps (N, 19, h, w))."""
        raise NotImplementedError

    def rescale(self, images: torch.Tensor, scale: float) -> torch.Tensor:
        """(N, C, H, W) images at ``scale`` times their size (1.0: unchanged)."""
        raise NotImplementedError

    def predict(
        self,
        images: torch.Tensor,
        cam_size: tuple[int, int],
        flips: bool,
        scales: Sequence[float],
        map_kind: str = "cam",
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """TTA-averaged probabilities (N, 19) or None, and maps (N, 19, *cam_size).

        Every view's maps are flipped back, resized to ``cam_size`` (bilinear), made 'cam' or 'logit' maps
        (:func:`view_maps`) and averaged with equal weight over scales x flips; so are the probabilities.

        Args:
            images: uint8 (N, 4, S, S) at this checkpoint's input size, RGBY.
            cam_size: (h, w) of the returned maps.
            flips: add horizontal and vertical flips.
            scales: input scale factors (1.0 = the training input size).
            map_kind: 'cam' (ReLU, each map divided by its maximum) or 'logit' (signed logit maps).
        """
        self.check_request(map_kind)
        images = images.to(self.device, non_blocking=True)[:, : self.in_chans]
        images = normalize_images(images)
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        probs_sum: torch.Tensor | None = None
        maps_sum = torch.zeros(images.shape[0], NUM_CLASSES, *cam_size, device=self.device)
        views = 0
        for scale in scales:
            scaled = self.rescale(images, scale)
            for dims in tta_views(flips):
                view = scaled.flip(dims) if dims else scaled
                probs, maps = self.forward_view(view, map_kind)
                if dims:
                    maps = maps.flip(dims)
                maps = F.interpolate(maps, size=cam_size, mode="bilinear", align_corners=False)
                if probs is not None:
                    probs_sum = probs if probs_sum is None else probs_sum + probs
                maps_sum += view_maps(maps, map_kind)
                views += 1
        probs_mean = None if probs_sum is None else (probs_sum / views).cpu()
        return probs_mean, (maps_sum / views).cpu()
