"""Image probabilities and class maps of a classification checkpoint: CAM or Grad-CAM.

Classifiers give sigmoid probabilities and CAMs (the 19-class 1x1 head applied to the feature map, from the
model's ``forward_features`` + ``logit_map`` seam); ``--cam_method gradcam`` weights the feature map of a chosen
layer by the gradient of each class logit instead (Grad-CAM); ``multigradcam`` (``multigradcam_product``) combines
the Grad-CAMs of several layers (``gradcam_layer``: comma-separated names, '' = one per backbone stage) by their mean
(geometric mean), MICRA-Net style (:mod:`src.cam.multilayer_gradcam`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from src.cam.map_source import CheckpointSpec, MapSource, check_map_kind
from src.cam.multilayer_gradcam import active_classes, check_min_prob, default_gradcam_layers, multilayer_gradcam
from src.data.classes import NUM_CLASSES
from src.models.factory import is_segmentation_run

CAM_METHODS = ("cam", "gradcam", "multigradcam", "multigradcam_product")
MULTI_LAYER_COMBINE = {"multigradcam": "sum", "multigradcam_product": "product"}


class ClassifierSource(MapSource):
    """CAMs and probabilities of one classification checkpoint.

    Args:
        spec: the ``ckpt_paths`` entry.
        device: torch device.
        cam_method: one of :data:`CAM_METHODS`.
        gradcam_layer: dotted module name inside the network for Grad-CAM ('' = the backbone's output); for the
            multi-layer methods comma-separated names ('' = one per backbone stage).
        gradcam_min_prob: Grad-CAM methods only: classes under this probability in every image of a batch get
            all-zero maps without their backward pass (0: every class).
    """

    def __init__(
        self,
        spec: CheckpointSpec,
        device: torch.device,
        cam_method: str = "cam",
        gradcam_layer: str = "",
        gradcam_min_prob: float = 0.0,
    ):
        if cam_method not in CAM_METHODS:
            raise ValueError(f"cam_method must be one of {CAM_METHODS}, got {cam_method!r}")
        check_min_prob(gradcam_min_prob)
        super().__init__(spec, device)
        self.cam_method, self.gradcam_min_prob = cam_method, gradcam_min_prob
        self.gradcam_module = self._find_layer(gradcam_layer) if cam_method == "gradcam" else None
        self.gradcam_modules: list[nn.Module] = []
        if cam_method in MULTI_LAYER_COMBINE:
            names = [n.strip() for n in gradcam_layer.split(",") if n.strip()] or default_gradcam_layers(self.network)
            self.gradcam_modules = [self._find_layer(name) for name in names]

    def check_run(self, spec: CheckpointSpec, hparams: dict[str, Any]) -> None:
        num_classes = int(hparams.get("num_classes", NUM_CLASSES))
        if num_classes != NUM_CLASSES:
            raise ValueError(f"{spec.path}: checkpoint has {num_classes} classes, inference needs {NUM_CLASSES}")
        if is_segmentation_run(hparams):
            raise ValueError(
                f"{spec.path}: a segmentation checkpoint cannot be used as a classifier "
                "(load_sources gives it a SegmentationSource; join it with how_join 'cam')"
            )

    def check_request(self, map_kind: str) -> None:
        check_map_kind(map_kind)
        if map_kind == "logit" and self.cam_method != "cam":
            raise ValueError(f"{self.spec.path}: logit maps need cam_method 'cam', not {self.cam_method!r}")

    def _find_layer(self, name: str) -> nn.Module | None:
        if not name:
            return None
        modules = dict(self.network.named_modules())
        if name not in modules:
            close = [n for n in modules if n.endswith(name.split(".")[-1])][:8]
            stages = default_gradcam_layers(self.network) if hasattr(self.network, "backbone") else []
            raise ValueError(
                f"{self.spec.path}: no layer {name!r} for Grad-CAM; layers like it: {close}; backbone stages: {stages}"
            )
        return modules[name]

    def rescale(self, images: torch.Tensor, scale: float) -> torch.Tensor:
        if scale == 1.0:
            return images
        return F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)

    def forward_view(self, images: torch.Tensor, map_kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised (N, C, H, W) -> (probabilities (N, 19), unnormalised maps (N, 19, h, w)): the signed
        logit maps for ``cam``, the (non-negative) Grad-CAM maps for ``gradcam``."""
        if self.cam_method == "cam":
            with torch.inference_mode(), torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
                features = self.network.forward_features(images)
                logits = self.network.head(features)["logits"]
                maps = self.network.logit_map(features)
            return torch.sigmoid(logits.float()), maps.float()
        if self.cam_method in MULTI_LAYER_COMBINE:
            combine = MULTI_LAYER_COMBINE[self.cam_method]
            return multilayer_gradcam(self.network, images, self.gradcam_modules, combine, self.gradcam_min_prob)
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
                weights = activations.new_zeros((logits.shape[0], logits.shape[1], activations.shape[1]))  # (N, 19, C)
                for c in active_classes(logits, self.gradcam_min_prob):
                    grad = torch.autograd.grad(logits[:, c].sum(), activations, retain_graph=True)[0]
                    weights[:, c] = grad.mean(dim=(2, 3))
                cams = F.relu(torch.einsum("nkc,nchw->nkhw", weights, activations.detach()))
        finally:
            if handle is not None:
                handle.remove()
        return torch.sigmoid(logits.detach().float()), cams.float()
