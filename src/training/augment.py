"""Augmentations with albumentations, chosen by ``--aug_mode``; they work on uint8 (H, W, C) images.

Normalisation happens later, on the device: :func:`src.models.preprocess.normalize_images`.
"""

from __future__ import annotations

import albumentations as A

AUG_MODES = {
    0: "resize only",
    1: "flips, rotate90, random resized crop (scale 0.5-1), brightness/contrast",
    2: "flips, rotate90",
    3: "mode 1 plus elastic deformation (Atlas 2018)",
}


def build_transforms(aug_mode: int, input_size: int, train: bool, crop_size: int = 0) -> A.Compose:
    """The albumentations pipeline for one split; it maps (H, W, C) uint8 (and an optional ``mask``) to
    (input_size, input_size, C) uint8, or to (crop_size, crop_size, C) random crops when training with a crop.

    Args:
        aug_mode: key of :data:`AUG_MODES`; validation always uses mode 0.
        input_size: side in pixels of the image the network sees at validation and inference.
        train: training split (augmented) or not.
        crop_size: 0, or a training crop side < input_size: the network trains on random crops of the
            input_size image (same pixel scale, a fraction of the cost) and is fully convolutional at inference.
    """
    if aug_mode not in AUG_MODES:
        raise ValueError(f"--aug_mode must be one of {sorted(AUG_MODES)} ({AUG_MODES}), got {aug_mode}")
    if crop_size < 0 or crop_size > input_size:
        raise ValueError(f"--crop_size {crop_size} must lie in 0..--input_size ({input_size})")
    resize = A.Resize(height=input_size, width=input_size)
    if not train:
        return A.Compose([resize])
    crop = [A.RandomCrop(height=crop_size, width=crop_size)] if 0 < crop_size < input_size else []
    geometric = [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5)]
    if aug_mode == 0:
        return A.Compose([resize, *crop])
    if aug_mode == 2:
        return A.Compose([resize, *crop, *geometric])
    elastic = [A.ElasticTransform(alpha=input_size / 8, sigma=input_size / 32, p=0.5)] if aug_mode == 3 else []
    return A.Compose(
        [
            A.RandomResizedCrop(size=(input_size, input_size), scale=(0.5, 1.0), ratio=(0.8, 1.25), p=1.0),
            *crop,
            *geometric,
            *elastic,
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        ]
    )
