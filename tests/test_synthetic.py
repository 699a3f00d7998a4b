"""Synthetic HPA-like benchmark: determinism, Kaggle layout, per-cell truth, label statistics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from src.data.classes import CHANNELS, NEGATIVE, NUM_CLASSES
from src.data.io import read_labels, read_rgby
from src.synthetic import SyntheticConfig, generate_image, image_id, write_dataset
from src.synthetic.label_stats import (
    CLASS_IMAGE_COUNTS,
    LABEL_COUNT_IMAGES,
    NUM_REAL_IMAGES,
    class_frequencies,
    label_count_probabilities,
    sampling_weights,
)
from src.synthetic.labels import MITOTIC_SPINDLE, NUCLEAR_CLASSES, assign_cell_labels, sample_label_sets

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZE = 128


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "bench"
    write_dataset(out, num_train=4, num_test=2, size=SIZE, seed=5, config=SyntheticConfig(), workers=1)
    return out


def _read_mask(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_same_seed_gives_identical_image() -> None:
    first = generate_image(11, SIZE, SyntheticConfig())
    second = generate_image(11, SIZE, SyntheticConfig())
    assert np.array_equal(first.rgby, second.rgby)
    assert np.array_equal(first.cell_mask, second.cell_mask)
    assert first.cell_labels == second.cell_labels
    assert not np.array_equal(first.rgby, generate_image(12, SIZE, SyntheticConfig()).rgby)


def test_output_bytes_do_not_depend_on_worker_count(tmp_path: Path, dataset: Path) -> None:
    other = tmp_path / "two_workers"
    write_dataset(other, num_train=4, num_test=2, size=SIZE, seed=5, config=SyntheticConfig(), workers=2)
    files = sorted(p.relative_to(dataset) for p in dataset.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file())
    for rel in files:
        assert (dataset / rel).read_bytes() == (other / rel).read_bytes(), rel


def test_kaggle_layout_and_truth_files(dataset: Path) -> None:
    train = read_labels(dataset / "train.csv")
    assert (
        list(train["ID"]) == [image_id("train", i, 4) for i in range(4)] == [f"synth-train-0000{i}" for i in range(4)]
    )
    submission = pd.read_csv(dataset / "sample_submission.csv", keep_default_na=False)
    assert list(submission.columns) == ["ID", "ImageWidth", "ImageHeight", "PredictionString"]
    assert list(submission["ID"]) == ["synth-test-00000", "synth-test-00001"]
    assert (submission["ImageWidth"] == SIZE).all() and (submission["PredictionString"] == "").all()
    for split, ids in (("train", train["ID"]), ("test", submission["ID"])):
        for name in ids:
            assert "_" not in name
            assert read_rgby(dataset, name, split=split).shape == (SIZE, SIZE, 4)
            for channel in CHANNELS:
                assert _read_mask(dataset / split / f"{name}_{channel}.png").dtype == np.uint8
            for kind in ("cell_masks", "nuclei_masks"):
                mask = _read_mask(dataset / "truth" / kind / f"{name}.png")
                assert mask.dtype == np.uint16 and mask.shape == (SIZE, SIZE)
    cells = pd.read_csv(dataset / "truth" / "cell_labels.csv", dtype={"Label": str})
    assert list(cells.columns) == ["ID", "cell_id", "Label"]
    assert set(cells["ID"]) == set(train["ID"]) | set(submission["ID"])
    manifest = json.loads((dataset / "synthetic_config.json").read_text())
    assert manifest["seed"] == 5 and manifest["size"] == SIZE and manifest["config"]["cell_dropout"] == 0.25


def test_image_label_is_union_of_cell_labels(dataset: Path) -> None:
    train = read_labels(dataset / "train.csv").set_index("ID")
    cells = pd.read_csv(dataset / "truth" / "cell_labels.csv", dtype={"Label": str})
    for name, group in cells.groupby("ID"):
        union = sorted({int(c) for label in group["Label"] for c in label.split("|")})
        if name in train.index:
            assert sorted(train.loc[name, "labels"]) == union, name
        mask = _read_mask(dataset / "truth" / "cell_masks" / f"{name}.png")
        assert sorted(group["cell_id"]) == list(range(1, int(mask.max()) + 1)) == sorted(set(np.unique(mask)) - {0})


def test_nucleus_k_lies_inside_cell_k() -> None:
    for seed in range(6):
        image = generate_image(seed, 192, SyntheticConfig())
        assert 5 <= len(image.cell_labels) <= 25
        assert set(np.unique(image.nuclei_mask)) - {0} == set(image.cell_labels)
        inside = image.nuclei_mask > 0
        assert np.array_equal(image.cell_mask[inside], image.nuclei_mask[inside])


def test_negative_cells_have_no_green_signal() -> None:
    image = generate_image(3, 256, SyntheticConfig(noise=0.0), image_labels=[16])
    green = image.rgby[..., 1].astype(np.float32)
    positive = [k for k, labels in image.cell_labels.items() if labels == [16]]
    negative = [k for k, labels in image.cell_labels.items() if labels == [NEGATIVE]]
    assert positive
    for k in negative:
        assert np.median(green[image.cell_mask == k]) <= 2
    assert min(np.median(green[image.cell_mask == k]) for k in positive) > 5


def test_mitotic_spindle_only_in_mitotic_cells() -> None:
    for seed in range(4):
        image = generate_image(seed, 192, SyntheticConfig(), image_labels=[MITOTIC_SPINDLE, 0])
        assert image.mitotic
        for k, labels in image.cell_labels.items():
            if MITOTIC_SPINDLE in labels:
                assert k in image.mitotic
            if k in image.mitotic:
                assert not NUCLEAR_CLASSES & set(labels)


def test_cell_labels_are_subsets_with_heterogeneity() -> None:
    rng = np.random.default_rng(0)
    mitotic = np.zeros(200, dtype=bool)
    labels = assign_cell_labels(rng, [0, 7, 16], mitotic, cell_dropout=0.3, negative_cell_rate=0.1)
    assert all(set(ids) <= {0, 7, 16} or ids == [NEGATIVE] for ids in labels)
    negative_share = np.mean([ids == [NEGATIVE] for ids in labels])
    assert 0.04 < negative_share < 0.2
    assert 0.5 < np.mean([0 in ids for ids in labels]) < 0.8
    assert [[NEGATIVE]] * 3 == assign_cell_labels(rng, [NEGATIVE], mitotic[:3], 0.3, 0.1)


def test_label_constants_are_consistent() -> None:
    assert len(CLASS_IMAGE_COUNTS) == NUM_CLASSES
    assert sum(LABEL_COUNT_IMAGES) == NUM_REAL_IMAGES
    # Each image carries 1..5 labels, so the class counts sum to the number of labels in all images.
    assert sum(CLASS_IMAGE_COUNTS) == sum((k + 1) * n for k, n in enumerate(LABEL_COUNT_IMAGES))
    assert np.isclose(label_count_probabilities().sum(), 1.0) and np.isclose(sampling_weights().sum(), 1.0)
    drawn = sample_label_sets(np.random.default_rng(0), 40_000, sampling_weights(), label_count_probabilities())
    assert np.abs(drawn.mean(axis=0) - class_frequencies()).max() < 0.01
    assert not drawn[drawn.sum(axis=1) > 1, NEGATIVE].any()


def test_label_constants_match_the_real_labels() -> None:
    path = SHARED_DATA / "hpa_train_labels_full.csv"
    if not path.is_file():
        pytest.skip(f"real competition labels not available at {path} (only in the project's shared data)")
    frame = read_labels(path)
    sets = [set(labels) for labels in frame["labels"]]
    assert len(sets) == NUM_REAL_IMAGES
    assert tuple(sum(c in s for s in sets) for c in range(NUM_CLASSES)) == CLASS_IMAGE_COUNTS
    assert tuple(np.bincount([len(s) for s in sets])[1:]) == LABEL_COUNT_IMAGES


def test_rerun_with_same_parameters_keeps_files(dataset: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in dataset.rglob("*.png")}
    write_dataset(dataset, num_train=4, num_test=2, size=SIZE, seed=5, config=SyntheticConfig(), workers=1)
    assert before == {p: p.stat().st_mtime_ns for p in dataset.rglob("*.png")}


def test_refuses_to_overwrite_a_real_dataset(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("ID,Label\nabc,0\n")
    with pytest.raises(FileExistsError, match="not a synthetic benchmark"):
        write_dataset(tmp_path, 1, 0, SIZE, 0, SyntheticConfig(), workers=1)


def test_make_synthetic_data_cli(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    command = [sys.executable, "make_synthetic_data.py", "--out", str(out), "--num_train", "2", "--num_test", "1"]
    command += ["--size", "96", "--seed", "1", "--workers", "1", "--cell_dropout", "0.4"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "2 train + 1 test images" in result.stdout
    assert len(list((out / "train").glob("*.png"))) == 8 and len(list((out / "test").glob("*.png"))) == 4
    assert json.loads((out / "synthetic_config.json").read_text())["config"]["cell_dropout"] == 0.4
