"""Scoring one image at a reduced score size (src/scoring/score_job.py): 512 px masks scored at 128 px."""

import cv2
import numpy as np
import pytest

from src.data.classes import NEGATIVE, NUM_CLASSES
from src.scoring.cell_scores import CellScoreConfig
from src.scoring.score_job import score_image, shrink_mask
from src.submission.codec import decode_binary_mask, parse_prediction_string

FULL, SCORE = 512, 128


def _masks() -> tuple[np.ndarray, np.ndarray]:
    """512 px masks: cell 1 in the left half, cell 2 in the right half (each with a nucleus), and cell 3, a
    2 x 2 px cell at rows/columns 1-2 that a nearest-neighbour 4x shrink (which reads rows/columns 0, 4, 8, ...)
    loses entirely."""
    cell_mask = np.zeros((FULL, FULL), np.uint16)
    cell_mask[64:448, 32:224] = 1
    cell_mask[64:448, 288:480] = 2
    cell_mask[1:3, 1:3] = 3
    nuclei_mask = np.zeros_like(cell_mask)
    nuclei_mask[192:320, 96:160] = 1
    nuclei_mask[192:320, 352:416] = 2
    nuclei_mask[1:3, 1:3] = 3
    return cell_mask, nuclei_mask


def _job(tmp_path, conf_how: str = "max") -> dict:
    cell_mask, nuclei_mask = _masks()
    cams = np.zeros((NUM_CLASSES, 32, 32), np.float16)
    cams[0, :, :16] = 1.0  # class 0 over the left half of a 32 px CAM
    probs = np.zeros(NUM_CLASSES, np.float32)
    probs[0] = 0.8
    return {
        "id": "img",
        "height": FULL,
        "width": FULL,
        "green": np.full((SCORE, SCORE), 50, np.uint8),
        "probs": probs,
        "cams": cams,
        "nuclei_mask": nuclei_mask,
        "cell_mask": cell_mask,
        "score_config": CellScoreConfig(conf_how=conf_how) if conf_how != "image_prob" else CellScoreConfig(),
    }


def _by_cell(row: dict) -> dict[int, dict[int, float]]:
    """{cell id of the full-size mask: {class: confidence}} from a submission row, matching each RLE exactly."""
    cell_mask, _ = _masks()
    result: dict[int, dict[int, float]] = {}
    for prediction in parse_prediction_string(row["PredictionString"]):
        mask = decode_binary_mask(prediction.rle, row["ImageHeight"], row["ImageWidth"])
        ids = np.unique(cell_mask[mask])
        assert len(ids) == 1 and mask.sum() == (cell_mask == ids[0]).sum(), "an RLE is not one full-size cell"
        result.setdefault(int(ids[0]), {})[prediction.class_id] = prediction.confidence
    return result


def test_cells_are_scored_at_score_size_and_encoded_at_full_size(tmp_path):
    row = score_image(_job(tmp_path))
    assert (row["ImageWidth"], row["ImageHeight"]) == (FULL, FULL)
    scores = _by_cell(row)
    assert scores[1] == {0: pytest.approx(0.8)}  # the CAM (32 px) resized to 128 px covers cell 1 only
    assert scores[2] == {NEGATIVE: pytest.approx(0.75)}


def test_masks_of_another_size_than_the_image_are_refused(tmp_path):
    job = _job(tmp_path)
    job["height"] = 256
    with pytest.raises(ValueError, match="cached masks are"):
        score_image(job)


@pytest.mark.parametrize("conf_how", ["max", "cell_logit", "image_prob"])
def test_a_cell_that_vanishes_at_score_size_is_still_in_the_submission(tmp_path, conf_how):
    scores = _by_cell(score_image(_job(tmp_path, conf_how)))
    assert sorted(scores) == [1, 2, 3]


def test_shrink_mask_puts_a_lost_cell_back_at_its_centre():
    cell_mask, _ = _masks()
    small = shrink_mask(cell_mask, (SCORE, SCORE))
    assert np.argwhere(small == 3).tolist() == [[0, 0]]  # rows/columns 1-2 of 512 px: pixel 0 of 128
    kept = small != 3
    assert (small[kept] == cv2.resize(cell_mask, (SCORE, SCORE), interpolation=cv2.INTER_NEAREST)[kept]).all()


def test_shrink_mask_changes_nothing_when_no_cell_is_lost():
    mask = np.zeros((64, 64), np.uint16)
    mask[8:40, 8:40] = 1
    mask[40:60, 10:50] = 2
    assert (shrink_mask(mask, (16, 16)) == cv2.resize(mask, (16, 16), interpolation=cv2.INTER_NEAREST)).all()
