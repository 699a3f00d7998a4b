"""The network of the ``learned`` mask backend and its weight files.

One small segmentation-models-pytorch U-Net over a timm encoder (no pretrained weights) reads
two channels at the working scale, the nuclear stain and the cell-body signal (max of the
microtubule and ER channels), and predicts six maps: three classes for nuclei (background,
interior, boundary) and the same three for cells. The boundary class is a ring inside each
object, so touching objects are separated by it and their interiors seed a watershed.

A weight file is a ``torch.save`` dict (loaded with ``weights_only=True``: tensors and plain
values, no code): ``kind``, ``format_version``, ``network`` (the architecture), ``working``
(how images are brought to the working scale), ``state_dict`` and ``train_params`` (the
arguments it was trained with), like the checkpoints of the other stages.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch
from torch import nn

from src.data.atomic import atomic_path

WEIGHTS_KIND = "hpa-learned-cell-masks"
FORMAT_VERSION = 1
IN_CHANNELS = 2  # nuclear stain, cell-body signal
NUM_CLASSES = 3  # background, interior, boundary
OUT_CHANNELS = 2 * NUM_CLASSES  # nuclei classes, then cell classes
OUTPUT_STRIDE = 32
# Where train_cell_segmenter.py writes by default and the quality benchmark looks (relative to the repository root).
DEFAULT_WEIGHTS = Path("outputs/cell_segmenter/weights.pt")


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture of the learned backend's U-Net.

    Attributes:
        encoder: timm model name of the encoder (smp's ``tu-`` universal encoder).
        encoder_depth: encoder stages used (3-5).
        decoder_channels: widths of the decoder blocks, one per stage.
    """

    encoder: str = "mobilenetv3_small_100"
    encoder_depth: int = 5
    decoder_channels: tuple[int, ...] = (32, 24, 16, 16, 8)

    def to_dict(self) -> dict[str, Any]:
        config = asdict(self)
        config["decoder_channels"] = list(self.decoder_channels)
        return config


@dataclass(frozen=True)
class WorkingScale:
    """How an image is brought to the working scale the network was trained at.

    Attributes:
        nucleus_diameter_px: a typical nucleus spans this many pixels at the working scale (the nucleus
            size is estimated per image, as the classical backend does).
        min_scale: smallest resize factor (original to working).
        max_scale: largest resize factor (small images with small nuclei are enlarged).
    """

    nucleus_diameter_px: float = 24.0
    min_scale: float = 0.05
    max_scale: float = 4.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_network(config: NetworkConfig) -> nn.Module:
    """The U-Net, (N, 2, H, W) float in [0, 1] -> (N, 6, H, W) logits; H, W multiples of 32.

    Raises:
        ValueError: the encoder is unknown to timm or the decoder widths do not fit the depth.
    """
    if len(config.decoder_channels) != config.encoder_depth:
        raise ValueError(
            f"decoder_channels {list(config.decoder_channels)}: need one width per encoder stage "
            f"(encoder_depth {config.encoder_depth})"
        )
    try:
        return smp.Unet(
            f"tu-{config.encoder}",
            encoder_weights=None,
            encoder_depth=config.encoder_depth,
            decoder_channels=tuple(config.decoder_channels),
            in_channels=IN_CHANNELS,
            classes=OUT_CHANNELS,
        )
    except (RuntimeError, KeyError, ValueError) as error:
        raise ValueError(f"encoder {config.encoder!r}: cannot build the U-Net ({error})") from error


def save_weights(
    path: str | os.PathLike,
    network: nn.Module,
    config: NetworkConfig,
    working: WorkingScale,
    train_params: dict[str, Any],
) -> None:
    """Write a weight file atomically (see the module docstring for its keys)."""
    payload = {
        "kind": WEIGHTS_KIND,
        "format_version": FORMAT_VERSION,
        "network": config.to_dict(),
        "working": working.to_dict(),
        "in_channels": IN_CHANNELS,
        "out_channels": OUT_CHANNELS,
        "state_dict": {key: value.detach().cpu() for key, value in network.state_dict().items()},
        "train_params": train_params,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_weights(path: str | os.PathLike | None, flag: str = "--weights") -> tuple[nn.Module, WorkingScale, dict]:
    """The network (eval mode, CPU), its working scale and the whole payload of a weight file.

    Raises:
        FileNotFoundError: no path, or no file there.
        ValueError: not a weight file of this backend (another backend's, a checkpoint of another stage),
            another channel count, or a state dict that does not fit the recorded architecture.
    """
    if path is None:
        raise FileNotFoundError(f"backend 'learned' needs {flag} PATH (train one with train_cell_segmenter.py)")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {path}: no such weight file (train one with train_cell_segmenter.py)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling fails with many exception types
        raise ValueError(
            f"{flag} {path}: not a weight file of the learned mask backend ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(payload, dict) or payload.get("kind") != WEIGHTS_KIND:
        found = payload.get("kind", "no 'kind' key") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"{flag} {path}: not a weight file of the learned mask backend (found {found!r}, expected "
            f"{WEIGHTS_KIND!r}); hpacellseg's .pth files go to --backend hpacellseg"
        )
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{flag} {path}: format_version {payload.get('format_version')} != {FORMAT_VERSION}")
    if payload.get("in_channels") != IN_CHANNELS or payload.get("out_channels") != OUT_CHANNELS:
        raise ValueError(
            f"{flag} {path}: a network of {payload.get('in_channels')} input / {payload.get('out_channels')} output "
            f"channels; this backend needs {IN_CHANNELS} / {OUT_CHANNELS}"
        )
    network_config = dict(payload["network"])
    network_config["decoder_channels"] = tuple(network_config["decoder_channels"])
    network = build_network(NetworkConfig(**network_config))
    try:
        network.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        raise ValueError(f"{flag} {path}: the state dict does not fit its recorded architecture: {error}") from error
    return network.eval(), WorkingScale(**payload["working"]), payload
