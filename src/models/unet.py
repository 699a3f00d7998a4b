"""Stage-2 network: a segmentation-models-pytorch U-Net over any timm encoder, per-pixel sigmoid focal.

The network maps normalised (N, C, H, W) images to ``logits`` (N, 20, H, W): the 19 classes and
the background channel. :func:`segmentation_maps` turns them into per-class maps that the per-cell
scoring of CAM inference reads in place of CAMs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import segmentation_models_pytorch as smp
import torch
from torch import nn

from src.data.classes import BACKGROUND, NUM_CLASSES, NUM_SEGM_CHANNELS
from src.models.backbone import check_model_name, load_backbone_weights

logger = logging.getLogger(__name__)

OUTPUT_STRIDE = 32  # U-Net inputs must be a multiple of this
DECODER_CHANNELS = (256, 128, 64, 32, 16)  # smp's default; lighter decoders train several times faster on a CPU


def parse_decoder_channels(text: str | Sequence[int]) -> tuple[int, ...]:
    """Five positive decoder widths from ``'64,32,16,16,16'`` (or a sequence); ValueError naming the flag."""
    try:
        channels = tuple(int(c) for c in (text.split(",") if isinstance(text, str) else text))
    except ValueError:
        raise ValueError(f"--decoder_channels {text!r}: expected five comma-separated integers") from None
    if len(channels) != len(DECODER_CHANNELS) or min(channels) <= 0:
        raise ValueError(f"--decoder_channels {text!r}: expected five positive integers, e.g. 64,32,16,16,16")
    return channels


def encoder_name(timm_model_name: str) -> str:
    """smp's name of a timm encoder: ``tu-{timm name}`` (smp's 'universal' timm encoder)."""
    return f"tu-{timm_model_name}"


def check_input_size(input_size: int, flag: str = "--input_size") -> None:
    """Raise ValueError unless ``input_size`` is a positive multiple of 32 (the U-Net's output stride)."""
    if input_size <= 0 or input_size % OUTPUT_STRIDE:
        raise ValueError(f"{flag} {input_size}: a U-Net needs a positive multiple of {OUTPUT_STRIDE}")


class SegmentationNetwork(nn.Module):
    """U-Net whose output is a dict like the classifiers': ``logits`` (N, 20, H, W).

    Args:
        unet: an ``smp.Unet`` with 20 output channels.
    """

    def __init__(self, unet: smp.Unet):
        super().__init__()
        self.unet = unet

    @property
    def encoder(self) -> nn.Module:
        """The timm feature extractor (``FeatureListNet``) inside smp's universal encoder."""
        return self.unet.encoder.model

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, in_chans, H, W) normalised images, H and W multiples of 32 -> ``logits`` (N, 20, H, W)."""
        return {"logits": self.unet(images)}


def create_segmentation_network(
    timm_model_name: str,
    in_chans: int = 4,
    backbone_ckpt: str | os.PathLike | None = None,
    timm_kwargs: Mapping[str, Any] | None = None,
    decoder_channels: Sequence[int] = DECODER_CHANNELS,
) -> SegmentationNetwork:
    """``smp.Unet(encoder 'tu-{timm_model_name}', encoder_weights=None, in_chans, 20 classes)``; never downloads.

    Args:
        timm_model_name: any timm architecture with ``features_only`` support (``resnet18``, ``test_resnet``...).
        in_chans: 3 (RGB) or 4 (RGBY).
        backbone_ckpt: optional local timm/torchvision state dict for the encoder.
        timm_kwargs: extra ``timm.create_model`` arguments for the encoder (``output_stride`` is left out:
            the U-Net decoder needs the full stride-32 pyramid).
        decoder_channels: widths of the five decoder blocks, deepest first.

    Raises:
        ValueError: unknown timm name (with close names), or an encoder smp cannot build.
    """
    if in_chans not in (3, 4):
        raise ValueError(f"in_chans must be 3 or 4, got {in_chans}")
    check_model_name(timm_model_name)
    try:
        unet = smp.Unet(
            encoder_name=encoder_name(timm_model_name),
            encoder_weights=None,
            in_channels=in_chans,
            classes=NUM_SEGM_CHANNELS,
            decoder_channels=tuple(decoder_channels),
            **{k: v for k, v in (timm_kwargs or {}).items() if k != "output_stride"},
        )
    except (RuntimeError, ValueError, KeyError, AttributeError, TypeError) as error:
        raise ValueError(f"timm model {timm_model_name!r} cannot be a U-Net encoder: {error}") from None
    network = SegmentationNetwork(unet)
    if backbone_ckpt is not None:
        load_backbone_weights(network.encoder, backbone_ckpt, timm_model_name)
    return network


def segmentation_maps(logits: torch.Tensor) -> torch.Tensor:
    """Per-class maps for per-cell scoring: sigmoid of each class minus the background's, clipped at 0.

    Args:
        logits: (N, 20, H, W) network output.

    Returns:
        (N, 19, H, W) float maps in [0, 1], not yet normalised per class.
    """
    probs = torch.sigmoid(logits.float())
    return (probs[:, :NUM_CLASSES] - probs[:, BACKGROUND : BACKGROUND + 1]).clamp_(min=0.0)
