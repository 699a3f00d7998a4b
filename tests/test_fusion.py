"""Fusing cell-classifier probabilities with image-level per-cell scores (src/scoring/fusion.py)."""

import itertools

import numpy as np
import pandas as pd
import pytest

from src.data.atomic import write_png_atomic
from src.data.classes import NEGATIVE, NUM_CLASSES
from src.metrics import evaluate_submission, load_truth
from src.scoring.fusion import FusionConfig, fuse_cell_scores, fuse_probs, pool_cell_probs, refine_image_probs
from src.scoring.fusion_tuning import fuse_submissions, tune_fusion
from src.submission.codec import cell_mask_predictions, parse_prediction_string


def cell_probs(value: float = 0.8) -> np.ndarray:
    probs = np.full((1, NUM_CLASSES), 0.01)
    probs[0, 3] = value
    probs[0, NEGATIVE] = 0.6
    return probs


@pytest.mark.parametrize(("rule", "expected"), [("prob_mean", 0.5), ("geometric", 0.4), ("logit_mean", 0.5)])
def test_rules_at_equal_weight(rule, expected):
    fused = fuse_probs(np.array([0.2]), np.array([0.8]), FusionConfig(rule=rule, cell_weight=0.5))
    assert fused[0] == pytest.approx(expected, abs=1e-3)


def test_cell_weight_one_is_the_cell_classifier_alone():
    image_scores = {7: {3: 0.1, 5: 0.3, NEGATIVE: 0.2}}
    fused = fuse_cell_scores(image_scores, np.array([7]), cell_probs(), FusionConfig(cell_weight=1.0))
    assert (fused[7][3], fused[7][5]) == pytest.approx((0.8, 0.01))


def test_negative_keeps_the_darkness_rule_unless_asked_otherwise():
    image_scores = {7: {3: 0.1, NEGATIVE: 0.2}}
    dark = fuse_cell_scores(image_scores, np.array([7]), cell_probs(), FusionConfig(negative="dark"))
    cell = fuse_cell_scores(image_scores, np.array([7]), cell_probs(), FusionConfig(negative="cell"))
    mean = fuse_cell_scores(image_scores, np.array([7]), cell_probs(), FusionConfig(negative="mean"))
    assert (dark[7][NEGATIVE], cell[7][NEGATIVE], mean[7][NEGATIVE]) == pytest.approx((0.2, 0.6, 0.4))


def test_dark_cell_stays_negative_only():
    fused = fuse_cell_scores({7: {NEGATIVE: 1.0}}, np.array([7]), cell_probs(), FusionConfig(cell_weight=0.9))
    assert fused == {7: {NEGATIVE: 1.0}}


def test_cells_only_one_side_scored_keep_that_side():
    fused = fuse_cell_scores({1: {3: 0.4}}, np.array([2]), cell_probs(), FusionConfig())
    assert fused == {1: {3: 0.4}}


def test_image_without_cells_gives_an_empty_row():
    assert fuse_cell_scores({}, np.zeros(0, int), np.zeros((0, NUM_CLASSES)), FusionConfig()) == {}


def test_image_refinement_blends_with_pooled_cells():
    image = np.full(NUM_CLASSES, 0.2, dtype=np.float32)
    cells = np.stack([np.full(NUM_CLASSES, 0.0), np.full(NUM_CLASSES, 1.0)])
    assert refine_image_probs(image, cells, FusionConfig(image_refine="max", image_refine_weight=0.5))[0] == 0.6
    assert refine_image_probs(image, cells, FusionConfig(image_refine="mean", image_refine_weight=1.0))[0] == 0.5
    assert refine_image_probs(image, cells[:0], FusionConfig(image_refine="max", image_refine_weight=1.0))[0] == 0.2


def test_cell_pool_lifts_each_cell_towards_its_image_strongest_cell():
    probs = np.full((3, NUM_CLASSES), 0.01)
    probs[:, 3] = [0.9, 0.1, 0.4]
    probs[:, NEGATIVE] = [0.2, 0.7, 0.3]
    pooled = pool_cell_probs(probs, FusionConfig(cell_pool="max", cell_pool_weight=0.5))
    assert pooled[:, 3] == pytest.approx(np.sqrt(probs[:, 3] * 0.9))
    assert list(np.argsort(pooled[:, 3])) == list(np.argsort(probs[:, 3]))  # the order within the image is kept
    assert pooled[:, NEGATIVE] == pytest.approx(probs[:, NEGATIVE])  # Negative stays the cell's own
    assert pool_cell_probs(probs, FusionConfig(cell_pool="max", cell_pool_weight=0.0)) is probs
    fused = fuse_cell_scores(
        {i: {3: 0.0} for i in range(3)}, np.arange(3), probs,
        FusionConfig(cell_weight=1.0, cell_pool="mean", cell_pool_weight=1.0),
    )  # fmt: skip
    assert [fused[i][3] for i in range(3)] == pytest.approx([probs[:, 3].mean()] * 3)


def test_bad_fusion_blocks_name_the_key():
    with pytest.raises(ValueError, match="unknown fusion key"):
        FusionConfig.from_dict({"weight": 1.0}, "config.yaml")
    with pytest.raises(ValueError, match="cell_weight"):
        FusionConfig.from_dict({"cell_weight": 2.0}, "config.yaml")
    with pytest.raises(ValueError, match="cell_pool"):
        FusionConfig.from_dict({"cell_pool": "sum"}, "config.yaml")


def test_fusing_two_submissions_matches_cells_by_mask():
    mask = np.zeros((8, 8), np.uint16)
    mask[:4], mask[4:] = 1, 2

    def frame(scores):
        return pd.DataFrame([{"ID": "a", "ImageWidth": 8, "ImageHeight": 8,
                              "PredictionString": cell_mask_predictions(mask, scores)}])  # fmt: skip

    image_part = frame({1: {3: 0.2, NEGATIVE: 0.1}, 2: {3: 0.4, NEGATIVE: 0.9}})
    cell_part = frame({1: {3: 0.8, NEGATIVE: 0.5}, 2: {3: 0.0, NEGATIVE: 0.5}})
    fused = fuse_submissions(image_part, cell_part, FusionConfig(rule="prob_mean", cell_weight=0.5))
    found = {(p.class_id, round(p.confidence, 3)) for p in parse_prediction_string(fused["PredictionString"][0])}
    assert found == {(3, 0.5), (NEGATIVE, 0.1), (3, 0.2), (NEGATIVE, 0.9)}


def test_the_fusion_search_scores_exactly_what_the_fused_submission_scores(tmp_path):
    """tune_fusion parses once and never writes the fused submission: its mAP must equal the written one's."""
    rng = np.random.default_rng(0)
    mask = np.zeros((16, 16), np.uint16)
    mask[:8, :8], mask[:8, 8:], mask[8:, :8], mask[8:, 12:] = 1, 2, 3, 4  # cell 4 is small: one predicted mask misses
    predicted = mask.copy()
    predicted[8:, 8:] = 4  # IoU 0.5 with truth cell 4
    ids, label_rows, image_rows, cell_rows = [f"img{i}" for i in range(4)], [], [], []
    for image_id in ids:
        write_png_atomic(tmp_path / "truth" / "cell_masks" / f"{image_id}.png", mask)
        label_rows += [(image_id, c, "|".join(map(str, rng.choice([0, 3, 16], 2, replace=False)))) for c in range(1, 5)]
        image_scores = {c: {k: float(rng.uniform(0.01, 1)) for k in (0, 3, 16, NEGATIVE)} for c in range(1, 5)}
        cell_scores = {c: {k: float(rng.uniform(0.01, 1)) for k in (0, 3, 16, NEGATIVE)} for c in range(1, 5)}
        image_rows.append((image_id, 16, 16, cell_mask_predictions(predicted, image_scores)))
        cell_rows.append((image_id, 16, 16, cell_mask_predictions(predicted, cell_scores)))
    pd.DataFrame(label_rows, columns=["ID", "cell_id", "Label"]).to_csv(
        tmp_path / "truth" / "cell_labels.csv", index=False
    )
    columns = ["ID", "ImageWidth", "ImageHeight", "PredictionString"]
    image_part, cell_part = pd.DataFrame(image_rows, columns=columns), pd.DataFrame(cell_rows, columns=columns)
    truth = load_truth(tmp_path / "truth", ids)
    candidates = [
        FusionConfig(rule=r, cell_weight=w, negative=n, cell_pool="max" if g else "none", cell_pool_weight=g)
        for r, w, n, g in itertools.product(
            ["prob_mean", "geometric", "logit_mean"], [0.3, 1.0], ["dark", "mean"], [0, 0.9]
        )
    ]
    searched = dict(tune_fusion(image_part, cell_part, truth, candidates))
    written = {c: evaluate_submission(fuse_submissions(image_part, cell_part, c), truth, ids).mAP for c in candidates}
    assert searched == written
    assert len(set(written.values())) > 3  # the candidates differ, so the equality says something
