"""Self-supervised pre-training on cell crops: NT-Xent by hand, the views, same-image partners and a tiny run."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import pretrain_cells
from src.crops.dataset import UnlabelledCropDataset
from src.crops.store import CropSpec, extract_split, read_index
from src.data.io import read_labels
from src.models.cell_classifier import create_cell_classifier
from src.models.contrastive import ContrastiveLoss
from src.training.cell_datamodule import CellCropDataModule
from src.training.cell_views import random_views, two_views
from src.training.checkpoints import read_checkpoint_hparams

TINY = '{"widths": [8, 16]}'


def test_ntxent_of_a_hand_made_batch():
    first = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    second = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    # cosine / tau (0.5): positives 0.6 -> 1.2; anchor a0 sees a1 (0) and b1 (0.8 -> 1.6); anchor b0 sees b1
    # (0.96 -> 1.92) and a1 (1.6); a1 and b1 mirror a0 and b0
    anchor_a = -1.2 + math.log(math.exp(1.2) + math.exp(0.0) + math.exp(1.6))
    anchor_b = -1.2 + math.log(math.exp(1.2) + math.exp(1.92) + math.exp(1.6))
    loss = ContrastiveLoss(temperature=0.5)({"projection": torch.cat([first, second])}, {})["loss"]
    assert loss.item() == pytest.approx((anchor_a + anchor_b) / 2, abs=1e-5)
    assert loss.item() == pytest.approx(1.27066, abs=1e-4)


def test_ntxent_refuses_an_odd_batch_and_a_bad_temperature():
    with pytest.raises(ValueError, match="two views"):
        ContrastiveLoss()({"projection": torch.zeros(3, 4)}, {})
    with pytest.raises(ValueError, match="--temperature"):
        ContrastiveLoss(temperature=0.0)


def test_views_are_normalised_differ_and_pair_row_i_with_row_n_plus_i():
    torch.manual_seed(0)
    bright = torch.full((4, 4, 16, 16), 200, dtype=torch.uint8)
    dark = torch.zeros((4, 4, 16, 16), dtype=torch.uint8)
    views = two_views(bright, dark)
    assert views.shape == (8, 4, 16, 16) and views.dtype == torch.float32
    # the first half comes from the bright crops, the second from their dark partners
    assert views[:4].mean() > 1.0 > -1.0 > views[4:].mean()
    again = random_views(bright)
    assert not torch.allclose(again, random_views(bright))


def test_a_view_moves_the_mask_channel_but_keeps_its_values():
    torch.manual_seed(1)
    crops = torch.zeros((6, 5, 16, 16), dtype=torch.uint8)
    crops[:, 4, 4:12, 4:12] = 255  # the cell mask channel of a 'channel' crop store
    views = random_views(crops)
    mask = views[:, 4] * 0.5 * 255 + 0.5 * 255  # undo the mask channel's normalisation (mean 0.5, std 0.5)
    assert mask.min() >= -1e-3 and mask.max() <= 255 + 1e-3
    assert (mask > 127).float().mean(dim=(1, 2)).min() > 0.2  # the cell stays in view


@pytest.fixture(scope="module")
def crop_store(tiny_synthetic, tmp_path_factory):
    root = tmp_path_factory.mktemp("crops")
    ids = read_labels(tiny_synthetic / "train.csv")["ID"].tolist()
    params = {"cell_dir": str(tiny_synthetic / "truth" / "cell_masks")}
    spec = CropSpec(crop_size=16, mask_backend="precomputed", mask_params=params)
    extract_split(tiny_synthetic, "train", ids, root / "masks", root / "crops", spec, workers=1)
    return root / "crops"


def test_same_image_partners_come_from_another_cell_of_that_image(crop_store):
    index = read_index(crop_store, "train")
    dataset = UnlabelledCropDataset(crop_store, index, same_image_partners=True)
    rows = pd.Series(range(len(index)))
    for i in range(0, len(index), 7):
        item = dataset[i]
        same = rows[index["ID"] == index["ID"][i]].tolist()
        matches = [j for j in same if torch.equal(dataset._crop(j), item["partner"])]
        assert matches and (len(same) == 1 or i not in matches or len(matches) > 1)


def test_a_tiny_pretraining_run_writes_a_backbone_the_cell_classifier_loads(crop_store, tmp_path, capsys):
    args = pretrain_cells.parse_args(
        ["--crop_dir", str(crop_store), "--splits", "train", "--timm_kwargs", TINY, "--batch_size", "32",
         "--num_workers", "0", "--max_epochs", "3", "--lr", "0.05", "--accelerator", "cpu",
         "--default_root_dir", str(tmp_path), "--log_every_n_steps", "1", "--positives", "image"]
    )  # fmt: skip
    pretrain_cells.main(args)
    out = capsys.readouterr().out
    assert "backbone weights (--backbone_ckpt)" in out
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    hparams = read_checkpoint_hparams(last)
    assert hparams["contrastive"] and hparams["crop_spec"]["crop_size"] == 16 and hparams["temperature"] == 0.1
    network = create_cell_classifier(
        "cell_cnn", 4, backbone_ckpt=tmp_path / "backbone.pth", timm_kwargs={"widths": [8, 16]}
    )
    saved = torch.load(tmp_path / "backbone.pth", weights_only=True)
    for key, value in network.backbone.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    assert np.isfinite(float(out.split("final validation: {'val/loss': ")[1].split("}")[0]))


def test_an_empty_split_and_a_foreign_checkpoint_are_refused(crop_store, tmp_path, tiny_checkpoint):
    with pytest.raises(FileNotFoundError, match="test_index.csv"):
        pretrain_cells.main(pretrain_cells.parse_args(["--crop_dir", str(crop_store), "--splits", "test"]))
    args = pretrain_cells.parse_args(
        ["--crop_dir", str(crop_store), "--splits", "train", "--ckpt_path", str(tiny_checkpoint),
         "--default_root_dir", str(tmp_path), "--accelerator", "cpu"]
    )  # fmt: skip
    with pytest.raises(ValueError, match="is not a pre-training run on crops"):
        pretrain_cells.main(args)


def test_an_excluded_cell_line_or_batch_is_neither_trained_nor_validated_on(crop_store, tiny_synthetic, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(tiny_synthetic / "train.csv", data / "train.csv")
    ids = read_labels(data / "train.csv")["ID"].tolist()
    lines = [f"line{k % 3}" for k in range(len(ids))]
    batches = [f"batch{k % 2}" for k in range(len(ids))]
    pd.DataFrame({"ID": ids, "split": "train", "cell_line": lines, "batch": batches}).to_csv(
        data / "metadata.csv", index=False
    )
    full = CellCropDataModule(crop_store, data, num_workers=0)
    held = CellCropDataModule(crop_store, data, num_workers=0, exclude_cell_lines=["line1"])
    line1 = {image for image, line in zip(ids, lines) if line == "line1"}
    for rows, full_rows in ((held.train_rows, full.train_rows), (held.val_rows, full.val_rows)):
        kept = set(held.index.loc[rows, "ID"])
        assert kept == set(full.index.loc[full_rows, "ID"]) - line1 and kept
    both = CellCropDataModule(crop_store, data, num_workers=0, exclude_cell_lines=["line1"], exclude_batches=["batch0"])
    batch0 = {image for image, batch in zip(ids, batches) if batch == "batch0"}
    assert set(both.index.loc[both.train_rows, "ID"]) == set(full.index.loc[full.train_rows, "ID"]) - line1 - batch0
    with pytest.raises(
        ValueError, match=r"--exclude_batches \['batch2'\]: the batch column .* holds only \['batch0', 'batch1'\]"
    ):
        CellCropDataModule(crop_store, data, num_workers=0, exclude_batches=["batch2"])
    fewer = CellCropDataModule(crop_store, data, num_workers=0, exclude_cell_lines=["line1"], label_fraction=0.5)
    assert set(fewer.index.loc[fewer.train_rows, "ID"]) < set(held.index.loc[held.train_rows, "ID"])
    with pytest.raises(ValueError, match=r"--exclude_cell_lines \['line7'\].*'line0', 'line1', 'line2'"):
        CellCropDataModule(crop_store, data, num_workers=0, exclude_cell_lines=["line7"])
    with pytest.raises(ValueError, match="leave no training image"):
        CellCropDataModule(crop_store, data, num_workers=0, exclude_cell_lines=["line0", "line1", "line2"])
    with pytest.raises(FileNotFoundError, match="--exclude_cell_lines needs .*metadata.csv"):
        CellCropDataModule(crop_store, tiny_synthetic, num_workers=0, exclude_cell_lines=["line1"])


def test_label_fraction_keeps_a_seeded_share_of_the_training_images(crop_store, tiny_synthetic):
    full = CellCropDataModule(crop_store, tiny_synthetic, num_workers=0)
    images = set(full.index.loc[full.train_rows, "ID"])
    few = CellCropDataModule(crop_store, tiny_synthetic, num_workers=0, label_fraction=0.25)
    chosen = set(few.index.loc[few.train_rows, "ID"])
    assert len(chosen) == round(0.25 * len(images)) and chosen < images
    assert not (few.train_rows & few.val_rows).any() and (few.val_rows == full.val_rows).all()
    again = CellCropDataModule(crop_store, tiny_synthetic, num_workers=0, label_fraction=0.25)
    assert set(again.index.loc[again.train_rows, "ID"]) == chosen
    with pytest.raises(ValueError, match="--label_fraction"):
        CellCropDataModule(crop_store, tiny_synthetic, num_workers=0, label_fraction=0.0)
