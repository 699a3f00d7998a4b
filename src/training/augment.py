"""Augmentations with albumentations, chosen by ``--aug_mode``; they work on uint8 (H, W, C) images.

Normalisation happens later, on the device: :func:`src.models.preprocess.normalize_images`.
"""

from __future__ import annotations

import albumentations as A

AUG_MODES = {
    0: "resize only",
    1: "flips, rotate90, random resized crop (scale 0.5-1), brightness/contrast",
    2: "flips, rotate90",
}


def build_transforms(aug_mode: int, input_size: int, train: bool) -> A.Compose:
    """The albumentations pipeline for one split; it maps (H, W, C) uint8 (and an optional ``mask``) to
    (input_size, input_size, C) uint8.

    Args:
        aug_mode: key of :data:`AUG_MODES`; validation always uses mode 0.
        input_size: output side in pixels.
        train: training split (augmented) or not.
    """
    if aug_mode not in AUG_MODES:
        raise ValueError(f"--aug_mode must be one of {sorted(AUG_MODES)} ({AUG_MODES}), got {aug_mode}")
    resize = A.Resize(height=input_size, width=input_size)
    if not train or aug_mode == 0:
        return A.Compose([resize])
    geometric = [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5)]
    if aug_mode == 2:
        return A.Compose([resize, *geometric])
    return A.Compose(
        [
            A.RandomResizedCrop(size=(input_size, input_size), scale=(0.5, 1.0), ratio=(0.8, 1.25), p=1.0),
            *geometric,
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        ]
    )
