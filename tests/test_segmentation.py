from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import create_segm_labels
import run_classification
from src.cam.classifier_source import ClassifierSource
from src.cam.infer_config import InferConfig
from src.cam.map_source import CheckpointSpec
from src.cam.pipeline import run_inference
from src.cam.segm_source import SegmentationSource
from src.cam.sources import load_sources
from src.cell_masks.cache import mask_path, read_masks
from src.config import CONFIG_DIR, load_yaml
from src.data.classes import BACKGROUND
from src.metrics import evaluate_submission, load_truth
from src.models.preprocess import normalize_images
from src.models.unet import create_segmentation_network, parse_decoder_channels, segmentation_maps
from src.segm_labels.targets import (
    ERROR_FILE,
    SegmTargetReader,
    pseudo_labels_from_prediction_string,
    read_pseudo_labels,
    resized_cell_mask,
    segmentation_target,
    target_lookup,
    target_path,
    write_pseudo_labels,
)
from src.submission.codec import cell_mask_predictions, decode_binary_mask, parse_prediction_string, read_submission
from src.training.augment import AUG_MODES, build_transforms
from tests.conftest import run_script


def hand_made_cells() -> tuple[np.ndarray, dict[int, dict[int, float]]]:
    """16x16 mask: three cells of 32 px, 160 px of background, and their pseudo-label confidences."""
    cell_mask = np.zeros((16, 16), dtype=np.uint16)
    cell_mask[0:4, 0:8] = 1
    cell_mask[8:12, 0:8] = 2
    cell_mask[12:16, 8:16] = 3
    scores = {1: {0: 0.9, 5: 0.1}, 2: {5: 0.5, 18: 0.3}, 3: {2: 0.1}}
    return cell_mask, scores


def pixels_per_channel(target: np.ndarray) -> dict[int, int]:
    counts = target.reshape(-1, target.shape[-1]).sum(axis=0)
    return {c: int(n) for c, n in enumerate(counts) if n}


def write_pseudo_csv(path: Path, rows: list[tuple[str, int, int, str]]) -> Path:
    frame = pd.DataFrame(rows, columns=["ID", "ImageWidth", "ImageHeight", "PredictionString"])
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("aug_mode", sorted(AUG_MODES))
def test_augmenting_cell_ids_then_expanding_equals_augmenting_the_20_channel_target(aug_mode):
    cell_mask, scores = hand_made_cells()
    labels = pseudo_labels_from_prediction_string(cell_mask_predictions(cell_mask, scores), 16, 16, "test row")
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 4), dtype=np.uint8)
    transforms = build_transforms(aug_mode, 48, train=True, crop_size=32)
    ids = resized_cell_mask(labels, (64, 64))
    assert ids.shape == (64, 64) and set(np.unique(ids)) == {0, 1, 2, 3}
    for seed in range(6):
        transforms.set_random_seed(seed)
        expected = transforms(image=image, mask=segmentation_target(labels, 0.2, (64, 64)))["mask"]
        transforms.set_random_seed(seed)
        moved = transforms(image=image, mask=ids)["mask"]
        # the one difference: what the elastic deformation fills in at the border (id 0) is background, where the
        # transformed 20-channel target had a pixel of no channel at all
        unfilled = expected.any(axis=-1)
        assert aug_mode == 3 or unfilled.all()
        expected[~unfilled, BACKGROUND] = 1
        np.testing.assert_array_equal(target_lookup(labels, 0.2)[moved], expected)


def test_targets_from_hand_made_pseudo_labels_have_expected_pixels(tmp_path):
    cell_mask, scores = hand_made_cells()
    labels = pseudo_labels_from_prediction_string(cell_mask_predictions(cell_mask, scores), 16, 16, "test row")
    write_pseudo_labels(tmp_path / "a.npz", labels)
    labels = read_pseudo_labels(tmp_path / "a.npz")
    # thresh 0.2: class 0 = cell 1; class 5 = cell 2; cell 3 reaches no class -> Negative with cell 2's own 0.3
    assert pixels_per_channel(segmentation_target(labels, 0.2, (16, 16))) == {0: 32, 5: 32, 18: 64, 19: 160}
    # thresh 0.05: cell 1 joins class 5, cell 3 class 2 (so it is no longer Negative)
    assert pixels_per_channel(segmentation_target(labels, 0.05, (16, 16))) == {0: 32, 2: 32, 5: 64, 18: 32, 19: 160}
    # the target follows the image size (nearest neighbour)
    assert pixels_per_channel(segmentation_target(labels, 0.2, (8, 8))) == {0: 8, 5: 8, 18: 16, 19: 40}


def test_broken_rows_are_listed_in_the_error_file_and_stale_targets_removed(tmp_path):
    cell_mask, scores = hand_made_cells()
    good = cell_mask_predictions(cell_mask, scores)
    csv = write_pseudo_csv(
        tmp_path / "pseudo.csv",
        [("good", 16, 16, good), ("empty", 16, 16, ""), ("short", 16, 16, "0 0.5"), ("wrongsize", 8, 8, good)],
    )
    save = tmp_path / "segm"
    save.mkdir()
    (save / "empty.npz").write_bytes(b"stale")
    status = create_segm_labels.main(create_segm_labels.parse_args(["--save_folder", str(save), "--sub_csv", str(csv)]))
    assert status == 1
    errors = pd.read_csv(save / ERROR_FILE, keep_default_na=False).set_index("ID")["error"]
    assert sorted(errors.index) == ["empty", "short", "wrongsize"]
    assert "empty PredictionString" in errors["empty"]
    assert "not a multiple of 3" in errors["short"] and "line 4" in errors["short"]
    assert "RLE encodes 256 pixels" in errors["wrongsize"]
    assert target_path(save, "good").is_file() and not (save / "empty.npz").exists()


def test_duplicate_ids_across_shards_are_refused(tmp_path):
    cell_mask, scores = hand_made_cells()
    shards = tmp_path / "shards"
    shards.mkdir()
    for index in range(2):
        write_pseudo_csv(
            shards / f"p.shard{index}-of-2.csv", [("same", 16, 16, cell_mask_predictions(cell_mask, scores))]
        )
    with pytest.raises(ValueError, match="ID same appears twice"):
        create_segm_labels.main(
            create_segm_labels.parse_args(["--save_folder", str(tmp_path / "o"), "--sub_csv", str(shards)])
        )


def test_segmentation_maps_are_class_minus_background_clipped():
    logits = torch.full((1, 20, 2, 2), -10.0)
    logits[0, 3, 0, 0] = 10.0  # class 3 sure, background unsure
    logits[0, 19, 1, 1] = 10.0  # background sure
    logits[0, 3, 1, 1] = 0.0  # class 3 at 0.5, under the background
    maps = segmentation_maps(logits)
    assert maps.shape == (1, 19, 2, 2)
    assert maps[0, 3, 0, 0] > 0.99 and maps[0, 3, 1, 1] == 0 and maps.min() >= 0


def test_unet_takes_any_timm_encoder_and_names_unknown_ones():
    network = create_segmentation_network("test_resnet", in_chans=4)
    assert network(torch.zeros(1, 4, 64, 64))["logits"].shape == (1, 20, 64, 64)
    with pytest.raises(ValueError, match="unknown timm model name 'resnet_18'"):
        create_segmentation_network("resnet_18")


def test_decoder_channels_set_the_unet_widths_and_bad_ones_are_named():
    network = create_segmentation_network("test_resnet", decoder_channels=(32, 16, 8, 8, 8))
    assert network(torch.zeros(1, 4, 64, 64))["logits"].shape == (1, 20, 64, 64)
    assert network.unet.decoder.blocks[-1].conv2[0].out_channels == 8
    with pytest.raises(ValueError, match="--decoder_channels"):
        parse_decoder_channels("64,32")


def truth_pseudo_csv(data_dir: Path, path: Path) -> Path:
    """A pseudo-label CSV of the training images made from their truth cells (confidence 0.9 per true class)."""
    ids = pd.read_csv(data_dir / "train.csv", dtype=str)["ID"].tolist()
    truth = load_truth(data_dir / "truth", ids)
    rows = []
    for image_id in ids:
        cell_mask = truth.read_cell_mask(image_id)
        scores = {cell: dict.fromkeys(labels, 0.9) for cell, labels in truth.cell_labels[image_id].items()}
        rows.append((image_id, cell_mask.shape[1], cell_mask.shape[0], cell_mask_predictions(cell_mask, scores)))
    return write_pseudo_csv(path, rows)


def segm_train_args(data_dir: Path, label_dir: Path, root: Path, *extra: str) -> list[str]:
    return [
        "--data_dir", str(data_dir), "--timm_model_name", "test_resnet", "--input_size", "64", "--cache_size", "128",
        "--batch_size", "8", "--num_workers", "0", "--max_epochs", "1", "--accelerator", "cpu", "--lr", "0.05",
        "--default_root_dir", str(root), "--segm_label_dir", str(label_dir), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def segm_labels(tiny_synthetic, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("segm_labels")
    csv = truth_pseudo_csv(tiny_synthetic, root / "pseudo_label.csv")
    run_script("create_segm_labels.py", "--save_folder", str(root), "--sub_csv", str(csv), "--num_workers", "1")
    return root


@pytest.fixture(scope="module")
def segm_checkpoint(tiny_synthetic, segm_labels, tmp_path_factory) -> Path:
    """One tiny U-Net epoch through run_classification.py; its last.ckpt."""
    root = tmp_path_factory.mktemp("segm_run")
    result = run_script(
        "run_classification.py",
        *segm_train_args(
            tiny_synthetic, segm_labels, root, "--segm_thresh", "0.5", "--segm_truth_dir", str(tiny_synthetic / "truth")
        ),
    )
    assert "val/cell_mAP" in result.stdout
    return root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"


def test_one_segmentation_epoch_through_the_script(segm_checkpoint):
    hparams = torch.load(segm_checkpoint, map_location="cpu", weights_only=False)["hyper_parameters"]
    assert hparams["segm_label_dir"] and hparams["segm_thresh"] == 0.5
    state = torch.load(segm_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    assert state["network.unet.segmentation_head.0.weight"].shape[0] == 20


@pytest.mark.parametrize("thresh", ["0", "1", "-0.1", "1.5"])
def test_segm_thresh_outside_unit_interval_is_refused(tiny_synthetic, segm_labels, tmp_path, thresh):
    args = run_classification.parse_args(
        segm_train_args(tiny_synthetic, segm_labels, tmp_path, "--segm_thresh", thresh)
    )
    with pytest.raises(ValueError, match="--segm_thresh must lie in"):
        run_classification.main(args)


def test_label_dir_of_another_image_set_is_refused(tiny_synthetic, segm_labels, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    for path in sorted(segm_labels.glob("*.npz"))[:5]:
        (other / path.name).write_bytes(path.read_bytes())
    args = run_classification.parse_args(segm_train_args(tiny_synthetic, other, tmp_path))
    with pytest.raises(ValueError, match="lacks pseudo labels for 19 of 24 training images"):
        run_classification.main(args)


def test_target_reader_names_the_failed_row(segm_labels, tmp_path):
    (tmp_path / ERROR_FILE).write_text("ID,error\nbad,pseudo.csv line 3 (ID bad): empty PredictionString (no cell)\n")
    with pytest.raises(ValueError, match="empty PredictionString"):
        SegmTargetReader(tmp_path, 0.2).check_ids(["bad"])


def test_segmentation_checkpoint_in_run_cam_infer_gives_a_valid_submission(
    tiny_synthetic, tiny_checkpoint, segm_checkpoint, tmp_path
):
    config = load_yaml(CONFIG_DIR / "kaggle_submission.yaml")
    config.update(
        data_dir=str(tiny_synthetic), mask_dir=str(tmp_path / "masks"), num_workers=0, batch_size=4,
        score_size=128, cam_size=32, device="cpu",
        ckpt_paths=[["both", 1.0, str(tiny_checkpoint)], ["cam", 1.0, str(segm_checkpoint)]],
    )  # fmt: skip
    report = run_inference(InferConfig.from_dict(config, "test"), tmp_path / "sub.csv")
    assert not report.failed
    submission = read_submission(tmp_path / "sub.csv")
    assert len(submission) == 6
    for row in submission.itertuples():
        _, cell_mask = read_masks(mask_path(tmp_path / "masks", row.ID))
        for rle in {p.rle for p in parse_prediction_string(row.PredictionString)}:
            ids = np.unique(cell_mask[decode_binary_mask(rle, row.ImageHeight, row.ImageWidth)])
            assert len(ids) == 1 and ids[0] > 0
    result = evaluate_submission(submission, tiny_synthetic / "truth")
    assert 0.0 <= result.mAP <= 1.0


def test_segmentation_checkpoint_joins_on_cam_only(tiny_checkpoint, segm_checkpoint):
    device = torch.device("cpu")
    sources = load_sources(
        [CheckpointSpec("both", 1.0, str(tiny_checkpoint)), CheckpointSpec("cam", 1.0, str(segm_checkpoint))], device
    )
    assert [type(s).__name__ for s in sources] == ["ClassifierSource", "SegmentationSource"]
    probs, maps = sources[1].predict(torch.zeros(2, 4, 64, 64, dtype=torch.uint8), (16, 16), True, [1.0])
    assert probs is None and maps.shape == (2, 19, 16, 16) and maps.min() >= 0 and maps.max() <= 1
    # conf_how cell_logit: the signed per-pixel logits of the 19 classes (one view, same size as the input)
    image = torch.randint(0, 255, (1, 4, 64, 64), dtype=torch.uint8)
    _, logits = sources[1].predict(image, (64, 64), False, [1.0], map_kind="logit")
    with torch.inference_mode():
        raw = sources[1].network(normalize_images(image))["logits"][:, :19]
    torch.testing.assert_close(logits, raw, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="how_join 'cam'"):
        SegmentationSource(CheckpointSpec("both", 1.0, str(segm_checkpoint)), device)
    with pytest.raises(ValueError, match="cannot be used as a classifier"):
        ClassifierSource(CheckpointSpec("cam", 1.0, str(segm_checkpoint)), device)
