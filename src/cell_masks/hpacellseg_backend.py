"""The HPA cell segmentator (two DPN-UNets, package ``hpacellseg``) as a backend.

The package is not on the package index and its weights are downloaded from the HPA
servers, so both must be installed by hand on a machine with internet::

    pip install https://github.com/CellProfiling/HPA-Cell-Segmentation/archive/master.zip
    # weights: the nuclei model (NUCLEI_MODEL_URL) and the 3-channel cell model
    # (MULTI_CHANNEL_CELL_MODEL_URL) listed in hpacellseg/constants.py, saved e.g. as
    # models/hpacellseg/nuclei_model.pth and models/hpacellseg/cell_model.pth

The weight paths must exist: CellSegmentator would otherwise try to download them,
which this project never does at run time.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from src.cell_masks.classical import relabel_consistent

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install https://github.com/CellProfiling/HPA-Cell-Segmentation/archive/master.zip"
WEIGHTS_HINT = (
    "download the nuclei model (NUCLEI_MODEL_URL) and the 3-channel cell model (MULTI_CHANNEL_CELL_MODEL_URL) "
    "listed in hpacellseg/constants.py on a machine with internet, copy them here (e.g. "
    "models/hpacellseg/nuclei_model.pth and models/hpacellseg/cell_model.pth) and pass them as "
    "--nuclei_model and --cell_model"
)


def import_hpacellseg() -> tuple[Any, Any]:
    """The ``CellSegmentator`` class and ``label_cell`` function of the hpacellseg package.

    Raises:
        ImportError: the package is not installed; the message says how to install it.
    """
    try:
        segmentator_module = importlib.import_module("hpacellseg.cellsegmentator")
        utils_module = importlib.import_module("hpacellseg.utils")
    except ImportError as error:
        raise ImportError(
            f"backend 'hpacellseg' needs the hpacellseg package, which is not importable ({error}). "
            f"Install it with: {INSTALL_HINT}  (or use --backend classical, which needs no weights)"
        ) from error
    return segmentator_module.CellSegmentator, utils_module.label_cell


def check_weights(nuclei_model: str | os.PathLike | None, cell_model: str | os.PathLike | None) -> tuple[Path, Path]:
    """Both weight files as existing paths.

    Raises:
        FileNotFoundError: a path is missing or not a file; the message says where the weights go.
    """
    paths = {"--nuclei_model": nuclei_model, "--cell_model": cell_model}
    problems = [
        f"{flag} {'is not given' if path is None else f'file not found: {path}'}"
        for flag, path in paths.items()
        if path is None or not Path(path).is_file()
    ]
    if problems:
        raise FileNotFoundError(f"backend 'hpacellseg': {'; '.join(problems)}. To get the weights: {WEIGHTS_HINT}")
    return Path(nuclei_model), Path(cell_model)


class HpaCellSegSegmenter:
    """Nucleus and cell labels from hpacellseg (scale 0.25, padding, 3-channel cell model).

    The package and weights are checked at construction; the networks are loaded on first use,
    so the object can be sent to worker processes cheaply.
    """

    name = "hpacellseg"

    def __init__(
        self,
        nuclei_model: str | os.PathLike | None = None,
        cell_model: str | os.PathLike | None = None,
        device: str = "cpu",
        scale_factor: float = 0.25,
    ) -> None:
        import_hpacellseg()
        nuclei_path, cell_path = check_weights(nuclei_model, cell_model)
        self.params = {
            "nuclei_model": str(nuclei_path.resolve()),
            "cell_model": str(cell_path.resolve()),
            "scale_factor": float(scale_factor),
        }
        self.device = device
        self._segmentator = None
        self._label_cell = None

    def _load(self) -> None:
        cell_segmentator, self._label_cell = import_hpacellseg()
        self._segmentator = cell_segmentator(
            self.params["nuclei_model"],
            self.params["cell_model"],
            scale_factor=self.params["scale_factor"],
            device=self.device,
            padding=True,
            multi_channel_model=True,
        )

    def __call__(self, rgby: np.ndarray, image_id: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Segment one (H, W, 4) RGBY image; returns (nuclei_mask, cell_mask), (H, W) uint16."""
        if self._segmentator is None:
            self._load()
        red, blue, yellow = rgby[..., 0], rgby[..., 2], rgby[..., 3]
        nuclei_pred = self._segmentator.pred_nuclei([blue])[0]
        cell_pred = self._segmentator.pred_cells([[red], [yellow], [blue]])[0]
        nuclei_mask, cell_mask = self._label_cell(nuclei_pred, cell_pred)
        height, width = rgby.shape[:2]
        if cell_mask.shape != (height, width):
            # hpacellseg restores the size as (rows, cols) given to cv2 as (width, height): undo for non-square images.
            logger.debug(
                "image %s: hpacellseg returned %s for %s; resizing", image_id, cell_mask.shape, (height, width)
            )
            nuclei_mask = cv2.resize(nuclei_mask.astype(np.uint16), (width, height), interpolation=cv2.INTER_NEAREST)
            cell_mask = cv2.resize(cell_mask.astype(np.uint16), (width, height), interpolation=cv2.INTER_NEAREST)
        cells = cell_mask.astype(np.int64)
        return relabel_consistent(np.where(nuclei_mask > 0, cells, 0), cells)
