import numpy as np
import pytest

from src.data.classes import NEGATIVE, NUM_CLASSES
from src.scoring.cell_scores import (
    CellScoreConfig,
    cell_cam_stats,
    cell_logit_scores,
    cell_logits,
    image_prob_scores,
    score_cells,
    segment_percentile,
)


def _two_cells(size: int = 64):
    cell_mask = np.zeros((size, size), np.uint16)
    cell_mask[4:30, 4:30] = 1
    cell_mask[34:60, 34:60] = 2
    nuclei_mask = np.zeros_like(cell_mask)
    nuclei_mask[12:22, 12:22] = 1
    nuclei_mask[42:52, 42:52] = 2
    green = np.full((size, size), 50, np.uint8)
    return cell_mask, nuclei_mask, green


def test_activation_inside_one_cell_labels_only_that_cell():
    cell_mask, nuclei_mask, green = _two_cells()
    cams = np.zeros((NUM_CLASSES, 64, 64), np.float32)
    cams[7, 4:30, 4:30] = 1.0  # Golgi active over the whole of cell 1
    probs = np.zeros(NUM_CLASSES, np.float32)
    probs[7] = 0.8
    scores = score_cells(probs, cams, cell_mask, nuclei_mask, green, CellScoreConfig(conf_how="max"))
    assert scores[1] == {7: pytest.approx(0.8)}
    assert list(scores[2]) == [NEGATIVE]
    assert scores[2][NEGATIVE] == pytest.approx(0.75)


def test_conf_how_cam_rate_mean_multiplies_mean_and_rate():
    cell_mask, nuclei_mask, green = _two_cells()
    cams = np.zeros((NUM_CLASSES, 64, 64), np.float32)
    cams[0, 4:17, 4:30] = 0.5  # half of cell 1 (13 of 26 rows) at 0.5
    probs = np.zeros(NUM_CLASSES, np.float32)
    probs[0] = 1.0
    stats = cell_cam_stats(cams, cell_mask, nuclei_mask, green)
    row = list(stats.cell_ids).index(1)
    # the nucleus (rows 12..21) is 5 of 10 rows activated: cell and nucleus rates are both 0.5
    assert stats.cam_rate[row, 0] == pytest.approx(0.5)
    assert stats.cam_mean_pos[row, 0] == pytest.approx(0.5)
    scores = score_cells(probs, cams, cell_mask, nuclei_mask, green, CellScoreConfig(conf_how="cam_rate_mean"))
    assert scores[1] == {0: pytest.approx(1.0 * 0.5 * 0.5)}


def test_nucleus_rate_rescues_class_active_only_in_nucleus():
    cell_mask, nuclei_mask, green = _two_cells()
    cams = np.zeros((NUM_CLASSES, 64, 64), np.float32)
    cams[2, 42:52, 42:52] = 1.0  # nucleoli signal: whole nucleus of cell 2, 100/676 of the cell
    probs = np.zeros(NUM_CLASSES, np.float32)
    probs[2] = 0.5
    config = CellScoreConfig(conf_how="max", cam_rate_thresh=0.5, cam_high_rate_thresh=1.1)
    scores = score_cells(probs, cams, cell_mask, nuclei_mask, green, config)
    assert scores[2] == {2: pytest.approx(0.5)}


def test_dark_cell_is_negative_even_when_activated():
    cell_mask, nuclei_mask, green = _two_cells()
    green[34:60, 34:60] = 0
    cams = np.ones((NUM_CLASSES, 64, 64), np.float32)
    probs = np.full(NUM_CLASSES, 0.9, np.float32)
    scores = score_cells(probs, cams, cell_mask, nuclei_mask, green)
    assert list(scores[2]) == [NEGATIVE]
    assert NEGATIVE not in scores[1] and len(scores[1]) == NUM_CLASSES - 1


def test_unknown_conf_how_is_rejected():
    with pytest.raises(ValueError, match="conf_how"):
        CellScoreConfig(conf_how="median")


def test_keep_inactive_emits_unkept_classes_below_every_activated_cell():
    cell_mask, nuclei_mask, green = _two_cells()
    cams = np.zeros((NUM_CLASSES, 64, 64), np.float32)
    cams[7, 4:30, 4:30] = 1.0  # Golgi active in cell 1 only
    probs = np.zeros(NUM_CLASSES, np.float32)
    probs[7] = 0.8
    config = CellScoreConfig(conf_how="max", keep_inactive=True)
    scores = score_cells(probs, cams, cell_mask, nuclei_mask, green, config)
    assert scores[1] == {7: pytest.approx(0.8)}
    assert scores[2][7] == pytest.approx(0.8 * config.inactive_floor)  # kept for recall, ranked last
    assert scores[2][NEGATIVE] == pytest.approx(0.75)


def test_cam_weight_blends_image_probability_and_activation():
    cell_mask, nuclei_mask, green = _two_cells()
    cams = np.zeros((NUM_CLASSES, 64, 64), np.float32)
    cams[0, 4:30, 4:30] = 0.5
    probs = np.zeros(NUM_CLASSES, np.float32)
    probs[0] = 0.6
    scores = score_cells(probs, cams, cell_mask, nuclei_mask, green, CellScoreConfig(conf_how="max", cam_weight=0.5))
    assert scores[1] == {0: pytest.approx(0.6 * (0.5 + 0.5 * 0.5))}
    with pytest.raises(ValueError, match="cam_weight"):
        CellScoreConfig(cam_weight=1.5)


def test_segment_percentile_matches_numpy_per_label():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 500)
    values = rng.random(500)
    result = segment_percentile(labels, values, num_ids=5, q=95.0)
    for k in range(4):
        assert result[k] == pytest.approx(np.percentile(values[labels == k], 95, method="lower"))
    assert result[4] == 0.0  # no pixel of label 4


def test_negative_dark_ranks_the_cell_without_protein_first():
    cell_mask, nuclei_mask, green = _two_cells()
    green[34:60, 34:60] = 4  # cell 2: background only
    cams = np.zeros((NUM_CLASSES, 64, 64), np.float32)
    cams[0] = 1.0  # the map cannot tell the cells apart
    probs = np.zeros(NUM_CLASSES, np.float32)
    probs[0] = 0.9
    config = CellScoreConfig(conf_how="max", negative_how="dark", dark_reference_min=20.0)
    scores = score_cells(probs, cams, cell_mask, nuclei_mask, green, config)
    # reference = median of the cells' brightness (4 and 50) = 27: cell 1 is brighter, cell 2 is 1 - 4/27 dark
    assert scores[1][NEGATIVE] == pytest.approx(0.0)
    assert scores[2][NEGATIVE] == pytest.approx(1 - 4 / 27)
    assert scores[1][0] == scores[2][0] == pytest.approx(0.9)


def test_negative_from_prob_scales_the_negative_confidence():
    cell_mask, nuclei_mask, green = _two_cells()
    green[34:60, 34:60] = 0
    cams = np.zeros((NUM_CLASSES, 64, 64), np.float32)
    probs = np.zeros(NUM_CLASSES, np.float32)
    config = CellScoreConfig(negative_how="dark", negative_from_prob=True)
    assert score_cells(probs, cams, cell_mask, nuclei_mask, green, config)[2][NEGATIVE] == 0.0
    probs[NEGATIVE] = 1.0
    assert score_cells(probs, cams, cell_mask, nuclei_mask, green, config)[2][NEGATIVE] == pytest.approx(1.0)


def test_image_prob_floor_gives_every_cell_the_probabilities_and_the_same_dark_negative():
    cell_mask, nuclei_mask, green = _two_cells()
    green[34:60, 34:60] = 4  # cell 2: background only
    probs = np.linspace(0.05, 0.95, NUM_CLASSES).astype(np.float32)
    config = CellScoreConfig(conf_how="image_prob", negative_how="dark")
    floor = image_prob_scores(probs, cell_mask, green, config)
    assert sorted(floor) == [1, 2]
    assert all(floor[c][k] == pytest.approx(probs[k]) for c in (1, 2) for k in range(NEGATIVE))
    cams = np.zeros((NUM_CLASSES, 64, 64), np.float32)
    scored = score_cells(probs, cams, cell_mask, nuclei_mask, green, CellScoreConfig(negative_how="dark"))
    assert floor[1][NEGATIVE] == pytest.approx(scored[1][NEGATIVE]) and floor[2][NEGATIVE] == pytest.approx(1 - 4 / 27)
    inactive = image_prob_scores(probs, cell_mask, green, CellScoreConfig(conf_how="image_prob"))
    assert inactive[2][NEGATIVE] == pytest.approx(probs[NEGATIVE])  # the 15th-place floor: p(18) for every cell


def _row_of_cells(count: int = 5, size: int = 64):
    """``count`` square cells side by side in one band; cell k occupies columns [12 (k-1), 12 (k-1) + 10)."""
    cell_mask = np.zeros((size, size), np.uint16)
    for k in range(1, count + 1):
        cell_mask[20:30, 12 * (k - 1) : 12 * (k - 1) + 10] = k
    return cell_mask, np.full((size, size), 50, np.uint8)


def test_cell_logits_are_the_mean_of_each_map_inside_each_cell():
    cell_mask, _, _ = _two_cells()
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 64, 64))
    labels = cell_mask.ravel().astype(np.int64)
    z = cell_logits(maps, labels, 3, np.array([1, 2]))
    for row, cell in enumerate((1, 2)):
        assert z[row] == pytest.approx(maps[:, cell_mask == cell].mean(axis=1))


def test_cell_logit_demotes_only_the_cell_far_below_its_image():
    cell_mask, green = _row_of_cells()
    maps = np.zeros((NUM_CLASSES, 64, 64), np.float32)
    maps[0][cell_mask > 0] = 4.0  # every cell carries Nucleoplasm ...
    maps[0][cell_mask == 3] = -2.0  # ... but cell 3, 6 log-odds below the median cell
    maps[0][cell_mask == 5] = 3.5  # cell 5 is 0.5 below: within the margin
    probs = np.zeros(NUM_CLASSES, np.float32)
    probs[0], probs[16] = 0.6, 0.005  # Cytosol is under min_image_prob: not emitted
    config = CellScoreConfig(conf_how="cell_logit", logit_slope=3.0, logit_margin=2.0)
    scores = cell_logit_scores(probs, maps, cell_mask, green, config)
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    assert scores[1][0] == pytest.approx(0.6 * sigmoid(3.0 * 2.0))
    assert scores[5][0] == pytest.approx(0.6 * sigmoid(3.0 * 1.5))
    assert scores[3][0] == pytest.approx(0.6 * sigmoid(3.0 * -4.0)) and scores[3][0] < 0.01
    assert all(16 not in cell for cell in scores.values())
    # 'inactive' Negative: highest for the cell whose best class is demoted
    assert max(scores, key=lambda c: scores[c][NEGATIVE]) == 3
    # a uniform shift of every cell (a brighter image) changes nothing: only the within-image order counts
    shifted = cell_logit_scores(probs, maps + 10.0, cell_mask, green, config)
    assert all(shifted[c][0] == pytest.approx(scores[c][0]) for c in scores)


def test_cell_logit_dark_cell_gets_negative_only():
    cell_mask, green = _row_of_cells()
    green[cell_mask == 2] = 0
    maps = np.ones((NUM_CLASSES, 64, 64), np.float32)
    probs = np.full(NUM_CLASSES, 0.5, np.float32)
    scores = cell_logit_scores(
        probs, maps, cell_mask, green, CellScoreConfig(conf_how="cell_logit", negative_how="dark")
    )
    assert scores[2] == {NEGATIVE: 1.0}
    assert set(scores[1]) == set(range(NUM_CLASSES)) and scores[1][NEGATIVE] == pytest.approx(0.0)
