"""Nucleus and cell instance masks: segmentation backends, the mask cache and agreement measures."""

from src.cell_masks.cache import MaskCache, fill_mask_cache
from src.cell_masks.segment import BACKENDS, get_segmenter, segment_image

__all__ = ["BACKENDS", "MaskCache", "fill_mask_cache", "get_segmenter", "segment_image"]
