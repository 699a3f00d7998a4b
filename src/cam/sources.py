"""Image probabilities and class maps from trained checkpoints, with flip/scale TTA.

A *source* wraps one checkpoint. Classifiers give sigmoid probabilities and CAMs
(ReLU of the 19-class 1x1 head applied to the feature map, from the model's
``forward_features`` + ``cam`` seam); ``--cam_method gradcam`` weights the feature
map of a chosen layer by the gradient of each class logit instead (Grad-CAM).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from src.data.classes import NUM_CLASSES
from src.models.preprocess import normalize_images
from src.training.lit_model import LitModel, load_trained_pl_model, read_checkpoint_hparams

logger = logging.getLogger(__name__)

HOW_JOINS = ("both", "cam", "pred")
CAM_METHODS = ("cam", "gradcam")
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
        if not os.path.isfile(str(path)):
            raise FileNotFoundError(f"ckpt_paths[{index}]: checkpoint not found: {path}")
        return cls(how_join, weight, str(path))


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


class ClassifierSource:
    """CAMs and probabilities of one classification checkpoint.

    Args:
        spec: the ``ckpt_paths`` entry.
        device: torch device.
        cam_method: 'cam' or 'gradcam'.
        gradcam_layer: dotted module name inside the network for Grad-CAM ('' = the backbone's output).
    """

    def __init__(self, spec: CheckpointSpec, device: torch.device, cam_method: str = "cam", gradcam_layer: str = ""):
        if cam_method not in CAM_METHODS:
            raise ValueError(f"cam_method must be one of {CAM_METHODS}, got {cam_method!r}")
        model, hparams = load_trained_pl_model(LitModel, spec.path)
        num_classes = int(hparams.get("num_classes", NUM_CLASSES))
        if num_classes != NUM_CLASSES:
            raise ValueError(f"{spec.path}: checkpoint has {num_classes} classes, inference needs {NUM_CLASSES}")
        if hparams.get("segm_label_dir"):
            raise ValueError(
                f"{spec.path}: a segmentation checkpoint cannot be used as a classifier "
                "(load_sources gives it a SegmentationSource; join it with how_join 'cam')"
            )
        self.spec = spec
        self.network: nn.Module = model.network.to(device).eval()
        self.device = device
        self.input_size = int(hparams.get("input_size", 512))
        self.in_chans = int(hparams.get("num_inchannels", 4))
        self.cam_method = cam_method
        self.gradcam_module = self._find_layer(gradcam_layer) if cam_method == "gradcam" else None

    def _find_layer(self, name: str) -> nn.Module | None:
        if not name:
            return None
        modules = dict(self.network.named_modules())
        if name not in modules:
            close = [n for n in modules if n.endswith(name.split(".")[-1])][:8]
            raise ValueError(f"{self.spec.path}: no layer {name!r} for Grad-CAM; layers like it: {close}")
        return modules[name]

    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised (N, C, H, W) -> (probabilities (N, 19), unnormalised maps (N, 19, h, w)): the signed
        logit maps for ``cam``, the (non-negative) Grad-CAM maps for ``gradcam``."""
        if self.cam_method == "cam":
            with torch.inference_mode(), torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
                features = self.network.forward_features(images)
                logits = self.network.head(features)["logits"]
                maps = self.network.logit_map(features)
            return torch.sigmoid(logits.float()), maps.float()
        return self._gradcam(images)

    def _gradcam(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured: list[torch.Tensor] = []
        handle = None
        if self.gradcam_module is not None:
            handle = self.gradcam_module.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            with torch.enable_grad():
                features = self.network.forward_features(images)
                activations = captured[-1] if captured else features
                logits = self.network.head(features)["logits"]
                grads = [
                    torch.autograd.grad(logits[:, c].sum(), activations, retain_graph=True)[0]
                    for c in range(logits.shape[1])
                ]
                weights = torch.stack([g.mean(dim=(2, 3)) for g in grads], dim=1)  # (N, 19, C)
                cams = F.relu(torch.einsum("nkc,nchw->nkhw", weights, activations.detach()))
        finally:
            if handle is not None:
                handle.remove()
        return torch.sigmoid(logits.detach().float()), cams.float()

    def predict(
        self,
        images: torch.Tensor,
        cam_size: tuple[int, int],
        flips: bool,
        scales: Sequence[float],
        map_kind: str = "cam",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """TTA-averaged probabilities (N, 19) and maps (N, 19, *cam_size).

        Args:
            images: uint8 (N, 4, S, S) at this checkpoint's input size, RGBY.
            cam_size: (h, w) of the returned maps.
            flips: add horizontal and vertical flips.
            scales: input scale factors (1.0 = the training input size).
            map_kind: 'cam' (ReLU, each map divided by its maximum) or 'logit' (signed logit maps, ``cam_method``
                'cam' only).
        """
        check_map_kind(map_kind)
        if map_kind == "logit" and self.cam_method != "cam":
            raise ValueError(f"{self.spec.path}: logit maps need cam_method 'cam', not {self.cam_method!r}")
        images = images.to(self.device, non_blocking=True)[:, : self.in_chans]
        images = normalize_images(images)
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        probs_sum = torch.zeros(images.shape[0], NUM_CLASSES, device=self.device)
        cams_sum = torch.zeros(images.shape[0], NUM_CLASSES, *cam_size, device=self.device)
        views = 0
        for scale in scales:
            scaled = (
                images
                if scale == 1.0
                else F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)
            )
            for dims in tta_views(flips):
                view = scaled.flip(dims) if dims else scaled
                probs, cams = self._forward(view)
                if dims:
                    cams = cams.flip(dims)
                cams = F.interpolate(cams, size=cam_size, mode="bilinear", align_corners=False)
                probs_sum += probs
                cams_sum += view_maps(cams, map_kind)
                views += 1
        return (probs_sum / views).cpu(), (cams_sum / views).cpu()


def load_sources(
    specs: Sequence[CheckpointSpec], device: torch.device, cam_method: str = "cam", gradcam_layer: str = ""
) -> list:
    """Load every checkpoint; each error names the file.

    A stage-2 segmentation checkpoint (``segm_label_dir`` in its hparams) becomes a
    :class:`src.cam.segm_source.SegmentationSource` (how_join 'cam' only), any other a
    :class:`ClassifierSource`.
    """
    from src.cam.segm_source import SegmentationSource, is_segmentation_run  # it imports this module

    return [
        SegmentationSource(spec, device)
        if is_segmentation_run(read_checkpoint_hparams(spec.path))
        else ClassifierSource(spec, device, cam_method, gradcam_layer)
        for spec in specs
    ]


def join_sources(
    outputs: Sequence[tuple[CheckpointSpec, torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Weighted averages: probabilities over 'both'/'pred' sources, CAMs over 'both'/'cam' sources.

    Args:
        outputs: (spec, probabilities (N, 19), cams (N, 19, h, w)) per source.

    Returns:
        (probabilities or None when no source predicts them, cams).
    """
    prob_parts = [(s.weight, p) for s, p, _ in outputs if s.how_join in ("both", "pred")]
    cam_parts = [(s.weight, c) for s, _, c in outputs if s.how_join in ("both", "cam")]
    if not cam_parts:
        raise ValueError("no checkpoint gives CAMs: at least one ckpt_paths entry must join 'both' or 'cam'")
    cams = sum(w * c for w, c in cam_parts) / sum(w for w, _ in cam_parts)
    probs = sum(w * p for w, p in prob_parts) / sum(w for w, _ in prob_parts) if prob_parts else None
    return probs, cams
