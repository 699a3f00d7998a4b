"""benchmarks/tune_learned_masks.py on the tiny synthetic benchmark with random weights: a grid point, scores in [0, 1]."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from src.cell_masks import learned
from tests.conftest import load_script
from tests.test_cell_masks_learned import random_weights


def test_tuning_writes_a_grid_point_and_scores_in_range(
    tiny_synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tuner = load_script("benchmarks/tune_learned_masks.py")
    calls = []
    network_maps = learned.predict_maps
    monkeypatch.setattr(learned, "predict_maps", lambda *a, **k: calls.append(1) or network_maps(*a, **k))
    dsb = tmp_path / "dsb"  # a nuclei folder in the dsb2018_stage1_train_fluo layout, from the synthetic truth
    for sub in ("images", "label_masks"):
        (dsb / sub).mkdir(parents=True)
    for k in range(3):
        image_id = f"synth-train-{k:05d}"
        shutil.copy(tiny_synthetic / "train" / f"{image_id}_blue.png", dsb / "images" / f"{image_id}.png")
        shutil.copy(tiny_synthetic / "truth" / "nuclei_masks" / f"{image_id}.png", dsb / "label_masks")
    out = tmp_path / "best.yaml"
    args = tuner.parse_args(
        ["--weights", str(random_weights(tmp_path / "w.pt")), "--dsb_dir", str(dsb), "--dsb_limit", "2",
         "--synthetic_dir", str(tiny_synthetic), "--seed_h", "0,0.05", "--foreground_threshold", "0.3,0.5",
         "--out", str(out)]
    )  # fmt: skip
    rows = tuner.tune(args)
    assert len(rows) == 4
    assert (
        0 < len(calls) <= 2 + len(list((tiny_synthetic / "train").glob("*_blue.png")))
    )  # once per image, not per point
    assert [row["score"] for row in rows] == sorted((row["score"] for row in rows), reverse=True)
    for row in rows:
        assert 0.0 <= row["dsb_nuclei_f1"] <= 1.0 and 0.0 <= row["synthetic_cells_f1"] <= 1.0
    best = yaml.safe_load(out.read_text())
    assert best == rows[0]["setting"]
    assert best["seed_h"] in (0.0, 0.05) and best["foreground_threshold"] in (0.3, 0.5)
    assert set(best) <= set(tuner.LearnedParams.__dataclass_fields__)
