"""The domain-shift table of scripts/run_profiles.sh: drops per line and their mean, from evaluate.py JSONs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import load_script

table = load_script("scripts/domain_shift_table.py")


def _metadata(tmp_path):
    rows = [("a", "train", "line0"), ("b", "train", "line0"), ("c", "test", "line0"), ("d", "train", "line1")]
    rows += [("e", "test", "line1"), ("f", "test", "line1")]
    frame = pd.DataFrame(rows, columns=["ID", "split", "cell_line"]).assign(batch="batch0")
    frame.to_csv(tmp_path / "metadata.csv", index=False)
    return frame


def test_each_line_gets_its_drop_and_the_last_row_their_mean(tmp_path, capsys):
    metadata = _metadata(tmp_path)
    maps = {
        "line0": {"random_seen": 0.5, "random_unseen": 0.3, "selfsup_seen": 0.6, "selfsup_unseen": 0.55},
        "line1": {"random_seen": 0.4, "random_unseen": 0.4, "selfsup_seen": 0.5, "selfsup_unseen": 0.45},
    }
    results = {line: {name: {"mAP": value} for name, value in scores.items()} for line, scores in maps.items()}
    inits, rows = table.shift_rows(results, metadata)
    assert inits == ["random", "selfsup"]
    assert rows[0][:3] == ["line0", 2, 1] and rows[1][:3] == ["line1", 1, 2]
    assert rows[0][3:] == pytest.approx([0.5, 0.3, 0.2, 0.6, 0.55, 0.05])
    assert rows[2][0] == "mean" and rows[2][3:] == pytest.approx([0.45, 0.35, 0.1, 0.55, 0.5, 0.05])

    paths = []
    for line, report in results.items():
        path = tmp_path / f"{line}.json"
        path.write_text(json.dumps({"results": report}))
        paths.append(f"{line}={path}")
    table.main(table.parse_args(["--data_dir", str(tmp_path), *paths]))
    out = capsys.readouterr().out
    assert "| line0 | 2 | 1 | 0.500 | 0.300 | 0.200 |" in out and "smallest mean drop: selfsup" in out
    assert out.startswith("| cell line | train images |")


def test_batches_are_counted_by_their_column_and_a_tiny_negative_drop_prints_as_zero(tmp_path):
    metadata = _metadata(tmp_path).assign(batch=["b0", "b1", "b0", "b0", "b1", "b1"])
    report = {"random_seen": {"mAP": 0.5}, "random_unseen": {"mAP": 0.5002}}
    inits, rows = table.shift_rows({"b1": report}, metadata, "batch")
    assert rows[0][:3] == ["b1", 1, 2]
    text = table.markdown(inits, rows, "batch")
    assert text.startswith("| batch | train images |") and "| 0.000 |" in text and "-0.000" not in text


def test_a_missing_unseen_result_is_named(tmp_path):
    metadata = _metadata(tmp_path)
    with pytest.raises(ValueError, match=r"line0: no result for \['random_unseen'\]"):
        table.shift_rows({"line0": {"random_seen": {"mAP": 0.5}}}, metadata)
