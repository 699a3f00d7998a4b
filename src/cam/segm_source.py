"""Class maps from a stage-2 segmentation checkpoint, in place of CAMs.

A :class:`SegmentationSource` has the ``predict`` contract of
:class:`src.cam.sources.ClassifierSource`; it gives no image probabilities, so it joins with
``how_join: cam`` only (the probabilities come from classifiers joined on ``both`` or ``pred``).
Its maps are the sigmoid maps of the 19 classes minus the background's, clipped at 0, averaged
over flips (and scales), each class divided by its maximum like a CAM; or, as ``map_kind='logit'``
(``conf_how: cell_logit``), the 19 classes' signed per-pixel logits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from src.cam.sources import CheckpointSpec, check_map_kind, tta_views, view_maps
from src.data.classes import NUM_CLASSES
from src.models.preprocess import normalize_images
from src.segmentation.network import OUTPUT_STRIDE, segmentation_maps
from src.training.lit_model import LitModel, load_trained_pl_model

logger = logging.getLogger(__name__)


def is_segmentation_run(hparams: dict) -> bool:
    """Whether a run's hyperparameters describe a stage-2 segmentation model."""
    return bool(hparams.get("segm_label_dir"))


class SegmentationSource:
    """Per-class maps of one segmentation checkpoint.

    Args:
        spec: the ``ckpt_paths`` entry; its how_join must be 'cam'.
        device: torch device.

    Raises:
        ValueError: how_join other than 'cam', or a checkpoint that is not a segmentation run.
    """

    def __init__(self, spec: CheckpointSpec, device: torch.device):
        if spec.how_join != "cam":
            raise ValueError(
                f"{spec.path}: a segmentation checkpoint gives no image probabilities; "
                f"join it with how_join 'cam', not {spec.how_join!r}"
            )
        model, hparams = load_trained_pl_model(LitModel, spec.path)
        if not is_segmentation_run(hparams):
            raise ValueError(f"{spec.path}: not a segmentation checkpoint (no segm_label_dir in its hparams)")
        self.spec = spec
        self.network: nn.Module = model.network.to(device).eval()
        self.device = device
        self.input_size = int(hparams.get("input_size", 512))
        self.in_chans = int(hparams.get("num_inchannels", 4))

    def _forward(self, images: torch.Tensor, map_kind: str) -> torch.Tensor:
        """Normalised (N, C, H, W), H and W multiples of 32 -> (N, 19, H, W) maps."""
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            logits = self.network(images)["logits"]
        return segmentation_maps(logits) if map_kind == "cam" else logits[:, :NUM_CLASSES].float()

    def predict(
        self,
        images: torch.Tensor,
        cam_size: tuple[int, int],
        flips: bool,
        scales: Sequence[float],
        map_kind: str = "cam",
    ) -> tuple[None, torch.Tensor]:
        """No probabilities, and TTA-averaged maps (N, 19, *cam_size).

        Args:
            images: uint8 (N, 4, S, S) at this checkpoint's input size, RGBY.
            cam_size: (h, w) of the returned maps.
            flips: add horizontal and vertical flips.
            scales: input scale factors (1.0 = the training input size); scaled sides round to a multiple of 32.
            map_kind: 'cam' (per-class-normalised maps) or 'logit' (signed per-pixel class logits).
        """
        check_map_kind(map_kind)
        images = images.to(self.device, non_blocking=True)[:, : self.in_chans]
        images = normalize_images(images)
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        maps_sum = torch.zeros(images.shape[0], NUM_CLASSES, *cam_size, device=self.device)
        views = 0
        for scale in scales:
            side = [max(OUTPUT_STRIDE, round(s * scale / OUTPUT_STRIDE) * OUTPUT_STRIDE) for s in images.shape[2:]]
            scaled = (
                images
                if list(images.shape[2:]) == side
                else F.interpolate(images, size=side, mode="bilinear", align_corners=False)
            )
            for dims in tta_views(flips):
                view = scaled.flip(dims) if dims else scaled
                maps = self._forward(view, map_kind)
                if dims:
                    maps = maps.flip(dims)
                maps = F.interpolate(maps, size=cam_size, mode="bilinear", align_corners=False)
                maps_sum += view_maps(maps, map_kind)  # segmentation maps are >= 0: the ReLU changes nothing
                views += 1
        return None, (maps_sum / views).cpu()
