"""Image-level labels: macro F1, fitted thresholds, five-crop TTA, the thresholds file and predict_image_labels.py."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from src.image_labels.thresholds import load_thresholds, save_thresholds
from src.image_labels.tta import five_crops, tta_image_probs
from src.metrics.image_f1 import fit_class_thresholds, macro_f1
from tests.conftest import run_script


def test_fitted_thresholds_beat_half_on_low_scoring_positives():
    truth = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 0], [0, 0]])
    probs = np.array([[0.30, 0.1], [0.35, 0.1], [0.10, 0.9], [0.05, 0.8], [0.12, 0.7], [0.08, 0.2]])
    thresholds = fit_class_thresholds(truth, probs)
    assert 0.12 < thresholds[0] <= 0.30  # between the best negative and the worst positive
    assert 0.7 < thresholds[1] <= 0.8
    assert macro_f1(truth, probs, 0.5) == pytest.approx((0.0 + 0.8) / 2)
    assert macro_f1(truth, probs, thresholds) == pytest.approx(1.0)


def test_class_without_positives_keeps_default_and_is_left_out_of_macro_f1():
    truth = np.array([[1, 0], [0, 0]])
    probs = np.array([[0.9, 0.9], [0.1, 0.9]])
    assert fit_class_thresholds(truth, probs)[1] == 0.5
    assert macro_f1(truth, probs) == 1.0


def test_five_crops_are_the_corners_and_the_centre():
    images = torch.arange(16.0).view(1, 1, 4, 4)
    crops = five_crops(images, 0.5)
    assert [c.flatten().tolist() for c in crops] == [
        [0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15], [5, 6, 9, 10],
    ]  # fmt: skip


class MeanIntensity(nn.Module):
    """Logit = 20 * (mean of the view - 0.5): a bright spot counts more in a small crop than in the whole image."""

    def forward(self, images):
        return {"logits": 20 * (images.mean(dim=(1, 2, 3)) - 0.5)[:, None]}


def test_five_crop_max_catches_what_one_corner_shows():
    images = torch.zeros(1, 1, 8, 8)
    images[..., :4, :4] = 1.0  # the top-left quarter only
    whole = tta_image_probs(MeanIntensity(), images, "none").item()
    crop_max = tta_image_probs(MeanIntensity(), images, "five_crop_max", 0.5).item()
    crop_mean = tta_image_probs(MeanIntensity(), images, "five_crop_mean", 0.5).item()
    assert whole < 0.5 < crop_max
    assert crop_mean < crop_max


def test_thresholds_of_another_checkpoint_or_class_count_are_refused(tmp_path):
    ckpt, other = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
    ckpt.write_bytes(b"a")
    other.write_bytes(b"b")
    path = tmp_path / "thresholds.json"
    save_thresholds(path, np.full(19, 0.3), ckpt, tta="none", fold=0)
    assert load_thresholds(path, ckpt)[0].tolist() == [0.3] * 19
    with pytest.raises(ValueError, match="fitted for checkpoint"):
        load_thresholds(path, other)
    with pytest.raises(ValueError, match="19 classes, this model has 28"):
        load_thresholds(path, ckpt, num_classes=28)


def test_predict_image_labels_fits_on_a_fold_and_labels_the_test_split(tiny_synthetic, tiny_checkpoint, tmp_path):
    thresholds = tmp_path / "thresholds.json"
    run_script(
        "predict_image_labels.py", "--data_dir", str(tiny_synthetic), "--ckpt", str(tiny_checkpoint),
        "--fit_fold", "0", "--tta", "five_crop_max", "--thresholds", str(thresholds), "--out_dir", str(tmp_path / "out"),
    )  # fmt: skip
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["images"] == 6 and 0 <= metrics["macro_f1_fitted"] <= 1
    assert json.loads(thresholds.read_text())["fold"] == 0
    assert (tmp_path / "out" / "labels_at_0.5.csv").read_text().startswith("ID,Label")
    assert (tmp_path / "out" / "labels_fitted.csv").is_file()


def test_an_ensemble_refuses_a_single_fit_fold(tmp_path):
    import predict_image_labels

    args = predict_image_labels.parse_args(
        ["--data_dir", str(tmp_path), "--ckpt", "a.ckpt", "b.ckpt", "--fit_fold", "0", "--out_dir", str(tmp_path)]
    )
    with pytest.raises(ValueError, match="needs --fit_oof"):
        predict_image_labels.main(args)


@pytest.mark.slow
def test_train_kfold_trains_each_fold_and_fits_thresholds_out_of_fold(tiny_synthetic, tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {**os.environ, "PYTHON": sys.executable, "DATA_DIR": str(tiny_synthetic), "OUT_DIR": str(tmp_path), "K": "2"}
    result = subprocess.run(
        ["bash", "scripts/train_kfold.sh", "--timm_model_name", "test_resnet", "--input_size", "64", "--cache_size",
         "128", "--batch_size", "8", "--num_workers", "0", "--max_epochs", "1", "--accelerator", "cpu"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "thresholds_none.json").read_text())
    assert record["fold"] == "out-of-fold" and record["num_images"] == 24 and len(record["checkpoint"]) == 2
    assert json.loads((tmp_path / "image_labels_none" / "metrics.json").read_text())["images"] == 6
