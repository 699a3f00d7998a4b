"""Class maps from a stage-2 segmentation checkpoint, in place of CAMs.

A :class:`SegmentationSource` gives no image probabilities, so it joins with ``how_join: cam`` only (the
probabilities come from classifiers joined on ``both`` or ``pred``). Its maps are the sigmoid maps of the 19
classes minus the background's, clipped at 0, averaged over flips (and scales), each class divided by its maximum
like a CAM; or, as ``map_kind='logit'`` (``conf_how: cell_logit``), the 19 classes' signed per-pixel logits.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from src.cam.map_source import CheckpointSpec, MapSource
from src.data.classes import NUM_CLASSES
from src.models.factory import is_segmentation_run
from src.models.unet import OUTPUT_STRIDE, segmentation_maps


class SegmentationSource(MapSource):
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
        super().__init__(spec, device)

    def check_run(self, spec: CheckpointSpec, hparams: dict[str, Any]) -> None:
        if not is_segmentation_run(hparams):
            raise ValueError(f"{spec.path}: not a segmentation checkpoint (no segm_label_dir in its hparams)")

    def rescale(self, images: torch.Tensor, scale: float) -> torch.Tensor:
        """Scaled sides round to a multiple of 32 (the U-Net's output stride)."""
        side = [max(OUTPUT_STRIDE, round(s * scale / OUTPUT_STRIDE) * OUTPUT_STRIDE) for s in images.shape[2:]]
        if list(images.shape[2:]) == side:
            return images
        return F.interpolate(images, size=side, mode="bilinear", align_corners=False)

    def forward_view(self, images: torch.Tensor, map_kind: str) -> tuple[None, torch.Tensor]:
        """Normalised (N, C, H, W), H and W multiples of 32 -> (None, (N, 19, H, W) maps); segmentation maps are
        >= 0, so the ReLU of 'cam' maps changes nothing."""
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            logits = self.network(images)["logits"]
        return None, segmentation_maps(logits) if map_kind == "cam" else logits[:, :NUM_CLASSES].float()
