"""The cell stage end to end: crops -> cell classifier (run_classification.py --cell_crop_dir) -> fusion in
run_cam_infer.py -> evaluate.py; and the fusion chosen on the validation fold (scripts/tune_scoring.sh)."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from src.cam.cell_source import CellSource, crop_format, crop_specs_to_cut, predict_cells
from src.cam.infer_config import InferConfig
from src.cam.infer_images import InferImages
from src.cam.map_source import CheckpointSpec
from tests.conftest import ROOT, run_script


@pytest.fixture(scope="module")
def crop_store(tiny_synthetic, tmp_path_factory) -> Path:
    """16 px crops of the tiny benchmark's training split, from classical masks computed on demand (inference
    cuts the test cells itself)."""
    root = tmp_path_factory.mktemp("cells")
    run_script(
        "extract_cell_crops.py", "--data_dir", str(tiny_synthetic), "--split", "train",
        "--mask_dir", str(root / "masks_train"), "--crop_dir", str(root / "crops"), "--crop_size", "16",
        "--num_workers", "1",
    )  # fmt: skip
    return root


@pytest.fixture(scope="module")
def cell_checkpoint(tiny_synthetic, crop_store) -> Path:
    """A test_resnet cell classifier trained one epoch on the crops, validated on the per-cell truth."""
    return train_cell_classifier(tiny_synthetic, crop_store / "crops", crop_store / "run")


def train_cell_classifier(tiny_synthetic: Path, crop_dir: Path, root: Path) -> Path:
    run_script(
        "run_classification.py", "--data_dir", str(tiny_synthetic), "--cell_crop_dir", str(crop_dir),
        "--timm_model_name", "test_resnet", "--batch_size", "32", "--num_workers", "0", "--max_epochs", "1",
        "--accelerator", "cpu", "--optim_name", "adam", "--lr", "1e-3", "--default_root_dir", str(root),
        "--segm_truth_dir", str(tiny_synthetic / "truth"),
    )  # fmt: skip
    return root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"


def infer_test_split(data: Path, crop_store: Path, sub: Path, ckpt_paths: str, fusion: str) -> None:
    run_script(
        "run_cam_infer.py", "--sub_path", str(sub), "--data_dir", str(data), "--mask_dir", str(crop_store / "masks_test"),
        "--num_workers", "1", "--tta_flips", "false", "--ckpt_paths", ckpt_paths, "--fusion", fusion,
    )  # fmt: skip


def test_cell_classifier_fused_with_cam_is_scored_by_evaluate(
    tiny_synthetic, tiny_checkpoint, crop_store, cell_checkpoint
):
    hparams = yaml.safe_load((cell_checkpoint.parent.parent / "hparams.yaml").read_text())
    assert hparams["crop_spec"]["crop_size"] == 16 and hparams["num_inchannels"] == 4
    sub = crop_store / "fused.csv"
    infer_test_split(
        tiny_synthetic,
        crop_store,
        sub,
        f"[[both, 1.0, {tiny_checkpoint}], [cell, 1.0, {cell_checkpoint}]]",
        "{rule: geometric, cell_weight: 0.7, image_refine: max, image_refine_weight: 0.5}",
    )
    report = crop_store / "evaluation.json"
    run_script("evaluate.py", "--truth_dir", str(tiny_synthetic / "truth"), "--submission", f"fused={sub}",
               "--json", str(report))  # fmt: skip
    assert 0.0 <= json.loads(report.read_text())["results"]["fused"]["mAP"] <= 1.0


def test_cell_source_refuses_crops_of_another_format_and_image_classifiers(tiny_checkpoint, cell_checkpoint):
    source = CellSource(CheckpointSpec("cell", 1.0, str(cell_checkpoint)), torch.device("cpu"))
    assert source.predict(np.zeros((0, 16, 16, 4), np.uint8)).shape == (0, 19)  # an image without cells
    with pytest.raises(ValueError, match=str(cell_checkpoint)):
        source.predict(np.zeros((2, 32, 32, 4), np.uint8))
    with pytest.raises(ValueError, match="is not a cell classifier"):
        CellSource(CheckpointSpec("cell", 1.0, str(tiny_checkpoint)), torch.device("cpu"))


def test_cell_classifiers_of_two_crop_formats_are_averaged(
    tiny_synthetic, tiny_checkpoint, crop_store, cell_checkpoint
):
    """A 16 px and a 24 px classifier in one run: each scores crops of its own format, of the same cells."""
    run_script(
        "extract_cell_crops.py", "--data_dir", str(tiny_synthetic), "--split", "train",
        "--mask_dir", str(crop_store / "masks_train"), "--crop_dir", str(crop_store / "crops24"), "--crop_size", "24",
        "--num_workers", "1",
    )  # fmt: skip
    wide = train_cell_classifier(tiny_synthetic, crop_store / "crops24", crop_store / "run24")
    sources = [CellSource(CheckpointSpec("cell", w, str(c)), torch.device("cpu")) for w, c in
               ((1.0, cell_checkpoint), (3.0, wide))]  # fmt: skip
    specs = crop_specs_to_cut(sources + sources[:1])
    assert [s.crop_size for s in specs] == [16, 24]  # each format cut once
    settings = InferConfig(
        data_dir=str(tiny_synthetic),
        split="train",
        stage="test",
        ckpt_paths=[],
        mask_dir=str(crop_store / "masks_train"),
    )
    item = InferImages(["synth-train-00000"], settings, [64], specs)[0]
    assert "error" not in item, item.get("error")
    crops = item["crops"]
    assert {k[0]: v.shape[:3] for k, v in crops.items()} == {
        16: (len(item["cell_ids"]), 16, 16),
        24: (len(item["cell_ids"]), 24, 24),
    }
    alone = [s.predict(crops[crop_format(s.crop_spec)]) for s in sources]
    np.testing.assert_allclose(predict_cells(sources, crops), (alone[0] + 3.0 * alone[1]) / 4.0, rtol=1e-5)
    sub = crop_store / "two_formats.csv"
    infer_test_split(
        tiny_synthetic, crop_store, sub,
        f"[[both, 1.0, {tiny_checkpoint}], [cell, 1.0, {cell_checkpoint}], [cell, 1.0, {wide}]]",
        "{cell_weight: 1.0, cell_pool: max, cell_pool_weight: 0.9}",
    )  # fmt: skip
    rows = pd.read_csv(sub)
    assert len(rows) == 6 and rows["PredictionString"].notna().all()  # every test image, every one with cells


@pytest.mark.slow
def test_fusion_is_chosen_on_the_validation_fold(tiny_synthetic, tiny_checkpoint, crop_store, cell_checkpoint):
    out = crop_store / "tune"
    settings = '--fusion {"cell_weight":0.3}; --fusion {"cell_weight":1.0}'
    env = dict(os.environ, DATA_DIR=str(tiny_synthetic), CKPT=str(tiny_checkpoint), OUT=str(out), NUM_WORKERS="1",
               CKPT_PATHS=f"[[both, 1.0, {tiny_checkpoint}], [cell, 1.0, {cell_checkpoint}]]", SETTINGS=settings,
               PYTHON=str(Path(os.sys.executable)))  # fmt: skip
    result = subprocess.run(["bash", "scripts/tune_scoring.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    for config in out.glob("*.csv.config.yaml"):
        used = yaml.safe_load(config.read_text())
        assert (used["split"], used["fold"]) == ("train", 0)  # the validation fold, never the test split
    scores = json.loads((out / "evaluation.json").read_text())["results"]
    best = max(scores, key=lambda name: scores[name]["mAP"])
    chosen = (out / "best_setting.txt").read_text().strip()
    assert best == chosen.replace("--", "").replace(" ", "_").replace('"', "").replace("{", "").replace(
        "}", ""
    ).replace(":", "").replace(",", "")
