"""One factory for every image classifier: a timm backbone plus 1x1 heads that give class activation maps.

The classifier exposes the seam CAM inference needs: ``forward_features`` (the pre-pool feature
map), ``get_classifier`` (the 19-class 1x1 head) and ``cam`` (ReLU of the head applied to the
feature map). For SC-CAM round >= 1 a second 1x1 head scores the 19*k sub-categories.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from src.data.classes import NUM_CLASSES

logger = logging.getLogger(__name__)


def check_model_name(name: str) -> None:
    """Raise ValueError naming close valid timm names when ``name`` is not a timm architecture."""
    names = timm.list_models()
    if name in names:
        return
    close = difflib.get_close_matches(name, names, n=8, cutoff=0.6)
    if not close:
        close = [n for n in names if n.startswith(name.split("_")[0])][:8]
    hint = f"; close names: {', '.join(close)}" if close else ""
    raise ValueError(f"unknown timm model name {name!r} ({len(names)} names in timm.list_models()){hint}")


def parse_timm_kwargs(text: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Extra ``timm.create_model`` keyword arguments from a JSON object string (``'{"output_stride": 16}'``).

    Raises:
        ValueError: not a JSON object, or a key the factory sets itself.
    """
    if not text:
        return {}
    if isinstance(text, Mapping):
        kwargs = dict(text)
    else:
        try:
            kwargs = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"--timm_kwargs {text!r} is not JSON: {error}") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"--timm_kwargs must be a JSON object such as '{{\"output_stride\": 16}}', got {text!r}")
    reserved = sorted(set(kwargs) & {"pretrained", "num_classes", "global_pool", "in_chans", "features_only"})
    if reserved:
        raise ValueError(f"--timm_kwargs may not set {reserved}: the factory sets them")
    return kwargs


def create_backbone(name: str, in_chans: int = 4, timm_kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """A timm backbone without pooling and classifier: ``forward_features`` gives (N, C, h, w).

    Args:
        name: timm architecture name.
        in_chans: input channels.
        timm_kwargs: extra ``timm.create_model`` arguments, e.g. ``{"output_stride": 16}`` for a finer
            feature map (finer CAMs) or ``{"channels": [32, 64, 128, 256]}`` for a narrower ResNet.

    Raises:
        ValueError: unknown name, arguments the architecture does not take, or an architecture whose
            features are not a spatial map (e.g. ViT tokens).
    """
    check_model_name(name)
    try:
        backbone = timm.create_model(
            name, pretrained=False, num_classes=0, global_pool="", in_chans=in_chans, **(timm_kwargs or {})
        )
    except TypeError as error:
        raise ValueError(
            f"timm model {name!r} does not take --timm_kwargs {dict(timm_kwargs or {})}: {error}"
        ) from None
    if not hasattr(backbone, "num_features"):
        raise ValueError(f"timm model {name!r} does not report num_features; it cannot feed a CAM head")
    return backbone


class HPAClassifier(nn.Module):
    """Multi-label image classifier with CAM-ready 1x1 heads.

    Args:
        backbone: module whose ``forward_features`` maps (N, in_chans, H, W) to (N, C, h, w).
        num_features: C.
        num_classes: parent classes (19).
        num_sub_classes: SC-CAM sub-categories (19 * k) or 0 for no sub head.
    """

    def __init__(
        self, backbone: nn.Module, num_features: int, num_classes: int = NUM_CLASSES, num_sub_classes: int = 0
    ):
        super().__init__()
        self.backbone = backbone
        self.num_features = num_features
        self.num_classes = num_classes
        self.num_sub_classes = num_sub_classes
        self.classifier = nn.Conv2d(num_features, num_classes, kernel_size=1, bias=False)
        self.sub_classifier = (
            nn.Conv2d(num_features, num_sub_classes, kernel_size=1, bias=False) if num_sub_classes > 0 else None
        )

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) normalised images -> (N, C, h, w) feature map."""
        features = self.backbone.forward_features(images)
        if features.ndim != 4:
            raise ValueError(
                f"{type(self.backbone).__name__}.forward_features gave shape {tuple(features.shape)}, "
                "not a (N, C, h, w) map: this backbone cannot give CAMs"
            )
        return features

    def get_classifier(self) -> nn.Conv2d:
        """The 19-class 1x1 head; its weight is (19, C, 1, 1)."""
        return self.classifier

    def head(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits from a feature map: GAP then the 1x1 heads.

        Args:
            features: (N, C, h, w).

        Returns:
            ``logits`` (N, 19), ``sub_logits`` (N, 19k) when there is a sub head, and ``features``.
        """
        pooled = features.mean(dim=(2, 3), keepdim=True)
        outputs = {"logits": self.classifier(pooled).flatten(1), "features": features}
        if self.sub_classifier is not None:
            outputs["sub_logits"] = self.sub_classifier(pooled).flatten(1)
        return outputs

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, in_chans, H, W) -> dict with ``logits`` (N, 19), ``features`` (N, C, h, w), maybe ``sub_logits``."""
        return self.head(self.forward_features(images))

    def logit_map(self, features: torch.Tensor) -> torch.Tensor:
        """Signed class maps: classifier weights . features, (N, C, h, w) -> (N, 19, h, w).

        The head is linear and applied after global average pooling, so the mean of a class's map over
        any region is the logit the classifier gives that region's mean feature.
        """
        return F.conv2d(features, self.classifier.weight)

    def cam(self, features: torch.Tensor) -> torch.Tensor:
        """Class activation maps: ReLU(classifier weights . features), (N, C, h, w) -> (N, 19, h, w), unnormalised."""
        return F.relu(self.logit_map(features))


def create_classifier(
    name: str,
    in_chans: int = 4,
    num_classes: int = NUM_CLASSES,
    num_sub_classes: int = 0,
    backbone_ckpt: str | os.PathLike | None = None,
    timm_kwargs: Mapping[str, Any] | None = None,
) -> HPAClassifier:
    """Build an :class:`HPAClassifier` over ``timm.create_model(name, pretrained=False, ...)``.

    Args:
        name: timm architecture name (``resnet50``, ``test_resnet``...).
        in_chans: 3 (RGB) or 4 (RGBY).
        num_classes: parent classes.
        num_sub_classes: sub-category head size (19 * k) or 0.
        backbone_ckpt: optional local timm/torchvision state dict for the backbone; None starts from scratch.
        timm_kwargs: extra ``timm.create_model`` arguments (see :func:`create_backbone`).
    """
    if in_chans not in (3, 4):
        raise ValueError(f"in_chans must be 3 or 4, got {in_chans}")
    backbone = create_backbone(name, in_chans, timm_kwargs)
    if backbone_ckpt is not None:
        load_backbone_weights(backbone, backbone_ckpt, name)
    return HPAClassifier(backbone, backbone.num_features, num_classes, num_sub_classes)


def build_network(hparams: Mapping[str, Any]) -> nn.Module:
    """The network a run's hyperparameters describe (what ``run_classification.py`` trains).

    Reads ``timm_model_name``, ``timm_kwargs``, ``num_inchannels``, ``num_classes``, ``round_nb``, ``k_cluster``; never loads
    ``backbone_ckpt`` (a checkpoint's own weights replace it). A run with ``segm_label_dir`` (stage 2)
    gets the U-Net of :func:`src.segmentation.network.create_segmentation_network`.
    """
    timm_kwargs = parse_timm_kwargs(hparams.get("timm_kwargs"))
    if hparams.get("segm_label_dir"):
        from src.segmentation.network import (  # stage 2 imports this module
            DECODER_CHANNELS,
            create_segmentation_network,
            parse_decoder_channels,
        )

        return create_segmentation_network(
            hparams["timm_model_name"],
            int(hparams.get("num_inchannels", 4)),
            timm_kwargs=timm_kwargs,
            decoder_channels=parse_decoder_channels(hparams.get("decoder_channels", DECODER_CHANNELS)),
        )
    round_nb = int(hparams.get("round_nb", 0))
    num_classes = int(hparams.get("num_classes", NUM_CLASSES))
    num_sub = num_classes * int(hparams["k_cluster"]) if round_nb > 0 else 0
    return create_classifier(
        hparams["timm_model_name"],
        int(hparams.get("num_inchannels", 4)),
        num_classes,
        num_sub_classes=num_sub,
        timm_kwargs=timm_kwargs,
    )


def _unwrap_state_dict(checkpoint: Any, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(checkpoint, Mapping) and key in checkpoint and isinstance(checkpoint[key], Mapping):
            checkpoint = checkpoint[key]
    if not isinstance(checkpoint, Mapping) or not all(torch.is_tensor(v) for v in checkpoint.values()):
        raise ValueError(f"{path}: not a state dict of tensors (keys: {list(checkpoint)[:5]})")
    state = dict(checkpoint)
    for prefix in ("module.", "model.", "network.backbone.", "backbone."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def adapt_first_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt a (O, I, kh, kw) first-convolution weight to ``in_chans`` inputs.

    4 from 3: the yellow input copies the red input's weights; 3 from 4: yellow is dropped;
    1 input: the sum over inputs.
    """
    have = weight.shape[1]
    if have == in_chans:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    if in_chans < have:
        return weight[:, :in_chans].clone()
    extra = [weight[:, i % have : i % have + 1] for i in range(have, in_chans)]
    return torch.cat([weight, *extra], dim=1)


def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike, name: str = "") -> None:
    """Load a local timm or torchvision state dict into a timm backbone (no network access).

    The classifier weights of the file are dropped and the first convolution is adapted to the
    backbone's input channels. Every other backbone tensor must be present with the same shape.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a state dict, or backbone tensors are missing or differ in shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone checkpoint not found: {path}")
    state = _unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True), path)
    cfg = getattr(backbone, "pretrained_cfg", {}) or {}
    first_conv = cfg.get("first_conv")
    first_convs = [first_conv] if isinstance(first_conv, str) else list(first_conv or [])
    for conv in first_convs:
        key = f"{conv}.weight"
        if key in state and key in backbone.state_dict():
            state[key] = adapt_first_conv(state[key], backbone.state_dict()[key].shape[1])
    classifiers = cfg.get("classifier")
    classifiers = [classifiers] if isinstance(classifiers, str) else list(classifiers or [])
    state = {k: v for k, v in state.items() if not any(k.startswith(f"{c}.") for c in classifiers)}
    own = backbone.state_dict()
    for key in own:  # older torchvision files lack the BatchNorm counters
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = own[key]
    missing = [k for k in own if k not in state]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or mismatched:
        detail = "; ".join(
            part
            for part in (
                f"{len(missing)} missing tensor(s), e.g. {', '.join(missing[:4])}" if missing else "",
                f"{len(mismatched)} shape mismatch(es), e.g. {', '.join(mismatched[:3])}" if mismatched else "",
            )
            if part
        )
        raise ValueError(f"{path} does not fit timm backbone {name or type(backbone).__name__}: {detail}")
    unused = [k for k in state if k not in own]
    backbone.load_state_dict({k: state[k] for k in own}, strict=True)
    logger.info("loaded backbone weights from %s (%d tensors, %d unused)", path, len(own), len(unused))
