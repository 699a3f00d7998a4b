"""The image classifier: a timm backbone plus 1x1 heads that give class activation maps.

The classifier exposes the seam CAM inference needs: ``forward_features`` (the pre-pool feature
map), ``get_classifier`` (the 19-class 1x1 head) and ``cam`` (ReLU of the head applied to the
feature map). For SC-CAM round >= 1 a second 1x1 head scores the 19*k sub-categories.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from src.data.classes import NUM_CLASSES
from src.models.backbone import create_backbone, load_backbone_weights


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
