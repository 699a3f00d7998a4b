"""Backend registry: one call to segment an RGBY image with the backend named by the user.

Every backend returns ``(nuclei_mask, cell_mask)``: (H, W) uint16 at the image's size,
0 = background, cells numbered 1..K and the nucleus of cell k labelled k.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from src.cell_masks.classical import ClassicalParams, segment_classical

BACKENDS = ("classical", "learned", "hpacellseg", "precomputed")


class Segmenter(Protocol):
    name: str
    params: dict[str, Any]

    def __call__(self, rgby: np.ndarray, image_id: str | None = None) -> tuple[np.ndarray, np.ndarray]: ...


class ClassicalSegmenter:
    """The classical backend (no weights); see ``src.cell_masks.classical``."""

    name = "classical"

    def __init__(self, **params: Any) -> None:
        self.config = ClassicalParams(**params)
        self.params = self.config.to_dict()

    def __call__(self, rgby: np.ndarray, image_id: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        return segment_classical(rgby, self.config)


def get_segmenter(name: str, **params: Any) -> Segmenter:
    """A segmenter by backend name.

    Args:
        name: 'classical', 'learned', 'hpacellseg' or 'precomputed'.
        **params: backend parameters: ``ClassicalParams`` fields for classical; weights and
            ``LearnedParams`` fields for learned;
            nuclei_model, cell_model, device, scale_factor for hpacellseg; cell_dir, nuclei_dir for precomputed.

    Raises:
        ValueError: unknown backend name or parameter, or (learned) a weight file of another kind.
        FileNotFoundError: (learned) missing weight file.
    """
    if name == "classical":
        known = set(ClassicalParams.__dataclass_fields__)
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"backend 'classical': unknown parameter(s) {unknown}; valid: {sorted(known)}")
        return ClassicalSegmenter(**params)
    if name == "learned":
        from src.cell_masks.learned import LearnedSegmenter

        return LearnedSegmenter(**params)
    if name == "hpacellseg":
        from src.cell_masks.hpacellseg_backend import HpaCellSegSegmenter

        return HpaCellSegSegmenter(**params)
    if name == "precomputed":
        from src.cell_masks.precomputed import PrecomputedSegmenter

        return PrecomputedSegmenter(**params)
    raise ValueError(f"unknown segmentation backend {name!r}; valid: {', '.join(BACKENDS)}")


def segment_image(
    rgby: np.ndarray, backend: str = "classical", image_id: str | None = None, **params: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Nucleus and cell labels of one (H, W, 4) RGBY image with the named backend.

    Returns:
        (nuclei_mask, cell_mask): (H, W) uint16, nucleus k inside cell k.
    """
    if rgby.ndim != 3 or rgby.shape[2] != 4:
        raise ValueError(f"image {image_id}: expected an (H, W, 4) RGBY array, got shape {rgby.shape}")
    return get_segmenter(backend, **params)(rgby, image_id=image_id)
