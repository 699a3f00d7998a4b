"""Kaggle submission codec: RLE round trips, PredictionString parsing, CSV read/write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.submission.codec import (
    SUBMISSION_COLUMNS,
    CellPrediction,
    cell_mask_predictions,
    decode_binary_mask,
    decode_rle_counts,
    encode_binary_mask,
    encode_instance_masks,
    format_prediction_string,
    parse_prediction_string,
    read_submission,
    write_submission,
)


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (13, 7), (64, 64)])
@pytest.mark.parametrize("fill", ["empty", "full", "random", "block"])
def test_mask_round_trip(shape: tuple[int, int], fill: str) -> None:
    rng = np.random.default_rng(sum(shape))
    mask = {
        "empty": np.zeros(shape, bool),
        "full": np.ones(shape, bool),
        "random": rng.random(shape) < 0.5,
        "block": np.pad(np.ones((shape[0] // 2, shape[1] // 3), bool), ((shape[0] // 4, 0), (1, 0)))[
            : shape[0], : shape[1]
        ],
    }[fill]
    mask = np.pad(mask, ((0, shape[0] - mask.shape[0]), (0, shape[1] - mask.shape[1])))
    encoded = encode_binary_mask(mask)
    assert encoded.isascii() and " " not in encoded
    decoded = decode_binary_mask(encoded, *shape)
    assert decoded.dtype == bool and decoded.shape == shape
    assert np.array_equal(decoded, mask)
    assert decode_rle_counts(encoded).sum() == shape[0] * shape[1]


def test_rle_counts_run_in_fortran_order() -> None:
    mask = np.array([[1, 0], [1, 0], [0, 1]], bool)  # column-major: 1 1 0 | 0 0 1
    assert decode_rle_counts(encode_binary_mask(mask)).tolist() == [0, 2, 3, 1]


def test_rle_counts_of_long_runs_and_deltas() -> None:
    mask = np.zeros((300, 500), bool)
    mask[:, 100:101] = True  # runs 30000, 300, 119700: large counts
    mask[5:250, 400:450] = True  # many runs whose lengths shrink and grow (negative deltas)
    counts = decode_rle_counts(encode_binary_mask(mask))
    rebuilt = np.repeat(np.arange(len(counts)) % 2, counts).astype(bool).reshape(500, 300).T
    assert np.array_equal(rebuilt, mask)


def test_decode_rejects_wrong_size_and_garbage() -> None:
    encoded = encode_binary_mask(np.eye(4, dtype=bool))
    with pytest.raises(ValueError, match="16 pixels, not 8x8"):
        decode_binary_mask(encoded, 8, 8)
    with pytest.raises(ValueError, match="16 pixels, not 2x2"):
        decode_binary_mask(encoded, 2, 2)
    with pytest.raises(ValueError, match="invalid RLE string"):
        decode_binary_mask("not base64!", 4, 4)
    with pytest.raises(ValueError, match="invalid RLE string"):
        decode_binary_mask("aGVsbG8=", 4, 4)  # base64 of 'hello', not zlib


def test_encode_rejects_non_2d_mask() -> None:
    with pytest.raises(ValueError, match="shape"):
        encode_binary_mask(np.zeros((2, 3, 4), bool))


def test_many_cells_round_trip_through_prediction_string() -> None:
    cell_mask = np.zeros((40, 60), np.uint16)
    for cell_id in range(1, 61):  # 60 cells of 4x10 px tiling the image
        row, col = divmod(cell_id - 1, 6)
        cell_mask[row * 4 : row * 4 + 4, col * 10 : col * 10 + 10] = cell_id
    scores = {cell_id: {cell_id % 18: cell_id / 100, 18: 0.5} for cell_id in range(1, 61)}
    predictions = parse_prediction_string(cell_mask_predictions(cell_mask, scores))
    assert len(predictions) == 120
    for index, prediction in enumerate(predictions):
        cell_id = index // 2 + 1
        assert prediction.class_id == (cell_id % 18 if index % 2 == 0 else 18)
        assert prediction.confidence == pytest.approx(scores[cell_id][prediction.class_id])
        assert np.array_equal(decode_binary_mask(prediction.rle, 40, 60), cell_mask == cell_id)


def test_format_and_parse_are_inverse() -> None:
    predictions = [CellPrediction(3, 0.125, "eNoLAQAA"), CellPrediction(18, 1.0, "eNoLBAAA")]
    text = format_prediction_string(predictions)
    assert text == "3 0.125 eNoLAQAA 18 1 eNoLBAAA"
    assert parse_prediction_string(text) == predictions
    assert parse_prediction_string("") == []
    assert parse_prediction_string(float("nan")) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 0.5", "2 tokens, not a multiple of 3"),
        ("0 0.5 abc 1", "4 tokens"),
        ("x 0.5 abc", "triplet 0 has class 'x'"),
        ("0 0.5 abc 1 high abc", "triplet 1 has class '1' and confidence 'high'"),
        ("19 0.5 abc", "class 19 outside 0..18"),
        ("-1 0.5 abc", "class -1 outside"),
        ("0 nan abc", "non-finite confidence"),
    ],
)
def test_parse_errors_name_the_row(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=rf"row 7: .*{message}"):
        parse_prediction_string(text, "row 7")


def test_write_and_read_submission_keep_empty_prediction_strings(tmp_path: Path) -> None:
    mask = np.zeros((5, 6), bool)
    mask[1:3, 2:5] = True
    text = format_prediction_string([CellPrediction(2, 0.75, encode_binary_mask(mask))])
    rows = [
        {"ID": "0001", "ImageWidth": 6, "ImageHeight": 5, "PredictionString": text},
        {"ID": "0002", "ImageWidth": 6, "ImageHeight": 5, "PredictionString": ""},
        {"ID": "0003", "ImageWidth": 6, "ImageHeight": 5, "PredictionString": None},
    ]
    path = tmp_path / "sub" / "submission.csv"
    write_submission(path, rows)
    assert path.read_text().splitlines()[0] == ",".join(SUBMISSION_COLUMNS)
    assert [p.name for p in path.parent.iterdir()] == ["submission.csv"]  # no temporary file left
    frame = read_submission(path)
    assert frame["ID"].tolist() == ["0001", "0002", "0003"]  # leading zeros kept
    assert frame["PredictionString"].tolist() == [text, "", ""]
    assert frame["ImageWidth"].tolist() == [6, 6, 6]
    (prediction,) = parse_prediction_string(frame.loc[0, "PredictionString"])
    assert np.array_equal(decode_binary_mask(prediction.rle, 5, 6), mask)


def test_read_submission_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_submission(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"ID": ["a"], "PredictionString": [""]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['ImageWidth', 'ImageHeight'\]"):
        read_submission(bad)
    duplicated = tmp_path / "dup.csv"
    pd.DataFrame({"ID": ["a", "a"], "ImageWidth": 1, "ImageHeight": 1, "PredictionString": ""}).to_csv(
        duplicated, index=False
    )
    with pytest.raises(ValueError, match="duplicate ID"):
        read_submission(duplicated)


def test_instance_encoding_equals_encoding_each_full_mask():
    rng = np.random.default_rng(0)
    for _ in range(200):  # tiny random label images: cells touching every border, empty ids, single pixels
        height, width = (int(n) for n in rng.integers(1, 12, 2))
        cell_mask = rng.integers(0, 4, (height, width)).astype(np.uint16)
        encoded = encode_instance_masks(cell_mask, [1, 2, 3, 9])
        assert encoded == {k: encode_binary_mask(cell_mask == k) for k in (1, 2, 3, 9)}
