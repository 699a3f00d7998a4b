"""Cell-classifier checkpoints in ``ckpt_paths``: ``[cell, weight, path]`` entries.

A cell source gives no maps: it scores the crops of every cell of an image, cut from the image and its masks the
way its training store cut them (the checkpoint's ``crop_spec``). Several cell sources are averaged by weight;
they may differ in crop format (say a 64 px and a 128 px classifier): each format is cut once per image. Their
probabilities are fused with the image-level scores by :mod:`src.scoring.fusion`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from src.cam.map_source import CheckpointSpec
from src.crops.store import CropSpec
from src.data.classes import NUM_CLASSES
from src.models.factory import is_cell_run
from src.models.preprocess import normalize_images
from src.training.checkpoints import load_trained_pl_model, read_checkpoint_hparams
from src.training.lit_model import LitModel

logger = logging.getLogger(__name__)

CELL_JOIN = "cell"


CropFormat = tuple[int, str, float, int]  # what decides a crop's pixels: size, masking, padding, channels


def crop_format(spec: CropSpec) -> CropFormat:
    """The key under which inference cuts (and a cell source reads) crops of ``spec``."""
    return (spec.crop_size, spec.crop_mask, spec.padding, spec.in_chans)


def crop_spec_of(hparams: dict, path: str) -> CropSpec:
    """The crop format a cell-classifier run trained on; ValueError naming ``path`` when it has none."""
    spec = hparams.get("crop_spec")
    if not is_cell_run(hparams) or not isinstance(spec, dict):
        raise ValueError(
            f"ckpt_paths: {path} is not a cell classifier (run_classification.py --cell_crop_dir); "
            "join an image classifier as 'both', 'cam' or 'pred'"
        )
    return CropSpec(
        crop_size=int(spec["crop_size"]),
        crop_mask=spec["crop_mask"],
        padding=float(spec["padding"]),
        in_chans=int(spec.get("in_chans", 4)),
        mask_backend=spec.get("mask_backend", "classical"),
        mask_params=spec.get("mask_params", {}),
    )


class CellSource:
    """One cell-classifier checkpoint.

    Args:
        spec: the ``ckpt_paths`` entry (how_join 'cell').
        device: torch device.
    """

    def __init__(self, spec: CheckpointSpec, device: torch.device):
        self.crop_spec = crop_spec_of(read_checkpoint_hparams(spec.path), spec.path)
        model, _ = load_trained_pl_model(LitModel, spec.path)
        self.spec, self.device = spec, device
        self.network = model.network.to(device).eval()

    @torch.no_grad()
    def predict(self, crops: np.ndarray, flips: bool = True) -> np.ndarray:
        """(K, 19) float32 probabilities of (K, S, S, C) uint8 crops, averaged over flips with ``flips``.

        Raises:
            ValueError: crops of another size or channel count than the checkpoint's, naming it.
        """
        s, c = self.crop_spec.crop_size, self.crop_spec.channels
        if crops.ndim != 4 or crops.shape[1:] != (s, s, c):
            raise ValueError(f"{self.spec.path} scores ({s}, {s}, {c}) crops, got crops of shape {crops.shape[1:]}")
        if not len(crops):
            return np.zeros((0, NUM_CLASSES), dtype=np.float32)
        images = normalize_images(torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).to(self.device))
        views = [(), (3,), (2,)] if flips else [()]
        probs = sum(torch.sigmoid(self.network(images.flip(d) if d else images)["logits"].float()) for d in views)
        return (probs / len(views)).cpu().numpy()


def load_cell_sources(specs: Sequence[CheckpointSpec], device: torch.device) -> list[CellSource]:
    """Every ``cell`` entry of ``ckpt_paths``."""
    return [CellSource(spec, device) for spec in specs if spec.how_join == CELL_JOIN]


def crop_specs_to_cut(sources: Sequence[CellSource]) -> list[CropSpec]:
    """One crop spec per distinct crop format of ``sources``, in their order."""
    specs: dict[CropFormat, CropSpec] = {}
    for source in sources:
        specs.setdefault(crop_format(source.crop_spec), source.crop_spec)
    return list(specs.values())


def predict_cells(sources: Sequence[CellSource], crops: dict[CropFormat, np.ndarray], flips: bool = True) -> np.ndarray:
    """(K, 19) weighted mean of the cell sources' probabilities, each on the crops of its own format."""
    total = sum(s.spec.weight for s in sources)
    return sum(s.spec.weight * s.predict(crops[crop_format(s.crop_spec)], flips) for s in sources) / total
