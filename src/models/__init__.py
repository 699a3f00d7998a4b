"""Networks: timm backbones, the CAM classifier, the stage-2 U-Net, their losses and the one factory over them."""

from src.models.classifier import HPAClassifier, create_classifier
from src.models.factory import build_criterion, build_network, is_segmentation_run
from src.models.losses import sigmoid_focal_loss, soft_f1_loss

__all__ = [
    "HPAClassifier",
    "build_criterion",
    "build_network",
    "create_classifier",
    "is_segmentation_run",
    "sigmoid_focal_loss",
    "soft_f1_loss",
]
