import numpy as np
import pytest

from src.data.classes import NEGATIVE, NUM_CLASSES
from src.scoring.cell_scores import (
    CellScoreConfig,
    cell_cam_stats,
    cell_logit_scores,
    cell_logits,
    dark_negative,
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


# Exact, hand-computed cases. Each image is a few rows of pixels; every answer below is written out by hand
# (fractions of small integers), never computed by the code under test.


def _strip_cell(length: int = 10, nucleus: slice | None = slice(0, 2)):
    """One cell (id 1) filling row 0 of a (3, length) image; its nucleus covers ``nucleus`` of that row."""
    cell_mask = np.zeros((3, length), np.uint16)
    cell_mask[0, :] = 1
    nuclei_mask = np.zeros_like(cell_mask)
    if nucleus is not None:
        nuclei_mask[0, nucleus] = 1
    return cell_mask, nuclei_mask, np.full((3, length), 50, np.uint8)


def _probs(**by_class: float) -> np.ndarray:
    probs = np.zeros(NUM_CLASSES)
    for key, value in by_class.items():
        probs[int(key[1:])] = value
    return probs


# cell 1 (10 px), class 0: 0.8, 0.4, 0.3, 0.1 on the four pixels right of its 2-pixel nucleus, 0 elsewhere.
# max 0.8; mean of the positive values (0.8 + 0.4 + 0.3 + 0.1) / 4 = 0.4; rate 4/10 (nucleus rate 0).
_GRADED = np.array([0.0, 0.0, 0.8, 0.4, 0.3, 0.1, 0.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize(
    ("conf_how", "expected"),
    [
        ("max", 0.5 * 0.8),
        ("mean", 0.5 * 0.4),
        ("cam_rate", 0.5 * 0.8 * 0.4),
        ("cam_rate_mean", 0.5 * 0.4 * 0.4),
    ],
)
def test_each_conf_how_gives_the_hand_computed_confidence(conf_how, expected):
    cell_mask, nuclei_mask, green = _strip_cell()
    cams = np.zeros((NUM_CLASSES, 3, 10))
    cams[0, 0] = _GRADED
    scores = score_cells(_probs(c0=0.5), cams, cell_mask, nuclei_mask, green, CellScoreConfig(conf_how=conf_how))
    assert scores == {1: {0: pytest.approx(expected)}}


def test_cell_cam_stats_are_the_hand_computed_statistics():
    cell_mask, nuclei_mask, green = _strip_cell()
    green[0, :5] = 10  # protein: five pixels at 10, five at 50 -> mean 30
    cams = np.zeros((NUM_CLASSES, 3, 10))
    cams[0, 0] = _GRADED
    cams[1, 0, 0] = 0.9  # class 1: one nucleus pixel at 0.9 -> cell rate 1/10, nucleus rate 1/2
    stats = cell_cam_stats(cams, cell_mask, nuclei_mask, green)
    assert list(stats.cell_ids) == [1]
    assert stats.area.tolist() == [10]
    assert stats.cam_max[0, :2].tolist() == pytest.approx([0.8, 0.9])
    assert stats.cam_mean_pos[0, :2].tolist() == pytest.approx([0.4, 0.9])
    assert stats.cam_rate[0, :2].tolist() == pytest.approx([0.4, 0.5])
    assert stats.cam_high_rate[0, :2].tolist() == pytest.approx([0.1, 0.5])  # 0.8 and 0.9 are >= 0.75
    assert stats.green_mean.tolist() == pytest.approx([30.0])
    assert stats.green_high.tolist() == pytest.approx([50.0])


def test_cell_without_nucleus_takes_its_rate_from_the_cell_alone():
    cell_mask, nuclei_mask, green = _strip_cell(nucleus=None)
    cams = np.zeros((NUM_CLASSES, 3, 10))
    cams[0, 0, :2] = 1.0
    stats = cell_cam_stats(cams, cell_mask, nuclei_mask, green)
    assert stats.cam_rate[0, 0] == pytest.approx(0.2) and stats.cam_high_rate[0, 0] == pytest.approx(0.2)


def test_nucleus_rate_raises_cam_rate_confidence_above_the_cell_rate():
    cell_mask, nuclei_mask, green = _strip_cell()
    cams = np.zeros((NUM_CLASSES, 3, 10))
    cams[0, 0, :2] = 0.5  # the whole nucleus, 2 of 10 cell pixels: cell rate 0.2, nucleus rate 1.0
    scores = score_cells(_probs(c0=0.8), cams, cell_mask, nuclei_mask, green, CellScoreConfig(conf_how="cam_rate"))
    assert scores[1] == {0: pytest.approx(0.8 * 0.5 * 1.0)}


def test_nucleus_high_rate_alone_keeps_a_class():
    cell_mask, nuclei_mask, green = _strip_cell()
    cams = np.zeros((NUM_CLASSES, 3, 10))
    cams[0, 0, :2] = 0.75  # high (>= 0.75) on the nucleus only: cell high rate 0.2, nucleus high rate 1.0
    config = CellScoreConfig(conf_how="max", cam_rate_thresh=1.5, cam_high_rate_thresh=0.5)
    assert score_cells(_probs(c0=0.8), cams, cell_mask, nuclei_mask, green, config)[1] == {0: pytest.approx(0.6)}


@pytest.mark.parametrize(("positive_pixels", "kept"), [(1, True), (0, False)])
def test_rate_rule_keeps_a_class_at_exactly_the_threshold(positive_pixels, kept):
    cell_mask, nuclei_mask, green = _strip_cell(nucleus=None)
    cams = np.zeros((NUM_CLASSES, 3, 10))
    cams[0, 0, :positive_pixels] = 0.5  # rate 1/10 = cam_rate_thresh; high values never reach 0.75
    config = CellScoreConfig(conf_how="max", cam_rate_thresh=0.1, cam_high_rate_thresh=0.0001)
    assert (0 in score_cells(_probs(c0=0.8), cams, cell_mask, nuclei_mask, green, config)[1]) is kept


def test_rate_rule_drops_a_class_just_below_the_threshold():
    cell_mask, nuclei_mask, green = _strip_cell(nucleus=None)
    cams = np.zeros((NUM_CLASSES, 3, 10))
    cams[0, 0, :1] = 0.5  # rate 0.1 < 0.11
    config = CellScoreConfig(conf_how="max", cam_rate_thresh=0.11, cam_high_rate_thresh=1.5)
    assert 0 not in score_cells(_probs(c0=0.8), cams, cell_mask, nuclei_mask, green, config)[1]


@pytest.mark.parametrize(
    ("value", "high_rate_thresh", "kept"),
    [
        (0.75, 0.04, True),  # 1 of 25 pixels at exactly cam_high_value: high rate 0.04 = the threshold
        (0.74, 0.04, False),  # just under cam_high_value: not a high pixel
        (0.75, 0.05, False),  # high rate 0.04 under a 0.05 threshold
    ],
)
def test_high_activation_rule_on_both_sides_of_both_thresholds(value, high_rate_thresh, kept):
    cell_mask, nuclei_mask, green = _strip_cell(length=25, nucleus=None)
    cams = np.zeros((NUM_CLASSES, 3, 25))
    cams[0, 0, 0] = value  # rate 1/25 = 0.04 is under cam_rate_thresh 0.1: only the high rule can keep it
    config = CellScoreConfig(conf_how="max", cam_high_value=0.75, cam_high_rate_thresh=high_rate_thresh)
    scores = score_cells(_probs(c0=0.5), cams, cell_mask, nuclei_mask, green, config)
    # not kept: inactive Negative from 1 - 0.04 = 0.96 -> weight (0.96 - 0.9) / 0.1 = 0.6
    assert scores[1] == ({0: pytest.approx(0.5 * value)} if kept else {NEGATIVE: pytest.approx(0.75 * 0.6)})


def test_min_image_prob_is_inclusive_and_negative_is_never_a_cam_class():
    cell_mask, nuclei_mask, green = _strip_cell()
    cams = np.ones((NUM_CLASSES, 3, 10))
    probs = _probs(c0=0.01, c1=0.0099, c18=0.9)
    scores = score_cells(probs, cams, cell_mask, nuclei_mask, green, CellScoreConfig(conf_how="max"))
    assert scores[1] == {0: pytest.approx(0.01)}


def test_min_cell_fraction_is_squared_and_inclusive():
    # a 10 x 20 image: the longer side 20 x 0.2 = 4, squared 16 pixels; cell 1 has 16, cell 2 has 15
    cell_mask = np.zeros((10, 20), np.uint16)
    cell_mask[0:4, 0:4] = 1
    cell_mask[5:8, 5:10] = 2
    nuclei_mask = np.zeros_like(cell_mask)
    green = np.full(cell_mask.shape, 50, np.uint8)
    cams = np.zeros((NUM_CLASSES, 10, 20))
    config = CellScoreConfig(min_cell_fraction=0.2)
    assert sorted(score_cells(_probs(c0=0.5), cams, cell_mask, nuclei_mask, green, config)) == [1]
    assert sorted(image_prob_scores(_probs(c0=0.5), cell_mask, green, config)) == [1]
    assert sorted(score_cells(_probs(c0=0.5), cams, cell_mask, nuclei_mask, green, CellScoreConfig())) == [1, 2]


def test_one_pixel_cell_is_scored_without_min_cell_fraction():
    cell_mask = np.zeros((4, 4), np.uint16)
    cell_mask[1, 1] = 3
    green = np.full(cell_mask.shape, 50, np.uint8)
    scores = score_cells(_probs(c0=0.5), np.zeros((NUM_CLASSES, 4, 4)), cell_mask, np.zeros_like(cell_mask), green)
    assert list(scores) == [3]


@pytest.mark.parametrize(
    ("positives", "expected_weight"),
    [
        # rates of classes 0, 1, 2 on a 100-pixel cell: 1 - rate = 0.99, 0.98, 0.92 -> median 0.98 -> (0.98 - 0.9) / 0.1
        ((1, 2, 8), 0.8),
        ((5, 5, 9), 0.5),  # median of 0.95, 0.95, 0.91
        ((9, 9, 9), 0.1),  # 0.91 -> 0.1
        ((0, 0, 0), 1.0),  # nothing activated
    ],
)
def test_inactive_negative_grows_with_the_median_inactive_fraction(positives, expected_weight):
    cell_mask, nuclei_mask, green = _strip_cell(length=100, nucleus=None)
    cams = np.zeros((NUM_CLASSES, 3, 100))
    for k, count in enumerate(positives):
        cams[k, 0, :count] = 0.5  # below the rate (0.1) and high (0.75) thresholds: nothing kept
    probs = _probs(c0=0.5, c1=0.5, c2=0.5)
    scores = score_cells(probs, cams, cell_mask, nuclei_mask, green, CellScoreConfig(negative_scale=0.5))
    assert scores[1] == {NEGATIVE: pytest.approx(0.5 * expected_weight)}


def test_inactive_negative_has_a_tiny_floor_for_a_busy_cell_and_scales_with_p18():
    cell_mask, nuclei_mask, green = _strip_cell(length=100, nucleus=None)
    cams = np.zeros((NUM_CLASSES, 3, 100))
    cams[0, 0, :50] = 0.5  # class 0: rate 0.5, kept for cell 1 only if considered
    cams[1, 0, :9] = 0.5
    probs = _probs(c0=0.005, c1=0.5, c18=0.4)  # class 0 is not considered: 1 - rate(1) = 0.91 -> weight 0.1
    config = CellScoreConfig(negative_from_prob=True)
    assert score_cells(probs, cams, cell_mask, nuclei_mask, green, config)[1] == {
        NEGATIVE: pytest.approx(0.4 * 0.75 * 0.1)
    }
    cams[1, 0, :20] = 0.5  # rate 0.2: kept, so no Negative at all
    assert score_cells(probs, cams, cell_mask, nuclei_mask, green, config)[1] == {1: pytest.approx(0.5 * 0.5 * 0.2)}
    cams[1, 0, :] = 0.0
    cams[1, 0, :95] = 0.05  # rate 0.95 but 1 - 0.95 = 0.05 < 0.9: the 1e-6 floor
    scores = score_cells(probs, cams, cell_mask, nuclei_mask, green, CellScoreConfig(cam_rate_thresh=1.1))
    assert scores[1] == {NEGATIVE: pytest.approx(0.75 * 1e-6)}


def test_inactive_negative_of_a_dark_cell_or_without_considered_classes_is_the_full_scale():
    cell_mask, nuclei_mask, green = _strip_cell(length=100, nucleus=None)
    cams = np.zeros((NUM_CLASSES, 3, 100))
    cams[0, 0, :95] = 0.05
    dark_green = np.zeros_like(green)
    dark_green[0, :50] = 1  # mean 0.5 < min_green_mean 1
    assert score_cells(_probs(c0=0.5), cams, cell_mask, nuclei_mask, dark_green)[1] == {NEGATIVE: pytest.approx(0.75)}
    assert score_cells(_probs(), cams, cell_mask, nuclei_mask, green)[1] == {NEGATIVE: pytest.approx(0.75)}


def _three_green_cells(highs=(10, 40, 60)):
    """Three 4-pixel cells of uniform protein brightness ``highs`` in a (3, 4) image (one cell a row)."""
    cell_mask = np.array([[1] * 4, [2] * 4, [3] * 4], np.uint16)
    green = np.array([[h] * 4 for h in highs], np.uint8)
    return cell_mask, np.zeros_like(cell_mask), green


@pytest.mark.parametrize(
    ("reference_min", "expected"),
    [
        (20.0, {1: 1 - 10 / 40, 2: 0.0, 3: 0.0}),  # reference = median 40
        (50.0, {1: 1 - 10 / 50, 2: 1 - 40 / 50, 3: 0.0}),  # reference = dark_reference_min 50
    ],
)
def test_dark_negative_between_its_extremes(reference_min, expected):
    cell_mask, nuclei_mask, green = _three_green_cells()
    cams = np.zeros((NUM_CLASSES, 3, 4))
    config = CellScoreConfig(negative_how="dark", dark_reference_min=reference_min)
    scores = score_cells(_probs(c0=0.5), cams, cell_mask, nuclei_mask, green, config)
    assert {c: scores[c][NEGATIVE] for c in scores} == pytest.approx(expected)
    floor = image_prob_scores(_probs(c0=0.5), cell_mask, green, config)
    assert {c: floor[c][NEGATIVE] for c in floor} == pytest.approx(expected)
    logit = cell_logit_scores(_probs(c0=0.5), cams, cell_mask, green, CellScoreConfig("cell_logit", **_dark(config)))
    assert {c: logit[c][NEGATIVE] for c in logit} == pytest.approx(expected)


def _dark(config: CellScoreConfig) -> dict:
    return {"negative_how": "dark", "dark_reference_min": config.dark_reference_min}


def test_dark_negative_of_a_cell_dimmer_than_min_green_mean_is_one():
    # cell 1: half its pixels at 1, half at 0 -> mean 0.5 < 1, high 1 -> formula would give 1 - 1/40, the rule gives 1
    cell_mask, nuclei_mask, green = _three_green_cells()
    green[0] = [0, 0, 1, 1]
    config = CellScoreConfig(negative_how="dark")
    scores = score_cells(_probs(c0=0.5), np.zeros((NUM_CLASSES, 3, 4)), cell_mask, nuclei_mask, green, config)
    assert scores[1] == {NEGATIVE: 1.0}


def test_dark_high_is_the_nearest_rank_below_percentile_of_the_protein_channel():
    cell_mask = np.ones((1, 10), np.uint16)
    green = np.arange(1, 11, dtype=np.uint8)[None]  # 1..10: 50th percentile, nearest rank below -> rank 4 -> 5
    stats = cell_cam_stats(
        np.zeros((NUM_CLASSES, 1, 10)), cell_mask, np.zeros_like(cell_mask), green, CellScoreConfig(dark_percentile=50)
    )
    assert stats.green_high.tolist() == [5.0] and stats.green_mean.tolist() == [5.5]
    assert segment_percentile(np.array([0, 0, 0]), np.array([3.0, 1.0, 2.0]), 1, 100.0).tolist() == [3.0]
    assert segment_percentile(np.array([0, 0, 0]), np.array([3.0, 1.0, 2.0]), 1, 0.0).tolist() == [1.0]


def test_keep_inactive_adds_the_floor_to_the_activation_of_an_unkept_class():
    cell_mask, nuclei_mask, green = _strip_cell(length=100, nucleus=None)
    cams = np.zeros((NUM_CLASSES, 3, 100))
    cams[0, 0, :5] = 0.5  # rate 0.05: not kept; max 0.5
    cams[1, 0, :50] = 0.25  # rate 0.5: kept
    config = CellScoreConfig(conf_how="max", keep_inactive=True, inactive_floor=0.01)
    scores = score_cells(_probs(c0=0.8, c1=0.4, c2=0.001), cams, cell_mask, nuclei_mask, green, config)
    assert scores[1] == {0: pytest.approx(0.8 * 0.5 + 0.8 * 0.01), 1: pytest.approx(0.4 * 0.25)}


def test_keep_inactive_adds_nothing_to_a_dark_cell():
    cell_mask, nuclei_mask, green = _strip_cell()
    green[:] = 0
    config = CellScoreConfig(keep_inactive=True)
    scores = score_cells(_probs(c0=0.8), np.zeros((NUM_CLASSES, 3, 10)), cell_mask, nuclei_mask, green, config)
    assert scores[1] == {NEGATIVE: pytest.approx(0.75)}


@pytest.mark.parametrize(("cam_weight", "expected"), [(0.0, 0.6), (0.25, 0.6 * (0.75 + 0.25 * 0.8)), (1.0, 0.6 * 0.8)])
def test_cam_weight_interpolates_between_image_probability_and_activation(cam_weight, expected):
    cell_mask, nuclei_mask, green = _strip_cell()
    cams = np.zeros((NUM_CLASSES, 3, 10))
    cams[0, 0] = _GRADED
    config = CellScoreConfig(conf_how="max", cam_weight=cam_weight)
    assert score_cells(_probs(c0=0.6), cams, cell_mask, nuclei_mask, green, config)[1] == {0: pytest.approx(expected)}


def test_image_prob_gives_every_scored_cell_the_image_probabilities_and_p18_as_negative():
    cell_mask, _, green = _three_green_cells()
    probs = _probs(c0=0.3, c5=0.7, c18=0.2)
    scores = image_prob_scores(probs, cell_mask, green, CellScoreConfig(conf_how="image_prob"))
    assert sorted(scores) == [1, 2, 3]
    assert all(scores[c] == pytest.approx({k: probs[k] for k in range(NUM_CLASSES)}) for c in scores)


def test_cell_logit_scores_each_cell_against_the_median_cell_by_hand():
    # three cells with mean logits 0, 1, 5 for class 0: median 1, so z - median = -1, 0, 4
    cell_mask, _, green = _three_green_cells(highs=(50, 50, 50))
    maps = np.zeros((NUM_CLASSES, 3, 4))
    maps[0] = [[0.0] * 4, [1.0] * 4, [4.0, 6.0, 5.0, 5.0]]
    config = CellScoreConfig(conf_how="cell_logit", logit_slope=2.0, logit_margin=0.5, negative_scale=0.5)
    scores = cell_logit_scores(_probs(c0=0.8), maps, cell_mask, green, config)
    sigmoid = {1: 1 / (1 + np.exp(-2.0 * (-1 + 0.5))), 2: 1 / (1 + np.exp(-2.0 * 0.5)), 3: 1 / (1 + np.exp(-9.0))}
    for cell in (1, 2, 3):
        assert scores[cell] == pytest.approx({0: 0.8 * sigmoid[cell], NEGATIVE: 0.5 * (1 - sigmoid[cell])})


def test_cell_logit_inactive_negative_of_a_dark_cell_is_p18_with_negative_from_prob():
    cell_mask, _, green = _three_green_cells(highs=(0, 50, 50))
    config = CellScoreConfig(conf_how="cell_logit", negative_from_prob=True)
    scores = cell_logit_scores(_probs(c0=0.8, c18=0.3), np.zeros((NUM_CLASSES, 3, 4)), cell_mask, green, config)
    assert scores[1] == {NEGATIVE: pytest.approx(0.3)}
    assert scores[2][NEGATIVE] == pytest.approx(0.3 * 0.75 * (1 - 1 / (1 + np.exp(-4.0))))


def test_cell_logit_without_considered_classes_gives_full_inactive_negative():
    cell_mask, _, green = _three_green_cells(highs=(50, 50, 50))
    scores = cell_logit_scores(_probs(), np.zeros((NUM_CLASSES, 3, 4)), cell_mask, green)
    assert scores == {c: {NEGATIVE: pytest.approx(0.75)} for c in (1, 2, 3)}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"logit_slope": 0.0}, "logit_slope"),
        ({"cam_weight": -0.01}, "cam_weight"),
        ({"dark_percentile": 100.5}, "dark_percentile"),
        ({"dark_percentile": -0.5}, "dark_percentile"),
        ({"negative_how": "bright"}, "negative_how"),
    ],
)
def test_invalid_score_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CellScoreConfig(**kwargs)


def test_score_config_accepts_the_ends_of_its_ranges():
    CellScoreConfig(cam_weight=0.0, dark_percentile=0.0)
    CellScoreConfig(cam_weight=1.0, dark_percentile=100.0, logit_slope=1e-9)


def test_mismatched_shapes_are_refused_naming_the_shapes():
    cell_mask, nuclei_mask, green = _strip_cell()
    with pytest.raises(ValueError, match="shape mismatch"):
        score_cells(_probs(), np.zeros((NUM_CLASSES, 3, 9)), cell_mask, nuclei_mask, green)
    with pytest.raises(ValueError, match="19"):
        score_cells(np.zeros(18), np.zeros((NUM_CLASSES, 3, 10)), cell_mask, nuclei_mask, green)
    with pytest.raises(ValueError, match="shape mismatch"):
        cell_logit_scores(_probs(), np.zeros((NUM_CLASSES, 3, 9)), cell_mask, green)
    with pytest.raises(ValueError, match="shape mismatch"):
        image_prob_scores(_probs(), cell_mask, green[:2], CellScoreConfig())


def test_defaults_are_the_documented_15th_place_values():
    config = CellScoreConfig()
    assert (config.conf_how, config.min_image_prob, config.cam_rate_thresh) == ("cam_rate_mean", 0.01, 0.1)
    assert (config.cam_high_value, config.cam_high_rate_thresh, config.min_green_mean) == (0.75, 0.04, 1.0)
    assert (config.min_cell_fraction, config.negative_scale, config.negative_how) == (0.0, 0.75, "inactive")
    assert (config.dark_percentile, config.dark_reference_min, config.negative_from_prob) == (99.9, 20.0, False)
    assert (config.keep_inactive, config.inactive_floor, config.cam_weight) == (False, 1e-3, 1.0)
    assert (config.logit_slope, config.logit_margin) == (1.0, 4.0)


def test_a_cell_exactly_at_min_green_mean_is_bright_in_every_scoring():
    cell_mask, nuclei_mask, green = _three_green_cells(highs=(1, 50, 50))  # cell 1: mean exactly 1.0
    cams = np.ones((NUM_CLASSES, 3, 4))
    probs = _probs(c0=0.5)
    assert 0 in score_cells(probs, cams, cell_mask, nuclei_mask, green, CellScoreConfig(conf_how="max"))[1]
    assert 0 in cell_logit_scores(probs, cams, cell_mask, green, CellScoreConfig(conf_how="cell_logit"))[1]
    dark = score_cells(probs, cams, cell_mask, nuclei_mask, green, CellScoreConfig(negative_how="dark"))
    assert dark[1][NEGATIVE] == pytest.approx(1 - 1 / 50)  # the formula, not the dim-cell 1


def test_one_pixel_cells_and_nuclei_get_their_own_statistics():
    cell_mask = np.zeros((3, 4), np.uint16)
    cell_mask[0, 0] = 1  # one pixel, its own one-pixel nucleus
    cell_mask[2, :] = 2
    nuclei_mask = np.zeros_like(cell_mask)
    nuclei_mask[0, 0] = 1
    nuclei_mask[2, 3] = 2  # cell 2: a one-pixel nucleus, activated alone
    green = np.full(cell_mask.shape, 7, np.uint8)
    cams = np.zeros((NUM_CLASSES, 3, 4))
    cams[0, 0, 0] = 0.5
    cams[1, 2, 3] = 0.5
    stats = cell_cam_stats(cams, cell_mask, nuclei_mask, green)
    assert stats.green_mean.tolist() == [7.0, 7.0] and stats.green_high.tolist() == [7.0, 7.0]
    assert stats.cam_rate[:, :2].tolist() == [[1.0, 0.0], [0.0, 1.0]]  # cell 2: 1/4 of the cell, all of its nucleus
    z = cell_logits(cams[:2], cell_mask.ravel().astype(np.int64), 3, np.array([1, 2]))
    assert z.tolist() == [[0.5, 0.0], [0.0, 0.125]]


def test_a_nucleus_id_above_every_cell_id_is_ignored():
    cell_mask, nuclei_mask, green = _strip_cell()
    nuclei_mask[2, 0:2] = 9  # a nucleus whose cell was not segmented
    cams = np.zeros((NUM_CLASSES, 3, 10))
    cams[0, 0] = _GRADED
    stats = cell_cam_stats(cams, cell_mask, nuclei_mask, green)
    assert list(stats.cell_ids) == [1] and stats.cam_rate[0, 0] == pytest.approx(0.4)


def test_dark_negative_of_no_cells_is_empty():
    assert dark_negative(_probs(), np.zeros(0), np.zeros(0), CellScoreConfig()).shape == (0,)


def test_negative_logit_slope_is_refused():
    with pytest.raises(ValueError, match="logit_slope"):
        CellScoreConfig(logit_slope=-1.0)


@pytest.mark.parametrize("wrong", ["cams", "nuclei", "green"])
def test_inputs_larger_than_the_cell_mask_are_refused(wrong):
    cell_mask, nuclei_mask, green = _strip_cell()
    cams = np.zeros((NUM_CLASSES, 3, 10))
    if wrong == "cams":
        cams = np.zeros((NUM_CLASSES, 4, 10))
    elif wrong == "nuclei":
        nuclei_mask = np.zeros((2, 10), np.uint16)  # smaller: cell_mask.shape > nuclei_mask.shape
    else:
        green = np.zeros((4, 10), np.uint8)
    with pytest.raises(ValueError, match="shape mismatch"):
        score_cells(_probs(), cams, cell_mask, nuclei_mask, green)


def test_more_than_19_probabilities_or_maps_are_refused():
    cell_mask, nuclei_mask, green = _strip_cell()
    with pytest.raises(ValueError, match="expected"):
        score_cells(np.zeros(20), np.zeros((NUM_CLASSES, 3, 10)), cell_mask, nuclei_mask, green)
    with pytest.raises(ValueError, match="expected"):
        score_cells(_probs(), np.zeros((20, 3, 10)), cell_mask, nuclei_mask, green)
    with pytest.raises(ValueError, match="expected"):
        cell_logit_scores(np.zeros(20), np.zeros((NUM_CLASSES, 3, 10)), cell_mask, green)
    with pytest.raises(ValueError, match="expected"):
        cell_logit_scores(np.zeros(18), np.zeros((NUM_CLASSES, 3, 10)), cell_mask, green)
    with pytest.raises(ValueError, match="expected"):
        cell_logit_scores(_probs(), np.zeros((20, 3, 10)), cell_mask, green)
    with pytest.raises(ValueError, match="shape mismatch"):
        image_prob_scores(_probs(), cell_mask, np.zeros((4, 10)), CellScoreConfig())


def test_segment_percentile_of_a_one_value_label_is_that_value_at_any_q():
    labels, values = np.array([0, 1, 1]), np.array([5.0, 1.0, 2.0])
    assert segment_percentile(labels, values, 2, 100.0).tolist() == [5.0, 2.0]
    assert segment_percentile(labels, values, 2, 0.0).tolist() == [5.0, 1.0]


def test_keep_inactive_with_mean_scoring_gives_a_class_without_activation_the_floor_not_nan():
    cell_mask, nuclei_mask, green = _strip_cell()
    config = CellScoreConfig(conf_how="mean", keep_inactive=True)
    scores = score_cells(_probs(c0=0.8), np.zeros((NUM_CLASSES, 3, 10)), cell_mask, nuclei_mask, green, config)
    assert scores[1] == {0: pytest.approx(0.8 * 1e-3), NEGATIVE: pytest.approx(0.75)}


def test_cell_logit_never_treats_negative_as_a_map_class():
    # class 0 is flat over the three cells (factor sigmoid(4)); the Negative map is far higher in cell 1, which
    # must not count as cell 1's best class
    cell_mask, _, green = _three_green_cells(highs=(50, 50, 50))
    maps = np.zeros((NUM_CLASSES, 3, 4))
    maps[NEGATIVE, 0] = 100.0
    scores = cell_logit_scores(_probs(c0=0.5, c18=0.9), maps, cell_mask, green, CellScoreConfig(conf_how="cell_logit"))
    factor = 1 / (1 + np.exp(-4.0))
    assert scores[1] == pytest.approx({0: 0.5 * factor, NEGATIVE: 0.75 * (1 - factor)})


def test_cell_logit_min_image_prob_is_inclusive():
    cell_mask, _, green = _three_green_cells(highs=(50, 50, 50))
    maps = np.zeros((NUM_CLASSES, 3, 4))
    scores = cell_logit_scores(_probs(c0=0.01, c1=0.0099), maps, cell_mask, green, CellScoreConfig("cell_logit"))
    assert set(scores[1]) == {0, NEGATIVE}


def test_score_config_is_immutable():
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        CellScoreConfig().cam_weight = 0.5


def test_maps_larger_or_fewer_than_expected_are_refused():
    cell_mask, nuclei_mask, green = _strip_cell()
    with pytest.raises(ValueError, match="shape mismatch"):
        cell_logit_scores(_probs(), np.zeros((NUM_CLASSES, 4, 10)), cell_mask, green)
    with pytest.raises(ValueError, match="shape mismatch"):
        score_cells(_probs(), np.zeros((NUM_CLASSES, 3, 10)), cell_mask, np.zeros((4, 10), np.uint16), green)
    with pytest.raises(ValueError, match="expected"):
        score_cells(_probs(), np.zeros((18, 3, 10)), cell_mask, nuclei_mask, green)
    with pytest.raises(ValueError, match="expected"):
        cell_logit_scores(_probs(), np.zeros((18, 3, 10)), cell_mask, green)
