"""Loading the map sources of ``ckpt_paths`` and joining their outputs.

A stage-2 segmentation checkpoint becomes a :class:`src.cam.segm_source.SegmentationSource` (how_join 'cam'
only), any other a :class:`src.cam.classifier_source.ClassifierSource`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from src.cam.classifier_source import ClassifierSource
from src.cam.map_source import CheckpointSpec, MapSource
from src.cam.segm_source import SegmentationSource
from src.models.factory import is_segmentation_run
from src.training.checkpoints import read_checkpoint_hparams


def load_sources(
    specs: Sequence[CheckpointSpec],
    device: torch.device,
    cam_method: str = "cam",
    gradcam_layer: str = "",
    gradcam_min_prob: float = 0.0,
) -> list[MapSource]:
    """Load every checkpoint; each error names the file (the Grad-CAM settings: :class:`ClassifierSource`)."""
    return [
        SegmentationSource(spec, device)
        if is_segmentation_run(read_checkpoint_hparams(spec.path))
        else ClassifierSource(spec, device, cam_method, gradcam_layer, gradcam_min_prob)
        for spec in specs
        if spec.how_join != "cell"  # cell classifiers: src/cam/cell_source.py
    ]


def join_sources(
    outputs: Sequence[tuple[CheckpointSpec, torch.Tensor | None, torch.Tensor]],
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Weighted averages: probabilities over 'both'/'pred' sources, CAMs over 'both'/'cam' sources.

    Args:
        outputs: (spec, probabilities (N, 19) or None, cams (N, 19, h, w)) per source.

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


def predict_joined(
    sources: Sequence[MapSource],
    inputs: Callable[[int], torch.Tensor],
    cam_size: tuple[int, int],
    flips: bool,
    scales: Sequence[float],
    map_kind: str = "cam",
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Every source's prediction on ``inputs(source.input_size)`` (N, 4, S, S), joined by :func:`join_sources`."""
    return join_sources(
        [(s.spec, *s.predict(inputs(s.input_size), cam_size, flips, scales, map_kind)) for s in sources]
    )
