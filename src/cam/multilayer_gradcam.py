"""MICRA-Net style multi-layer Grad-CAM: Grad-CAMs of several layers, each upsampled to the input size,
divided by its maximum, and combined.

MICRA-Net (Bilodeau et al. 2022) trains only an image classifier and combines gradient-weighted maps of several
depths: deep layers say *what*, shallow layers say precisely *where*. ``sum`` is the mean of the normalised
layer maps (a pixel lit by any layer stays lit); ``product`` their geometric mean (lit only where every layer
agrees: sharper, and zero wherever one layer is zero).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

COMBINES = ("sum", "product")


def default_gradcam_layers(network: nn.Module) -> list[str]:
    """One module per stage of the timm backbone (``feature_info`` without the stem), as ``backbone.<name>``."""
    info = getattr(getattr(network, "backbone", None), "feature_info", None)
    if not info:
        raise ValueError(f"{type(network).__name__} has no backbone.feature_info: name the Grad-CAM layers")
    names = [f"backbone.{entry['module']}" for entry in info]
    return names[1:] if len(names) > 1 else names


def check_min_prob(min_prob: float) -> None:
    """ValueError unless ``min_prob`` (the ``gradcam_min_prob`` setting) lies in [0, 1)."""
    if not 0.0 <= min_prob < 1.0:
        raise ValueError(f"gradcam_min_prob must lie in [0, 1), got {min_prob}")


def active_classes(logits: torch.Tensor, min_prob: float) -> list[int]:
    """Classes whose probability reaches ``min_prob`` in at least one image of the batch (all with 0): the only
    ones worth a backward pass when classes under it are never read (counting, ``min_image_prob``)."""
    if min_prob <= 0.0:
        return list(range(logits.shape[1]))
    return torch.nonzero((torch.sigmoid(logits.detach().float()) >= min_prob).any(dim=0)).flatten().tolist()


def multilayer_gradcam(
    network: nn.Module,
    images: torch.Tensor,
    modules: Sequence[nn.Module],
    combine: str = "sum",
    min_prob: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image probabilities and combined multi-layer Grad-CAMs.

    For each layer l and class k: ``relu(sum_c mean_hw(d logit_k / d A_l) * A_l[c])``, bilinearly upsampled to
    the input size and divided by its maximum (+1e-5); the layers' maps are then combined.

    Args:
        network: has ``forward_features`` ((N, C, H, W) -> features) and ``head`` (features -> {'logits': (N, K)}).
        images: normalised (N, C, H, W).
        modules: the layers, each giving an (N, C_l, h_l, w_l) tensor in the forward pass.
        combine: 'sum' (mean of the normalised maps) or 'product' (their geometric mean).
        min_prob: classes under this probability in every image of the batch get all-zero maps without a backward
            pass (one pass per class is the whole cost of Grad-CAM); 0 computes every class.

    Returns:
        (probabilities (N, K), maps (N, K, H, W) in 0..1).
    """
    if combine not in COMBINES:
        raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
    if not modules:
        raise ValueError("multi-layer Grad-CAM needs at least one layer")
    captured: dict[int, torch.Tensor] = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, index=index: captured.__setitem__(index, out))
        for index, module in enumerate(modules)
    ]
    try:
        with torch.enable_grad():
            images = images.detach().requires_grad_(True)  # a layer before any parameter still gets a gradient
            logits = network.head(network.forward_features(images))["logits"]
            activations = [captured[index] for index in range(len(modules))]
            layer_maps = [
                activation.new_zeros((logits.shape[0], logits.shape[1], *activation.shape[2:]))
                for activation in activations
            ]
            for k in active_classes(logits, min_prob):
                grads = torch.autograd.grad(logits[:, k].sum(), activations, retain_graph=True)
                for maps, grad, activation in zip(layer_maps, grads, activations):
                    weights = grad.mean(dim=(2, 3), keepdim=True)  # (N, C_l, 1, 1)
                    maps[:, k] = F.relu((weights * activation.detach()).sum(dim=1))  # (N, h_l, w_l)
    finally:
        for handle in handles:
            handle.remove()
    size = images.shape[-2:]
    normalised = []
    for maps in layer_maps:
        stacked = F.interpolate(maps.float(), size=size, mode="bilinear", align_corners=False)
        normalised.append(stacked / (stacked.amax(dim=(2, 3), keepdim=True) + 1e-5))
    layers = torch.stack(normalised)  # (L, N, K, H, W)
    combined = layers.mean(dim=0) if combine == "sum" else layers.clamp_min(0).prod(dim=0) ** (1.0 / len(layers))
    return torch.sigmoid(logits.detach().float()), combined
