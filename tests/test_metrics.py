"""Single-cell mAP evaluator: hand-computed AP cases, the image-label floor, errors, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.data.atomic import write_png_atomic
from src.metrics import (
    CellAPResult,
    average_precision,
    evaluate_submission,
    format_ap_table,
    image_label_floor_submission,
    load_truth,
    mask_truth_ious,
    match_image,
    within_image_ceiling,
)
from src.metrics.truth import CellTruth
from src.submission.codec import (
    CellPrediction,
    encode_binary_mask,
    format_prediction_string,
    parse_prediction_string,
    write_submission,
)

REPO = Path(__file__).resolve().parents[1]


def write_truth(root: Path, masks: dict[str, np.ndarray], labels: dict[str, dict[int, str]]) -> Path:
    """Write ``cell_masks/{ID}.png`` and ``cell_labels.csv`` under ``root/truth``."""
    truth_dir = root / "truth"
    for image_id, mask in masks.items():
        write_png_atomic(truth_dir / "cell_masks" / f"{image_id}.png", mask.astype(np.uint16))
    rows = [(i, cell, label) for i, cells in labels.items() for cell, label in cells.items()]
    pd.DataFrame(rows, columns=["ID", "cell_id", "Label"]).to_csv(truth_dir / "cell_labels.csv", index=False)
    return truth_dir


def submission(predictions: dict[str, list[tuple[int, float, np.ndarray]]]) -> pd.DataFrame:
    """Submission frame from ``{ID: [(class, confidence, (H, W) bool mask), ...]}``."""
    rows = []
    for image_id, triplets in predictions.items():
        height, width = triplets[0][2].shape if triplets else (0, 0)
        cells = [CellPrediction(c, s, encode_binary_mask(m)) for c, s, m in triplets]
        rows.append((image_id, width, height, format_prediction_string(cells)))
    return pd.DataFrame(rows, columns=["ID", "ImageWidth", "ImageHeight", "PredictionString"])


def heterogeneous_truth(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """img1: three column cells labelled 0, 0|16, 16; img2: two row cells labelled 18, 0 -> (truth_dir, masks)."""
    first = np.zeros((6, 9), np.uint16)
    first[:, :3], first[:, 3:6], first[:, 6:] = 1, 2, 3
    second = np.zeros((6, 9), np.uint16)
    second[:3, :], second[3:, :] = 1, 2
    truth = write_truth(
        tmp_path, {"img1": first, "img2": second}, {"img1": {1: "0", 2: "0|16", 3: "16"}, "img2": {1: "18", 2: "0"}}
    )
    return truth, first, second


@pytest.fixture()
def two_cells(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """One 10x10 image: cell 1 = rows 0-4, cell 2 = rows 5-9, both of class 0."""
    mask = np.zeros((10, 10), np.uint16)
    mask[:5] = 1
    mask[5:] = 2
    return write_truth(tmp_path, {"a": mask}, {"a": {1: "0", 2: "0"}}), mask


def test_perfect_submission_scores_one(tmp_path: Path) -> None:
    first = np.zeros((12, 10), np.uint16)
    first[:5, :4] = 1
    first[6:, 2:9] = 2
    second = np.zeros((12, 10), np.uint16)
    second[3:8, 3:8] = 1
    truth = write_truth(tmp_path, {"a": first, "b": second}, {"a": {1: "0|2", 2: "2"}, "b": {1: "18"}})
    frame = submission(
        {
            "a": [(0, 0.3, first == 1), (2, 0.9, first == 1), (2, 0.1, first == 2)],
            "b": [(18, 0.5, second == 1)],
        }
    )
    result = evaluate_submission(frame, truth)
    assert result.per_class_ap == {0: 1.0, 2: 1.0, 18: 1.0}
    assert result.mAP == 1.0
    assert result.per_class_num_truth[2] == 2 and result.per_class_num_pred[2] == 2
    assert result.num_images == 2


@pytest.mark.parametrize(("pixels", "expected_ap"), [(59, 0.0), (60, 1.0), (61, 1.0)])
def test_iou_threshold_is_0_6_inclusive(tmp_path: Path, pixels: int, expected_ap: float) -> None:
    mask = np.zeros((20, 20), np.uint16)
    mask[:10, :10] = 1  # 100 px
    truth = write_truth(tmp_path, {"a": mask}, {"a": {1: "4"}})
    predicted = np.zeros((20, 20), bool)
    predicted[: pixels // 10, :10] = True
    predicted[pixels // 10, : pixels % 10] = True  # a subset of the cell: IoU = pixels / 100
    assert predicted.sum() == pixels
    result = evaluate_submission(submission({"a": [(4, 0.9, predicted)]}), truth)
    assert result.per_class_ap == {4: expected_ap}


def test_iou_059_is_false_positive_and_061_true_positive(tmp_path: Path) -> None:
    mask = np.zeros((20, 20), np.uint16)
    mask[:10, :10] = 1
    mask[10:, 10:] = 2
    truth = write_truth(tmp_path, {"a": mask}, {"a": {1: "3", 2: "3"}})
    iou_059 = np.zeros((20, 20), bool)
    iou_059[:5, :10] = True
    iou_059[5, :9] = True  # 59 px inside cell 1
    iou_061 = np.zeros((20, 20), bool)
    iou_061[10:16, 10:] = True
    iou_061[16, 10] = True  # 61 px inside cell 2
    # sorted: 0.59 (FP) then 0.61 (TP): precision 0, 1/2; recall 0, 1/2 -> AP = 1/2 * 1/2
    result = evaluate_submission(submission({"a": [(3, 0.9, iou_059), (3, 0.8, iou_061)]}), truth)
    assert result.per_class_ap[3] == pytest.approx(0.25)
    assert result.per_class_num_tp[3] == 1


def test_duplicate_predictions_of_one_cell_are_one_tp_and_fps(two_cells: tuple[Path, np.ndarray]) -> None:
    truth, mask = two_cells
    # sorted: cell 1 (TP), cell 1 again (FP), cell 2 (TP); precision 1, 1/2, 2/3; recall 1/2, 1/2, 1
    # interpolated precision: 1 at recall 1/2, 2/3 at recall 1 -> AP = 1/2 + 1/2 * 2/3 = 5/6
    frame = submission({"a": [(0, 0.9, mask == 1), (0, 0.8, mask == 1), (0, 0.7, mask == 2)]})
    result = evaluate_submission(frame, truth)
    assert result.per_class_ap[0] == pytest.approx(5 / 6)
    assert result.per_class_num_tp[0] == 2


def test_duplicate_in_last_place_costs_nothing(two_cells: tuple[Path, np.ndarray]) -> None:
    truth, mask = two_cells
    frame = submission({"a": [(0, 0.9, mask == 1), (0, 0.8, mask == 2), (0, 0.7, mask == 2)]})
    assert evaluate_submission(frame, truth).per_class_ap[0] == 1.0


def test_confidence_order_matters(two_cells: tuple[Path, np.ndarray]) -> None:
    truth, mask = two_cells
    spurious = np.zeros((10, 10), bool)
    spurious[:, :3] = True  # IoU 15/85 with each cell: a false positive
    # TP first: precision 1, 1/2 at recall 1/2, 1/2 -> AP = 1/2 * 1
    good_first = submission({"a": [(0, 0.9, mask == 1), (0, 0.8, spurious)]})
    assert evaluate_submission(good_first, truth).per_class_ap[0] == pytest.approx(0.5)
    # FP first: precision 0, 1/2 at recall 0, 1/2 -> AP = 1/2 * 1/2
    bad_first = submission({"a": [(0, 0.8, mask == 1), (0, 0.9, spurious)]})
    assert evaluate_submission(bad_first, truth).per_class_ap[0] == pytest.approx(0.25)


def test_equal_confidences_keep_submission_order(two_cells: tuple[Path, np.ndarray]) -> None:
    truth, mask = two_cells
    spurious = np.zeros((10, 10), bool)
    spurious[:, :3] = True
    assert evaluate_submission(submission({"a": [(0, 1.0, mask == 1), (0, 1.0, spurious)]}), truth).mAP == 0.5
    assert evaluate_submission(submission({"a": [(0, 1.0, spurious), (0, 1.0, mask == 1)]}), truth).mAP == 0.25


def test_class_without_truth_is_ignored(two_cells: tuple[Path, np.ndarray]) -> None:
    truth, mask = two_cells
    frame = submission({"a": [(0, 0.9, mask == 1), (0, 0.9, mask == 2), (5, 0.99, mask == 1)]})
    result = evaluate_submission(frame, truth)
    assert result.per_class_ap == {0: 1.0}
    assert result.mAP == 1.0
    assert result.per_class_num_pred[5] == 1 and result.per_class_num_truth[5] == 0


def test_prediction_of_a_class_the_cell_lacks_is_false_positive(tmp_path: Path) -> None:
    mask = np.zeros((10, 10), np.uint16)
    mask[:5] = 1
    mask[5:] = 2
    truth = write_truth(tmp_path, {"a": mask}, {"a": {1: "0", 2: "7"}})
    # class 7 predicted on cell 1 (a class-0 cell) first: FP, then cell 2: TP -> AP(7) = 1 * 1/2
    frame = submission({"a": [(7, 0.9, mask == 1), (7, 0.5, mask == 2), (0, 0.5, mask == 1)]})
    result = evaluate_submission(frame, truth)
    assert result.per_class_ap == {0: 1.0, 7: 0.5}
    assert result.mAP == pytest.approx(0.75)


def test_missing_image_counts_as_no_predictions(tmp_path: Path) -> None:
    mask = np.zeros((8, 8), np.uint16)
    mask[2:6, 2:6] = 1
    truth = write_truth(tmp_path, {"a": mask, "b": mask}, {"a": {1: "1"}, "b": {1: "1"}})
    frame = submission({"a": [(1, 0.9, mask == 1)]})
    assert evaluate_submission(frame, truth).mAP == 1.0  # scored on the submission's IDs
    assert evaluate_submission(frame, truth, ids=["a", "b"]).per_class_ap[1] == 0.5  # recall 1/2 at precision 1


def test_image_label_floor_on_heterogeneous_cells(tmp_path: Path) -> None:
    truth, first, second = heterogeneous_truth(tmp_path)
    floor = image_label_floor_submission(truth, ["img1", "img2"])
    predictions = parse_prediction_string(floor.set_index("ID").loc["img1", "PredictionString"])
    assert [(p.class_id, p.confidence) for p in predictions] == [(0, 1.0), (16, 1.0)] * 3
    assert list(floor["ImageWidth"]) == [9, 9] and list(floor["ImageHeight"]) == [6, 6]
    result = evaluate_submission(floor, truth, ["img1", "img2"])
    # class 0: TP TP FP | FP TP, 3 truth: interpolated precision 1, 1, 3/5 -> AP = (1 + 1 + 3/5) / 3 = 13/15
    # class 16: FP TP TP, 2 truth: precision 0, 1/2, 2/3 -> AP = 1/2 * 2/3 + 1/2 * 2/3 = 2/3
    # class 18: TP FP, 1 truth -> AP = 1
    assert result.per_class_ap[0] == pytest.approx(13 / 15)
    assert result.per_class_ap[16] == pytest.approx(2 / 3)
    assert result.per_class_ap[18] == pytest.approx(1.0)
    assert result.mAP == pytest.approx(38 / 45)


def test_within_image_ceiling_orders_the_cells_of_each_image_and_keeps_the_rest(tmp_path: Path) -> None:
    truth_dir, first, second = heterogeneous_truth(tmp_path)
    ids = ["img1", "img2"]
    truth = load_truth(truth_dir, ids)
    floor = image_label_floor_submission(truth_dir, ids)
    ceiling = within_image_ceiling(floor, truth, ids)
    assert evaluate_submission(floor, truth, ids).mAP == pytest.approx(38 / 45)
    assert evaluate_submission(ceiling, truth, ids).mAP == pytest.approx(1.0)
    demoted = {
        (p.class_id, p.confidence)
        for p in parse_prediction_string(ceiling.set_index("ID").loc["img1", "PredictionString"])
        if p.rle == encode_binary_mask(first == 1)
    }
    assert demoted == {(0, 1.0), (16, 1e-3)}  # cell 1 carries 0, not 16
    # a class the image lacks (an image-level error) and a mask matching no cell are left as they are
    stray = np.zeros((6, 9), bool)
    stray[0, 0] = True
    extra = submission({"img2": [(5, 0.7, second == 1), (0, 0.6, stray)]})
    kept = parse_prediction_string(within_image_ceiling(extra, truth, ["img2"])["PredictionString"][0])
    assert [(p.class_id, p.confidence) for p in kept] == [(5, 0.7), (0, 0.6)]


def test_average_precision_edge_cases() -> None:
    assert average_precision(np.array([], bool), 3) == 0.0
    assert np.isnan(average_precision(np.array([True]), 0))
    assert average_precision(np.array([False, True, False, True]), 4) == pytest.approx(0.25 * 0.5 + 0.25 * 0.5)
    with pytest.raises(ValueError, match="true positives"):
        average_precision(np.array([True, True]), 1)


def test_mask_ious_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    cell_mask = rng.integers(0, 5, (23, 17)).astype(np.uint16)
    predicted = rng.random((23, 17)) < 0.4
    ious = mask_truth_ious(encode_binary_mask(predicted), cell_mask.ravel(order="F"), np.bincount(cell_mask.ravel()))
    for cell_id in range(1, 5):
        cell = cell_mask == cell_id
        assert ious[cell_id] == pytest.approx((cell & predicted).sum() / (cell | predicted).sum())


def test_two_workers_give_the_same_result(two_cells: tuple[Path, np.ndarray]) -> None:
    truth, mask = two_cells
    frame = submission({"a": [(0, 0.9, mask == 1), (0, 0.8, mask == 1), (0, 0.7, mask == 2)]})
    assert evaluate_submission(frame, truth, workers=2).per_class_ap == evaluate_submission(frame, truth).per_class_ap


def test_mask_size_mismatch_names_the_id(two_cells: tuple[Path, np.ndarray]) -> None:
    truth, _ = two_cells
    frame = submission({"a": [(0, 0.9, np.ones((10, 12), bool))]})
    with pytest.raises(ValueError, match="ID a .*12x10"):
        evaluate_submission(frame, truth)
    frame.loc[0, ["ImageWidth", "ImageHeight"]] = 10, 10  # declared size right, RLE of another size
    with pytest.raises(ValueError, match="submission ID a: RLE encodes 120 pixels"):
        evaluate_submission(frame, truth)


def test_malformed_prediction_string_names_the_row(two_cells: tuple[Path, np.ndarray]) -> None:
    truth, mask = two_cells
    frame = submission({"a": [(0, 0.9, mask == 1)]})
    frame.loc[0, "PredictionString"] += " 3 0.5"
    with pytest.raises(ValueError, match=r"submission ID a \(CSV line 2\).*not a multiple of 3"):
        evaluate_submission(frame, truth)
    frame.loc[0, "PredictionString"] = "0 0.9 not-an-rle"
    with pytest.raises(ValueError, match="submission ID a: invalid RLE"):
        evaluate_submission(frame, truth)


def test_missing_truth_names_the_id_and_file(two_cells: tuple[Path, np.ndarray]) -> None:
    truth, mask = two_cells
    with pytest.raises(FileNotFoundError, match=r"image zz: missing cell mask .*cell_masks/zz\.png"):
        evaluate_submission(submission({"a": [(0, 0.9, mask == 1)]}), truth, ids=["a", "zz"])


def test_truth_mask_and_labels_must_agree(tmp_path: Path) -> None:
    mask = np.zeros((6, 6), np.uint16)
    mask[:3] = 1
    mask[3:] = 2
    truth = write_truth(tmp_path, {"a": mask}, {"a": {1: "0"}})
    with pytest.raises(ValueError, match=r"truth of a: cells in a\.png without labels \[2\]"):
        evaluate_submission(submission({"a": [(0, 0.9, mask == 1)]}), truth)


def test_bad_truth_label_names_the_row(tmp_path: Path) -> None:
    mask = np.ones((4, 4), np.uint16)
    truth = write_truth(tmp_path, {"a": mask}, {"a": {1: "0|19"}})
    with pytest.raises(ValueError, match=r"cell_labels\.csv row 2 \(ID a\).*outside 0\.\.18"):
        load_truth(truth)


def test_format_ap_table_has_one_column_per_result() -> None:
    truth_counts = {c: 0 for c in range(19)} | {0: 3, 16: 2}
    first = CellAPResult({0: 0.5, 16: 1.0}, truth_counts, {}, 0.75)
    second = CellAPResult({0: 0.25, 16: 0.5}, truth_counts, {}, 0.375)
    table = format_ap_table({"model": first, "image-label floor": second})
    lines = table.splitlines()
    assert "model" in lines[0] and "image-label floor" in lines[0]
    assert lines[2].split() == ["0", "Nucleoplasm", "3", "0.5000", "0.2500"]
    assert lines[3].split()[-2:] == ["-", "-"]  # class 1 has no truth
    assert lines[-1].split() == ["mAP", "0.7500", "0.3750"]
    other = CellAPResult({0: 1.0}, {c: 0 for c in range(19)} | {0: 1}, {}, 1.0)
    with pytest.raises(ValueError, match="other truth"):
        format_ap_table({"model": first, "other": other})
    with pytest.raises(ValueError, match="result 'third' was computed on other truth than 'model'"):
        format_ap_table({"model": first, "image-label floor": second, "third": other})


def test_evaluate_cli_writes_json(tmp_path: Path) -> None:
    truth, first, second = heterogeneous_truth(tmp_path)
    perfect = [
        CellPrediction(0, 0.9, encode_binary_mask(first == 1)),
        CellPrediction(16, 0.8, encode_binary_mask(first == 3)),
    ]
    rows = [{"ID": "img1", "ImageWidth": 9, "ImageHeight": 6, "PredictionString": format_prediction_string(perfect)}]
    write_submission(tmp_path / "sub.csv", rows)
    split_csv = tmp_path / "sample_submission.csv"
    pd.DataFrame({"ID": ["img1", "img2"], "PredictionString": ["", ""]}).to_csv(split_csv, index=False)
    out = tmp_path / "out" / "scores.json"
    command = [sys.executable, "evaluate.py", "--submission", str(tmp_path / "sub.csv"), "--truth_dir", str(truth)]
    command += ["--split_csv", str(split_csv), "--floor", "--ceiling", "--json", str(out)]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "image-label floor" in completed.stdout and "mAP" in completed.stdout
    report = json.loads(out.read_text())
    assert report["num_images"] == 2
    assert report["results"]["image-label floor"]["mAP"] == pytest.approx(38 / 45)
    # submission: class 0 recall 1/3, class 16 recall 1/2, class 18 missed, all at precision 1
    assert report["results"]["submission"]["mAP"] == pytest.approx((1 / 3 + 1 / 2 + 0) / 3)
    assert report["results"]["submission ceiling"]["mAP"] == pytest.approx((1 / 3 + 1 / 2 + 0) / 3)  # nothing to fix
    assert report["results"]["submission"]["per_class"]["18"]["num_truth"] == 1


def test_imperfect_ranking_gives_the_hand_computed_interpolated_ap(tmp_path: Path) -> None:
    # five 2-row cells: 1-4 of class 0, 5 of class 16. Class 0 ranked: cell 1 (TP), a stray mask (FP), cell 5
    # (FP: it lacks class 0), cell 2 (TP), cell 3 (TP); cell 4 is never predicted.
    # precision at the TPs: 1, 2/4, 3/5 -> made non-increasing: 1, 3/5, 3/5; recall steps of 1/4 each
    mask = np.zeros((10, 10), np.uint16)
    for cell in range(1, 6):
        mask[2 * (cell - 1) : 2 * cell] = cell
    truth = write_truth(tmp_path, {"a": mask}, {"a": {1: "0", 2: "0", 3: "0", 4: "0", 5: "16"}})
    stray = np.zeros((10, 10), bool)
    stray[0, 0] = True  # IoU 1/20 with cell 1: below 0.6
    predictions = [(0, 0.9, mask == 1), (0, 0.8, stray), (0, 0.7, mask == 5), (0, 0.6, mask == 2), (0, 0.5, mask == 3)]
    result = evaluate_submission(submission({"a": predictions}), truth)
    assert result.per_class_ap[0] == pytest.approx(0.25 * (1 + 3 / 5 + 3 / 5))
    assert result.per_class_ap[16] == 0.0  # its one cell is never predicted as 16
    assert result.mAP == pytest.approx((0.55 + 0.0) / 2)
    assert result.per_class_num_tp[0] == 3 and result.per_class_num_pred[0] == 5


@pytest.mark.parametrize(("pixels", "demoted"), [(9, True), (8, False)])
def test_ceiling_matches_a_predicted_mask_only_at_iou_0_5_or_more(tmp_path: Path, pixels: int, demoted: bool) -> None:
    # img1 cell 1 (18 px, class 0 only); a class-16 prediction on 9 of its pixels has IoU 9/18 = 0.5: matched,
    # and as cell 1 lacks class 16 it is demoted; on 8 pixels (IoU 0.44) it matches no cell and is kept
    truth_dir, first, _ = heterogeneous_truth(tmp_path)
    truth = load_truth(truth_dir, ["img1"])
    part = np.zeros_like(first, bool)
    part.ravel()[np.flatnonzero((first == 1).ravel())[:pixels]] = True
    ceiling = within_image_ceiling(submission({"img1": [(16, 0.5, part)]}), truth, ["img1"], demote=0.1)
    confidence = parse_prediction_string(ceiling["PredictionString"][0])[0].confidence
    assert confidence == pytest.approx(0.05 if demoted else 0.5)


def test_ceiling_matches_the_cell_of_highest_iou(tmp_path: Path) -> None:
    # cell 1 plus a third of cell 2: IoU 18/24 with cell 1, 6/18 with cell 2 -> cell 1, which lacks 16
    truth_dir, first, _ = heterogeneous_truth(tmp_path)
    truth = load_truth(truth_dir, ["img1"])
    wide = (first == 1) | ((first == 2) & (np.arange(9)[None, :] == 3))
    ceiling = within_image_ceiling(submission({"img1": [(16, 0.5, wide), (0, 0.4, wide)]}), truth, ["img1"])
    kept = parse_prediction_string(ceiling["PredictionString"][0])
    assert [(p.class_id, p.confidence) for p in kept] == [(16, pytest.approx(0.5e-3)), (0, 0.4)]
    with pytest.raises(ValueError, match="demote"):
        within_image_ceiling(submission({"img1": [(16, 0.5, wide)]}), truth, ["img1"], demote=1.0)


def test_match_image_gives_minus_one_for_a_class_without_cells() -> None:
    mask = np.zeros((4, 4), np.uint16)
    mask[:2] = 1
    prediction = CellPrediction(5, 0.9, encode_binary_mask(mask == 1))
    cell_ids, ious = match_image(mask, {1: (0,)}, [prediction, CellPrediction(0, 0.8, prediction.rle)])
    assert cell_ids.tolist() == [-1, 1] and ious.tolist() == [0.0, 1.0]


def test_size_mismatch_names_the_truth_size_width_first(tmp_path: Path) -> None:
    truth = write_truth(tmp_path, {"a": np.ones((4, 6), np.uint16)}, {"a": {1: "0"}})
    with pytest.raises(ValueError, match=r"are 5x4 \(WxH\) but the truth mask .* is 6x4"):
        evaluate_submission(submission({"a": [(0, 0.9, np.ones((4, 5), bool))]}), truth)


def test_duplicate_ids_are_named_five_at_most(two_cells: tuple[Path, np.ndarray]) -> None:
    truth, mask = two_cells
    frame = pd.concat([submission({i: [(0, 0.9, mask == 1)]}) for i in "abcdef"] * 2, ignore_index=True)
    with pytest.raises(ValueError, match=r"duplicate ID\(s\): a, b, c, d, e$"):
        evaluate_submission(frame, truth, ids=["a"])


@pytest.mark.parametrize("demote", [-0.5, 1.0, 1.5])
def test_ceiling_demote_outside_zero_to_one_is_refused(tmp_path: Path, demote: float) -> None:
    truth_dir, first, _ = heterogeneous_truth(tmp_path)
    frame = submission({"img1": [(16, 0.5, first == 1)]})
    with pytest.raises(ValueError, match="demote"):
        within_image_ceiling(frame, load_truth(truth_dir, ["img1"]), ["img1"], demote=demote)


def test_ceiling_demote_zero_sends_the_wrong_class_to_zero(tmp_path: Path) -> None:
    truth_dir, first, _ = heterogeneous_truth(tmp_path)
    frame = submission({"img1": [(16, 0.5, first == 1)]})
    ceiling = within_image_ceiling(frame, load_truth(truth_dir, ["img1"]), ["img1"], demote=0.0)
    assert parse_prediction_string(ceiling["PredictionString"][0])[0].confidence == 0.0


def test_rows_of_unscored_images_are_counted_in_the_warning(two_cells, caplog) -> None:
    truth, mask = two_cells
    frame = pd.concat([submission({i: [(0, 0.9, mask == 1)]}) for i in "abc"], ignore_index=True)
    with caplog.at_level("WARNING"):
        evaluate_submission(frame, truth, ids=["a"])
    assert "2 submission row(s) are not among the 1 scored images" in caplog.text


def test_result_json_gives_zero_counts_for_classes_without_truth_or_hits() -> None:
    result = CellAPResult({0: 0.5}, {0: 2}, {0: 3}, 0.5, per_class_num_tp={0: 1})
    per_class = result.to_dict()["per_class"]
    assert per_class["0"] == {"name": "Nucleoplasm", "ap": 0.5, "num_truth": 2, "num_pred": 3, "num_tp": 1}
    assert per_class["1"] == {"name": "Nuclear membrane", "ap": None, "num_truth": 0, "num_pred": 0, "num_tp": 0}
    assert result.num_images == 0 and result.to_dict()["num_images"] == 0


def test_ap_table_columns_are_at_least_seven_wide() -> None:
    result = CellAPResult({0: 0.5}, {c: 0 for c in range(19)} | {0: 3}, {}, 0.5)
    assert format_ap_table({"m": result}).splitlines()[2].endswith("     3   0.5000")


def test_ceiling_skips_unscored_rows_wherever_they_are(tmp_path: Path) -> None:
    truth_dir, first, second = heterogeneous_truth(tmp_path)
    frame = submission({"img2": [(18, 0.5, second == 1)], "img1": [(16, 0.5, first == 1)]})
    ceiling = within_image_ceiling(frame, load_truth(truth_dir, ["img1"]), ["img1"])
    assert ceiling["ID"].tolist() == ["img1"]


def test_ap_table_counts_a_class_missing_from_the_counts_as_zero_cells() -> None:
    result = CellAPResult({0: 0.5}, {0: 3}, {}, 0.5)
    assert format_ap_table({"m": result}).splitlines()[3].split() == ["1", "Nuclear", "membrane", "0", "-"]


def test_loaded_truth_without_a_scored_image_names_the_first_missing_id(two_cells) -> None:
    truth_dir, mask = two_cells
    truth = load_truth(truth_dir, ["a"])
    with pytest.raises(FileNotFoundError, match="no truth loaded for image x "):
        evaluate_submission(submission({"a": [(0, 0.9, mask == 1)]}), truth, ids=["a", "x", "y"])


def test_the_same_cell_id_in_two_images_is_two_truth_cells(tmp_path: Path) -> None:
    mask = np.zeros((4, 4), np.uint16)
    mask[:2], mask[2:] = 1, 2
    truth = write_truth(tmp_path, {"a": mask, "b": mask}, {"a": {1: "0", 2: "0"}, "b": {1: "0", 2: "0"}})
    frame = submission({"a": [(0, 0.9, mask == 2)], "b": [(0, 0.8, mask == 1)]})
    result = evaluate_submission(frame, truth)
    assert result.per_class_num_tp[0] == 2 and result.per_class_ap[0] == pytest.approx(0.5)
    assert result.to_dict()["mAP"] == pytest.approx(0.5)


def test_an_unscored_row_before_a_scored_one_is_skipped_not_the_end(two_cells) -> None:
    truth, mask = two_cells
    frame = pd.concat([submission({"b": [(0, 0.9, mask == 1)]}), submission({"a": [(0, 0.9, mask == 1)]})])
    assert evaluate_submission(frame.reset_index(drop=True), truth, ids=["a"]).per_class_num_tp[0] == 1


def test_mask_iou_of_one_pixel_masks_and_of_a_too_short_rle() -> None:
    cell_mask = np.zeros((4, 4), np.uint16)
    cell_mask[0, 0] = 1
    fortran = cell_mask.ravel(order="F")
    assert mask_truth_ious(encode_binary_mask(cell_mask == 1), fortran, np.bincount(fortran))[1] == 1.0
    with pytest.raises(ValueError, match="RLE encodes 9 pixels"):
        mask_truth_ious(encode_binary_mask(np.ones((3, 3), bool)), fortran, np.bincount(fortran))


def test_an_image_without_predictions_does_not_end_the_parsing(tmp_path: Path) -> None:
    mask = np.ones((4, 4), np.uint16)
    truth = write_truth(tmp_path, {"a": mask, "b": mask}, {"a": {1: "0"}, "b": {1: "0"}})
    frame = pd.concat([submission({"a": []}), submission({"b": [(0, 0.9, mask == 1)]})], ignore_index=True)
    assert evaluate_submission(frame, truth, ids=["a", "b"]).per_class_num_tp[0] == 1


def test_duplicate_scored_ids_are_refused(two_cells) -> None:
    truth, mask = two_cells
    with pytest.raises(ValueError, match="duplicates"):
        evaluate_submission(submission({"a": [(0, 0.9, mask == 1)]}), truth, ids=["a", "a"])


def test_iou_cache_reuses_the_masks_and_scores_new_confidences_the_same_as_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep re-scores the same masks with other confidences: with the cache each truth mask is read once and every
    score equals the uncached one."""
    truth_dir, first, second = heterogeneous_truth(tmp_path)
    truth = load_truth(truth_dir)
    masks = {"img1": [first == k for k in (1, 2, 3)], "img2": [second == k for k in (1, 2)]}

    def frame(seed: int) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        return submission(
            {i: [(c, float(rng.random()), m) for m in ms for c in (0, 16, 18)] for i, ms in masks.items()}
        )

    uncached = [evaluate_submission(frame(seed), truth) for seed in range(3)]
    assert len({round(r.mAP, 6) for r in uncached}) > 1  # the confidences do change the scores
    reads: list[str] = []
    read_cell_mask = CellTruth.read_cell_mask
    monkeypatch.setattr(CellTruth, "read_cell_mask", lambda self, i: reads.append(i) or read_cell_mask(self, i))
    cache: dict = {}
    for seed in range(3):
        assert evaluate_submission(frame(seed), truth, iou_cache=cache).per_class_ap == uncached[seed].per_class_ap
    assert sorted(reads) == ["img1", "img2"] and len(cache["img1"]) == 3
    with pytest.raises(ValueError, match="workers=1"):
        evaluate_submission(frame(0), truth, iou_cache=cache, workers=2)
