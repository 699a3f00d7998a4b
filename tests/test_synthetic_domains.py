"""Cell lines and acquisition batches of the synthetic benchmark: each knob moves what it names, hold-outs stay out
of training, and a benchmark without them is written as before."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from src.synthetic import SyntheticConfig, generate_image, write_dataset
from src.synthetic.domains import AcquisitionBatch, CellLine, DomainConfig, assign_domains, draw_cell_lines

SEEDS = range(6)
SIZE = 128


def _images(**domain) -> list:
    return [generate_image(seed, SIZE, SyntheticConfig(), **domain) for seed in SEEDS]


def _mean_cell_area(images) -> float:
    return float(np.mean([np.mean(np.bincount(i.cell_mask.ravel())[1:]) for i in images]))


def _elongation(images) -> float:
    """Mean ratio of the long to the short axis of every whole cell's second moments."""
    ratios = []
    for image in images:
        for k in range(1, int(image.cell_mask.max()) + 1):
            ys, xs = np.nonzero(image.cell_mask == k)
            if len(xs) < 20 or xs.min() == 0 or ys.min() == 0 or xs.max() == SIZE - 1 or ys.max() == SIZE - 1:
                continue
            eigen = np.linalg.eigvalsh(np.cov(np.stack([xs, ys])))
            ratios.append(np.sqrt(eigen[1] / max(eigen[0], 1e-6)))
    return float(np.mean(ratios))


def test_cell_scale_grows_the_cells():
    assert _mean_cell_area(_images(cell_line=CellLine(cell_scale=1.25))) > 1.2 * _mean_cell_area(
        _images(cell_line=CellLine(cell_scale=0.8))
    )


def test_nucleus_scale_grows_the_nuclei_inside_same_sized_cells():
    def nucleus_share(images) -> float:
        return float(np.mean([(i.nuclei_mask > 0).sum() / (i.cell_mask > 0).sum() for i in images]))

    assert nucleus_share(_images(cell_line=CellLine(nucleus_scale=1.2))) > 1.2 * nucleus_share(
        _images(cell_line=CellLine(nucleus_scale=0.8))
    )


def test_density_places_more_cells():
    def cells(images) -> float:
        return float(np.mean([i.cell_mask.max() for i in images]))

    assert cells(_images(cell_line=CellLine(density=1.4))) > cells(_images(cell_line=CellLine(density=0.7)))


def test_elongation_stretches_the_outline():
    assert _elongation(_images(cell_line=CellLine(elongation=0.5))) > 1.1 * _elongation(_images())


def test_batch_gains_background_and_blur_move_the_pixels():
    plain = _images()
    bright = _images(batch=AcquisitionBatch(gains=(2.0, 2.0, 2.0, 2.0)))
    for b, p in zip(bright, plain, strict=True):  # the brightest pixels: signal, not the fixed offset and noise
        assert (np.quantile(b.rgby, 0.99, axis=(0, 1)) > 1.4 * np.quantile(p.rgby, 0.99, axis=(0, 1))).all()
    lifted = _images(batch=AcquisitionBatch(background=12.0))
    for lift, p in zip(lifted, plain, strict=True):
        background = p.cell_mask == 0
        assert lift.rgby[background].mean() > p.rgby[background].mean() + 8
    blurred = _images(batch=AcquisitionBatch(blur_scale=1.8))

    def sharpness(images) -> float:
        return float(np.mean([cv2.Laplacian(i.rgby[..., 2], cv2.CV_64F).var() for i in images]))

    assert sharpness(blurred) < sharpness(plain)
    for b, p in zip(blurred, plain, strict=True):  # the acquisition never moves the truth
        np.testing.assert_array_equal(b.cell_mask, p.cell_mask)


def test_held_out_lines_and_batches_appear_in_test_images_only():
    ids = {"train": [f"tr{i}" for i in range(200)], "test": [f"te{i}" for i in range(200)]}
    table = assign_domains(ids, DomainConfig(cell_lines=4, batches=3, holdout_cell_lines=1, holdout_batches=1), 0)
    assert list(table["ID"]) == ids["train"] + ids["test"]
    train, test = table[table["split"] == "train"], table[table["split"] == "test"]
    assert set(train["cell_line"]) == {"line0", "line1", "line2"} and set(train["batch"]) == {"batch0", "batch1"}
    assert set(test["cell_line"]) == {"line0", "line1", "line2", "line3"} and "batch2" in set(test["batch"])
    again = assign_domains(ids, DomainConfig(cell_lines=4, batches=3, holdout_cell_lines=1, holdout_batches=1), 0)
    pd.testing.assert_frame_equal(table, again)


def test_a_hold_out_must_leave_training_a_line():
    with pytest.raises(ValueError, match="--holdout_cell_lines 2 must leave training at least one of the 2"):
        DomainConfig(cell_lines=2, holdout_cell_lines=2)


def test_lines_come_from_the_dataset_seed():
    assert draw_cell_lines(3, 0) == draw_cell_lines(3, 0) != draw_cell_lines(3, 1)


def test_benchmark_with_domains_writes_metadata_and_one_without_keeps_its_manifest(tmp_path: Path):
    domains = DomainConfig(cell_lines=2, batches=2, holdout_cell_lines=1)
    write_dataset(tmp_path / "shifted", 3, 3, SIZE, seed=2, config=SyntheticConfig(), workers=1, domains=domains)
    metadata = pd.read_csv(tmp_path / "shifted" / "metadata.csv")
    assert list(metadata.columns) == ["ID", "split", "cell_line", "batch"] and len(metadata) == 6
    assert set(metadata.loc[metadata["split"] == "train", "cell_line"]) <= {"line0"}
    manifest = json.loads((tmp_path / "shifted" / "synthetic_config.json").read_text())
    assert manifest["domains"] == domains.to_dict()
    write_dataset(tmp_path / "plain", 3, 3, SIZE, seed=2, config=SyntheticConfig(), workers=1)
    assert not (tmp_path / "plain" / "metadata.csv").exists()
    assert "domains" not in json.loads((tmp_path / "plain" / "synthetic_config.json").read_text())
    # the same folder re-made without domains drops the stale metadata
    write_dataset(tmp_path / "shifted", 3, 3, SIZE, seed=2, config=SyntheticConfig(), workers=1)
    assert not (tmp_path / "shifted" / "metadata.csv").exists()
