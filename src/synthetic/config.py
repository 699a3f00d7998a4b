"""Parameters of the synthetic HPA-like benchmark (the difficulty knobs)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SyntheticConfig:
    """Generator parameters; lengths are given for a 512 px image and scale with the image size.

    Attributes:
        min_cells: fewest cells in an image.
        max_cells: most cells in an image.
        cell_dropout: probability that a cell lacks each one of its image's labels (one is always kept).
        negative_cell_rate: probability that a cell of a non-negative image shows no protein (label 18).
        mitotic_rate: probability that a cell is mitotic (rounded, condensed chromatin).
        noise: scale of the shot and read noise (0 = none, 1 = HPA-like).
        blur: optical blur sigma in px at 512 px.
        illumination: amplitude of the smooth uneven illumination (0 = flat).
        intensity_spread: typical fold range of per-cell protein expression (lognormal, ~95% of cells within it).
        class_freq_power: 1 = real class frequencies, 0 = uniform over classes (boosts rare classes in between).
    """

    min_cells: int = 5
    max_cells: int = 25
    cell_dropout: float = 0.25
    negative_cell_rate: float = 0.05
    mitotic_rate: float = 0.04
    noise: float = 1.0
    blur: float = 0.7
    illumination: float = 0.3
    intensity_spread: float = 4.0
    class_freq_power: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_cells <= self.max_cells:
            raise ValueError(f"need 1 <= min_cells <= max_cells, got {self.min_cells}, {self.max_cells}")
        for name in ("cell_dropout", "negative_cell_rate", "mitotic_rate", "illumination"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        for name in ("noise", "blur", "class_freq_power"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.intensity_spread < 1.0:
            raise ValueError(f"intensity_spread is a fold range and must be >= 1, got {self.intensity_spread}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
