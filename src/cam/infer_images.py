"""The DataLoader side of CAM inference: decode each image once, with its masks, at every size the stage needs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from src.cam.cell_source import crop_format
from src.cam.infer_config import InferConfig
from src.cell_masks.cache import MaskCache
from src.crops.store import CropSpec, cut_image
from src.data.io import longer_side_at_most, read_rgby, resize_image


class InferImages(Dataset):
    """Decodes one image, reads (or computes and caches) its masks, and returns everything scoring needs.

    Each item: ``id``, ``height``, ``width``, ``inputs`` {input_size: uint8 (4, S, S)}, ``green`` (h, w) uint8 at
    score size, ``nuclei_mask`` and ``cell_mask`` (H, W) uint16 at full size; or ``error`` (a message) when the
    image failed. The masks are decoded here, once per image; the scoring job uses these arrays. With
    ``crop_specs`` (cell sources) also ``crops`` {crop format: (K, S, S, C) uint8} and ``cell_ids`` (K,).
    """

    def __init__(
        self, ids: list[str], settings: InferConfig, input_sizes: list[int], crop_specs: Sequence[CropSpec] = ()
    ):
        self.ids = ids
        self.crop_specs = list(crop_specs)
        self.settings = settings
        self.input_sizes = sorted(set(input_sizes))
        self._mask_cache: MaskCache | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.ids[index]
        s = self.settings
        try:
            rgby = read_rgby(s.data_dir, image_id, s.split, ext=s.image_ext)
            if self._mask_cache is None:
                self._mask_cache = MaskCache(s.mask_dir, s.mask_backend, s.mask_params)
            nuclei_mask, cell_mask = self._mask_cache.get(image_id, lambda _id: rgby)
            height, width = rgby.shape[:2]
            h, w = longer_side_at_most(height, width, s.score_size)
            cells = {}
            for spec in self.crop_specs:  # every format cuts the same cells, in the same order
                cut, _ = cut_image(rgby, cell_mask, spec)
                cells.setdefault("crops", {})[crop_format(spec)] = cut.crops
                cells["cell_ids"] = cut.cell_ids
            return {
                **cells,
                "id": image_id,
                "height": height,
                "width": width,
                "inputs": {
                    size: torch.from_numpy(resize_image(rgby, size)).permute(2, 0, 1) for size in self.input_sizes
                },
                "green": resize_image(rgby[..., 1:2], (w, h))[..., 0],
                "nuclei_mask": nuclei_mask,
                "cell_mask": cell_mask,
            }
        except Exception as error:  # reported at the end with the ID; other images go on
            return {"id": image_id, "error": f"{type(error).__name__}: {error}"}


def collate_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep a batch as its list of items (images differ in size)."""
    return items
