import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from src.cam.classifier_source import ClassifierSource
from src.cam.infer_config import InferConfig
from src.cam.map_source import CheckpointSpec, normalise_per_class
from src.cam.pipeline import run_inference
from src.cam.sources import join_sources
from src.cell_masks.cache import mask_path, read_masks
from src.config import CONFIG_DIR, load_yaml
from src.submission.codec import decode_binary_mask, parse_prediction_string, read_submission
from src.submission.shards import merge_shards, output_path
from tests.conftest import run_script


def make_settings(data_dir: Path, ckpt: Path, mask_dir: Path, **overrides) -> InferConfig:
    config = load_yaml(CONFIG_DIR / "kaggle_submission.yaml")
    config.update(
        data_dir=str(data_dir), ckpt_paths=[["both", 1.0, str(ckpt)]], mask_dir=str(mask_dir),
        num_workers=0, batch_size=4, score_size=128, cam_size=32, device="cpu",
    )  # fmt: skip
    config.update(overrides)
    return InferConfig.from_dict(config, "test")


def test_submission_rows_decode_to_the_cached_masks(tiny_synthetic, tiny_checkpoint, tmp_path):
    settings = make_settings(tiny_synthetic, tiny_checkpoint, tmp_path / "masks")
    report = run_inference(settings, tmp_path / "sub.csv")
    assert not report.failed
    submission = read_submission(tmp_path / "sub.csv")
    expected_ids = pd.read_csv(tiny_synthetic / "sample_submission.csv")["ID"]
    assert sorted(submission["ID"]) == sorted(expected_ids)
    for row in submission.itertuples():
        _, cell_mask = read_masks(mask_path(tmp_path / "masks", row.ID))
        predictions = parse_prediction_string(row.PredictionString)
        cells = {p.rle for p in predictions}
        assert len(cells) == len(np.unique(cell_mask)) - 1  # every segmented cell appears
        for rle in cells:
            mask = decode_binary_mask(rle, row.ImageHeight, row.ImageWidth)
            ids = np.unique(cell_mask[mask])
            assert len(ids) == 1 and ids[0] > 0 and mask.sum() == (cell_mask == ids[0]).sum()


def test_shards_merged_equal_an_unsharded_run(tiny_synthetic, tiny_checkpoint, tmp_path):
    run_inference(make_settings(tiny_synthetic, tiny_checkpoint, tmp_path / "masks"), tmp_path / "full.csv")
    for index in range(2):
        settings = make_settings(tiny_synthetic, tiny_checkpoint, tmp_path / "masks", num_shards=2, shard_index=index)
        run_inference(settings, tmp_path / "sub.csv")
    assert output_path(tmp_path / "sub.csv", 2, 1).name == "sub.shard1-of-2.csv"
    merged = merge_shards(tmp_path / "sub.csv", 2).reset_index(drop=True)
    full = read_submission(tmp_path / "full.csv").reset_index(drop=True)
    columns = ["ID", "ImageWidth", "ImageHeight"]
    pd.testing.assert_frame_equal(merged[columns], full[columns])
    for merged_row, full_row in zip(merged.itertuples(), full.itertuples()):
        # other batches, other float rounding in the CPU kernels: the same cells and classes, confidences to 1e-4
        merged_scores, full_scores = (
            {(p.rle, p.class_id): p.confidence for p in parse_prediction_string(row.PredictionString)}
            for row in (merged_row, full_row)
        )
        assert merged_scores.keys() == full_scores.keys(), full_row.ID
        for key, confidence in full_scores.items():
            assert merged_scores[key] == pytest.approx(confidence, abs=1e-4), (full_row.ID, key)


def test_failed_then_interrupted_run_resumes_from_partial_rows(tiny_synthetic, tiny_checkpoint, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_synthetic, data)
    broken = sorted((data / "test").glob("*_green.png"))[0]
    original = broken.read_bytes()
    broken.write_bytes(b"not a png")
    settings = make_settings(data, tiny_checkpoint, tmp_path / "masks")
    report = run_inference(settings, tmp_path / "sub.csv")
    assert list(report.failed) == [broken.name.rsplit("_", 1)[0]]
    assert not (tmp_path / "sub.csv").exists()  # no CSV until every image is done
    partial = tmp_path / "sub.csv.partial.jsonl"
    lines = partial.read_text().splitlines()
    assert len(lines) == 1 + 5  # the fingerprint, then the five finished rows
    partial.write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])  # last row cut short, as by a kill
    broken.write_bytes(original)
    report = run_inference(settings, tmp_path / "sub.csv")
    assert (report.resumed, report.done, report.failed) == (4, 2, {})
    assert len(read_submission(tmp_path / "sub.csv")) == 6
    assert not partial.exists()


def test_partial_rows_of_other_settings_are_refused(tiny_synthetic, tiny_checkpoint, tmp_path):
    (tmp_path / "sub.csv.partial.jsonl").write_text(json.dumps({"fingerprint": "another run"}) + "\n")
    with pytest.raises(ValueError, match="other settings"):
        run_inference(
            make_settings(tiny_synthetic, tiny_checkpoint, tmp_path / "masks", conf_how="max"), tmp_path / "sub.csv"
        )


def test_gen_pseudo_uses_true_labels(tiny_synthetic, tiny_checkpoint, tmp_path):
    settings = make_settings(
        tiny_synthetic, tiny_checkpoint, tmp_path / "masks", stage="gen_pseudo", split="train", conf_how="cam_rate"
    )
    run_inference(settings, tmp_path / "pseudo.csv")
    pseudo = read_submission(tmp_path / "pseudo.csv")
    labels = pd.read_csv(tiny_synthetic / "train.csv", dtype=str).set_index("ID")["Label"]
    for row in pseudo.itertuples():
        allowed = {int(c) for c in labels[row.ID].split("|")} | {18}
        assert {p.class_id for p in parse_prediction_string(row.PredictionString)} <= allowed


def test_missing_checkpoint_is_named(tiny_synthetic, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        run_inference(make_settings(tiny_synthetic, tmp_path / "nowhere.ckpt", tmp_path / "masks"), tmp_path / "s.csv")


def test_missing_test_images_are_named_before_inference(tiny_synthetic, tiny_checkpoint, tmp_path):
    data = tmp_path / "data"
    (data / "test").mkdir(parents=True)
    (data / "sample_submission.csv").write_text("ID,ImageWidth,ImageHeight,PredictionString\nabsent,128,128,\n")
    with pytest.raises(FileNotFoundError, match="absent_red.png"):
        run_inference(make_settings(data, tiny_checkpoint, tmp_path / "masks"), tmp_path / "s.csv")


def test_join_weights_probabilities_and_cams_by_how_join(tmp_path):
    ckpt = tmp_path / "a.ckpt"
    ckpt.write_bytes(b"")
    both = CheckpointSpec.parse(["both", 1.0, str(ckpt)], 0)
    cam_only = CheckpointSpec.parse(["cam", 3.0, str(ckpt)], 1)
    probs_a, cams_a = torch.full((1, 19), 0.2), torch.zeros(1, 19, 2, 2)
    probs_b, cams_b = torch.full((1, 19), 0.9), torch.ones(1, 19, 2, 2)
    probs, cams = join_sources([(both, probs_a, cams_a), (cam_only, probs_b, cams_b)])
    assert torch.allclose(probs, probs_a)  # the 'cam' source does not vote on probabilities
    assert torch.allclose(cams, torch.full_like(cams, 0.75))
    with pytest.raises(ValueError, match="how_join"):
        CheckpointSpec.parse(["avg", 1.0, str(ckpt)], 0)


def test_each_class_map_is_divided_by_its_maximum():
    cams = torch.tensor([[[[0.0, 2.0], [1.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    normalised = normalise_per_class(cams)
    assert normalised[0, 0].max() == pytest.approx(1.0, abs=1e-4) and normalised[0, 1].max() == 0


def test_cell_logit_reads_signed_maps_and_scores_every_cell(tiny_synthetic, tiny_checkpoint, tmp_path):

    source = ClassifierSource(CheckpointSpec("both", 1.0, str(tiny_checkpoint)), torch.device("cpu"))
    images = torch.randint(0, 255, (2, 4, source.input_size, source.input_size), dtype=torch.uint8)
    probs, logits = source.predict(images, (16, 16), flips=True, scales=[1.0], map_kind="logit")
    _, cams = source.predict(images, (16, 16), flips=True, scales=[1.0], map_kind="cam")
    assert (logits < 0).any() and cams.min() >= 0 and cams.amax(dim=(2, 3)).max() <= 1.0 + 1e-4
    # the CAM is the ReLU'd logit map divided by its maximum (one view: no flip averaging in between)
    _, one_logit = source.predict(images, (16, 16), flips=False, scales=[1.0], map_kind="logit")
    _, one_cam = source.predict(images, (16, 16), flips=False, scales=[1.0], map_kind="cam")
    torch.testing.assert_close(one_cam, normalise_per_class(one_logit.clamp(min=0)), atol=1e-4, rtol=1e-4)

    settings = make_settings(tiny_synthetic, tiny_checkpoint, tmp_path / "masks", conf_how="cell_logit")
    assert not run_inference(settings, tmp_path / "sub.csv").failed
    for row in read_submission(tmp_path / "sub.csv").itertuples():
        _, cell_mask = read_masks(mask_path(tmp_path / "masks", row.ID))
        assert len({p.rle for p in parse_prediction_string(row.PredictionString)}) == len(np.unique(cell_mask)) - 1
    with pytest.raises(ValueError, match="cell_logit"):
        make_settings(tiny_synthetic, tiny_checkpoint, tmp_path / "masks", conf_how="cell_logit", cam_method="gradcam")


def test_fold_scores_only_that_fold_of_the_training_images(tiny_synthetic, tiny_checkpoint, tmp_path):
    from src.data.folds import load_or_make_folds
    from src.data.io import read_labels

    folds = load_or_make_folds(read_labels(tiny_synthetic / "train.csv"), tiny_synthetic)
    expected = sorted(folds.loc[folds["fold"] == 1, "ID"])
    settings = make_settings(tiny_synthetic, tiny_checkpoint, tmp_path / "masks", split="train", fold=1)
    assert not run_inference(settings, tmp_path / "val.csv").failed
    assert sorted(read_submission(tmp_path / "val.csv")["ID"]) == expected and 0 < len(expected) < 24
    with pytest.raises(ValueError, match="needs split 'train'"):
        make_settings(tiny_synthetic, tiny_checkpoint, tmp_path / "masks", fold=1)


def test_tune_scoring_script_scores_each_setting_on_the_validation_fold(tiny_synthetic, tiny_checkpoint, tmp_path):
    import os
    import subprocess

    from tests.conftest import ROOT

    env = dict(
        os.environ, PYTHON=os.environ.get("PYTHON", str(ROOT / ".venv" / "bin" / "python")),
        DATA_DIR=str(tiny_synthetic), CKPT=str(tiny_checkpoint), OUT=str(tmp_path / "tune"), NUM_WORKERS="0",
        SETTINGS="--conf_how image_prob; --conf_how cell_logit --logit_margin 3\n",
    )  # fmt: skip
    result = subprocess.run(
        ["bash", "scripts/tune_scoring.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    results = json.loads((tmp_path / "tune" / "evaluation.json").read_text())["results"]
    assert set(results) == {"conf_how_image_prob", "conf_how_cell_logit_logit_margin_3"}
    rows = [line for line in result.stdout.splitlines() if line.startswith("| `--conf_how")]
    maps = [f"{results[name]['mAP']:.3f}" for name in ("conf_how_image_prob", "conf_how_cell_logit_logit_margin_3")]
    assert rows == [
        f"| `--conf_how image_prob` | {maps[0]} |",
        f"| `--conf_how cell_logit --logit_margin 3` | {maps[1]} |",
    ]
    config = yaml.safe_load((tmp_path / "tune" / "conf_how_cell_logit_logit_margin_3.csv.config.yaml").read_text())
    assert (config["split"], config["fold"], config["scoring"]["logit_margin"]) == ("train", 0, 3)


def test_cli_yaml_override_and_gradcam(tiny_synthetic, tiny_checkpoint, tmp_path):
    config = load_yaml(CONFIG_DIR / "kaggle_submission.yaml")
    config.update(data_dir=str(tiny_synthetic), ckpt_paths=[["both", 1.0, str(tiny_checkpoint)]])
    yaml_path = tmp_path / "infer.yaml"
    yaml_path.write_text(yaml.safe_dump(config))
    run_script(
        "run_cam_infer.py", "--yaml_path", str(yaml_path), "--sub_path", str(tmp_path / "sub.csv"),
        "--mask_dir", str(tmp_path / "masks"), "--num_workers", "0", "--score_size", "128", "--cam_size", "32",
        "--cam_method", "gradcam", "--tta_scales", "[1.0, 1.25]", "--conf_how", "max",
    )  # fmt: skip
    resolved = yaml.safe_load((tmp_path / "sub.csv.config.yaml").read_text())
    resolved_view = (resolved["cam_method"], resolved["scoring"]["conf_how"], resolved["tta_scales"])
    assert resolved_view == ("gradcam", "max", [1.0, 1.25])
    assert len(read_submission(tmp_path / "sub.csv")) == 6


def test_cli_rejects_a_badly_typed_override(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    result = subprocess.run(
        [sys.executable, "run_cam_infer.py", "--sub_path", str(tmp_path / "s.csv"), "--tta_flips", "sometimes"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0 and "--tta_flips expects true/false" in result.stderr
