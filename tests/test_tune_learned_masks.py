"""benchmarks/tune_learned_masks.py on the tiny synthetic benchmark with random weights: a grid point, scores in [0, 1]."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from src.cell_masks import learned
from src.cell_masks.learned_val import split_held_out
from tests.conftest import load_script, run_script
from tests.test_cell_masks_learned import random_weights


def nuclei_folder(tiny_synthetic: Path, folder: Path, count: int) -> Path:
    """A nuclei folder in the dsb2018_stage1_train_fluo layout, from the synthetic truth of ``count`` train images."""
    for sub in ("images", "label_masks"):
        (folder / sub).mkdir(parents=True)
    for k in range(count):
        image_id = f"synth-train-{k:05d}"
        shutil.copy(tiny_synthetic / "train" / f"{image_id}_blue.png", folder / "images" / f"{image_id}.png")
        shutil.copy(tiny_synthetic / "truth" / "nuclei_masks" / f"{image_id}.png", folder / "label_masks")
    return folder


def test_tuning_writes_a_grid_point_and_scores_in_range(
    tiny_synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tuner = load_script("benchmarks/tune_learned_masks.py")
    calls = []
    network_maps = learned.augmented_maps
    monkeypatch.setattr(learned, "augmented_maps", lambda *a, **k: calls.append(1) or network_maps(*a, **k))
    dsb = nuclei_folder(tiny_synthetic, tmp_path / "dsb", 3)
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


def test_held_out_tuning_reads_the_images_the_weights_never_trained_on(tiny_synthetic: Path, tmp_path: Path) -> None:
    tuner = load_script("benchmarks/tune_learned_masks.py")
    dsb = nuclei_folder(tiny_synthetic, tmp_path / "dsb", 8)
    weights = tmp_path / "w.pt"
    run_script(
        "train_cell_segmenter.py", "--synthetic_dir", "", "--dsb_dir", str(dsb), "--steps", "1", "--val_fraction",
        "0.25", "--seed", "3", "--batch_size", "2", "--patch", "64", "--decoder_channels", "16,16,16,8,8",
        "--no_progress", "--out", str(weights),
    )  # fmt: skip
    paths = sorted((dsb / "images").glob("*.png"))
    held = tuner.held_out_paths(paths, weights)
    assert len(held) == 2 and held == split_held_out(paths, 0.25, 3)[1]
    assert held != split_held_out(paths, 0.25, 0)[1]  # the weights' seed, not a default one
    args = tuner.parse_args(
        ["--weights", str(weights), "--dsb_dir", str(dsb), "--dsb_held_out", "--fixed", "{tta_scales: [0.8, 1.25]}",
         "--seed_h", "0.05", "--out", str(tmp_path / "best.yaml")]
    )  # fmt: skip
    (row,) = tuner.tune(args)
    assert row["setting"]["tta_scales"] == [0.8, 1.25] and 0.0 <= row["dsb_nuclei_f1"] <= 1.0
    with pytest.raises(SystemExit, match="trained on 8 DSB2018 images, the folder gives 7"):
        tuner.held_out_paths(paths[:7], weights)
    with pytest.raises(SystemExit, match="records no held-out"):
        tuner.held_out_paths(paths, random_weights(tmp_path / "r.pt"))
    for fixed in ("{seed_h: 0.1}", "{tta_scale: [1]}", "[1]"):  # a grid field, a typo, not a mapping
        with pytest.raises(SystemExit):
            tuner.parse_args(["--weights", str(weights), "--dsb_dir", str(dsb), "--fixed", fixed, "--out", "x"])
