"""Networks: the timm classifier factory with CAM heads, and the training losses."""

from src.models.factory import HPAClassifier, build_network, check_model_name, create_classifier
from src.models.losses import build_criterion, sigmoid_focal_loss, soft_f1_loss

__all__ = [
    "HPAClassifier",
    "build_criterion",
    "build_network",
    "check_model_name",
    "create_classifier",
    "sigmoid_focal_loss",
    "soft_f1_loss",
]
