"""timm backbones: name check, creation without pooling or classifier, and local weight loading.

Shared by the image classifier, the stage-2 U-Net encoder and every later network: one place checks timm names,
parses ``--timm_kwargs``, adapts a first convolution to 4 channels and loads a local state dict.
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
from torch import nn

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
