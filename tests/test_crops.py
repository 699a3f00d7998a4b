"""Crop geometry, the crop store (resume, manifest checks) and per-cell targets (src/crops/)."""

import json

import numpy as np
import pandas as pd
import pytest

from src.cell_masks.cache import MaskCacheMismatchError, write_masks
from src.crops import store as store_module
from src.crops.geometry import extract_cell_crops, square_box
from src.crops.store import CropReader, CropSpec, CropStoreMismatchError, extract_split, read_index
from src.crops.targets import image_cell_targets, pseudo_cell_targets
from src.data.classes import NEGATIVE
from src.submission.codec import cell_mask_predictions, write_submission


def hand_mask() -> np.ndarray:
    """32 x 32: cell 1 on the top-left border (8 x 4), cell 2 a single pixel, cell 3 inside (6 x 6)."""
    mask = np.zeros((32, 32), dtype=np.uint16)
    mask[0:8, 0:4] = 1
    mask[20, 20] = 2
    mask[10:16, 12:18] = 3
    return mask


def hand_image() -> np.ndarray:
    image = np.full((32, 32, 4), 100, dtype=np.uint8)
    image[..., 1] = 200
    return image


def test_square_box_is_centred_and_padded():
    assert square_box((10, 10, 20, 14), padding=0.0) == (10, 7, 10)
    assert square_box((10, 10, 20, 20), padding=0.1) == (9, 9, 12)


def test_crops_have_one_row_per_cell_with_tight_boxes_and_areas():
    cut = extract_cell_crops(hand_image(), hand_mask(), crop_size=16, crop_mask="zero", padding=0.0)
    assert cut.crops.shape == (3, 16, 16, 4) and cut.crops.dtype == np.uint8
    assert cut.cell_ids.tolist() == [1, 2, 3]
    assert cut.boxes.tolist() == [[0, 0, 8, 4], [20, 20, 21, 21], [10, 12, 16, 18]]
    assert cut.area.tolist() == [32, 1, 36]


def test_border_cell_is_padded_with_zeros_outside_the_image():
    cut = extract_cell_crops(hand_image(), hand_mask(), crop_size=8, crop_mask="none", padding=0.0)
    # cell 1 is 8 x 4 at the left border: its 8 x 8 square reaches 2 px past the left edge
    border = cut.crops[0]
    assert (border[:, :2] == 0).all() and (border[:, 2:, 1] == 200).all()


def test_tiny_cell_is_upsampled_to_the_crop_size():
    cut = extract_cell_crops(hand_image(), hand_mask(), crop_size=8, crop_mask="zero", padding=0.0)
    assert (cut.crops[1][..., 1] == 200).all()  # the single pixel fills the crop


def test_masking_modes_zero_context_or_add_a_mask_channel():
    mask, image = hand_mask(), hand_image()
    zero = extract_cell_crops(image, mask, 12, "zero", padding=0.5).crops[2]
    raw = extract_cell_crops(image, mask, 12, "none", padding=0.5).crops[2]
    channel = extract_cell_crops(image, mask, 12, "channel", padding=0.5).crops[2]
    assert zero.shape == raw.shape == (12, 12, 4) and channel.shape == (12, 12, 5)
    assert zero[0, 0].tolist() == [0, 0, 0, 0] and raw[0, 0, 1] == 200  # context zeroed vs kept
    assert channel[6, 6, 4] == 255 and channel[0, 0, 4] == 0
    assert (channel[..., :4] == raw).all()


def test_image_without_cells_gives_empty_crops():
    cut = extract_cell_crops(hand_image(), np.zeros((32, 32), np.uint16), 8)
    assert cut.crops.shape == (0, 8, 8, 4) and len(cut.cell_ids) == 0


def test_unknown_crop_mask_is_refused():
    with pytest.raises(ValueError, match="--crop_mask"):
        extract_cell_crops(hand_image(), hand_mask(), 8, "blur")


@pytest.fixture
def cached_split(tmp_path, tiny_synthetic):
    """Precomputed truth masks of 4 training images in a mask cache (no segmentation run)."""
    from src.cell_masks.precomputed import PrecomputedSegmenter
    from src.data.io import read_labels, read_rgby

    ids = read_labels(tiny_synthetic / "train.csv")["ID"].tolist()[:4]
    params = {"cell_dir": str(tiny_synthetic / "truth" / "cell_masks")}
    segmenter = PrecomputedSegmenter(**params)
    mask_dir = tmp_path / "masks"
    mask_dir.mkdir()
    for image_id in ids:
        nuclei, cells = segmenter(read_rgby(tiny_synthetic, image_id, "train"), image_id=image_id)
        write_masks(mask_dir / f"{image_id}.npz", nuclei, cells)
    spec = CropSpec(crop_size=16, mask_backend="precomputed", mask_params=segmenter.params)
    store_module.MaskCache(mask_dir, "precomputed", segmenter.params)  # writes the mask manifest
    return ids, mask_dir, spec


def test_store_resumes_after_an_interrupted_extraction(tmp_path, tiny_synthetic, cached_split, monkeypatch):
    ids, mask_dir, spec = cached_split
    crop_dir = tmp_path / "crops"
    calls = []
    original = store_module._extract_one

    def dies_on_third(image_id):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run is killed while cutting the third image
        calls.append(image_id)
        return original(image_id)

    monkeypatch.setattr(store_module, "_extract_one", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        extract_split(tiny_synthetic, "train", ids, mask_dir, crop_dir, spec, workers=1)
    assert len(list((crop_dir / "train").glob("*.cells.json"))) == 2
    assert not list((crop_dir / "train").glob(".*tmp*"))  # atomic writes leave no partial files
    monkeypatch.setattr(store_module, "_extract_one", original)
    report = extract_split(tiny_synthetic, "train", ids, mask_dir, crop_dir, spec, workers=1)
    assert (report.done_before, report.extracted) == (2, 2)
    index = read_index(crop_dir, "train")
    assert sorted(index["ID"].unique()) == sorted(ids)
    reader = CropReader(crop_dir, "train")
    first = index.iloc[0]
    assert reader(first["ID"], int(first["row"])).shape == (16, 16, 4)


def test_store_refuses_other_crop_settings_and_other_mask_backends(tmp_path, tiny_synthetic, cached_split):
    ids, mask_dir, spec = cached_split
    crop_dir = tmp_path / "crops"
    extract_split(tiny_synthetic, "train", ids[:1], mask_dir, crop_dir, spec, workers=1)
    other = CropSpec(crop_size=32, mask_backend=spec.mask_backend, mask_params=spec.mask_params)
    with pytest.raises(CropStoreMismatchError, match="crop_size"):
        extract_split(tiny_synthetic, "train", ids[:1], mask_dir, crop_dir, other, workers=1)
    classical = CropSpec(crop_size=16, mask_backend="classical")
    with pytest.raises(MaskCacheMismatchError, match=str(mask_dir)):
        extract_split(tiny_synthetic, "train", ids[:1], mask_dir, tmp_path / "crops2", classical, workers=1)


def test_image_targets_make_dark_cells_negative():
    index = pd.DataFrame({"ID": ["a", "a", "b"], "darkness": [0.1, 0.9, 0.0]})
    targets = image_cell_targets(index, {"a": [3, 5], "b": [NEGATIVE]})
    assert np.flatnonzero(targets[0]).tolist() == [3, 5]
    assert np.flatnonzero(targets[1]).tolist() == [NEGATIVE]
    assert np.flatnonzero(targets[2]).tolist() == [NEGATIVE]


def test_pseudo_targets_match_cells_by_mask_and_refuse_foreign_cells(tmp_path):
    mask = hand_mask()
    cut = extract_cell_crops(hand_image(), mask, 8)
    index = pd.DataFrame(
        {"ID": "a", "cell_id": cut.cell_ids, "row": range(3), "y0": cut.boxes[:, 0], "x0": cut.boxes[:, 1],
         "y1": cut.boxes[:, 2], "x1": cut.boxes[:, 3], "area": cut.area}
    )  # fmt: skip
    csv = tmp_path / "pseudo.csv"
    predictions = cell_mask_predictions(mask, {3: {4: 0.8, NEGATIVE: 0.1}, 1: {2: 0.5}})
    write_submission(csv, [{"ID": "a", "ImageWidth": 32, "ImageHeight": 32, "PredictionString": predictions}])
    targets = pseudo_cell_targets(index, csv)
    assert targets[2, 4] == pytest.approx(0.8) and targets[0, 2] == pytest.approx(0.5)
    assert targets[1].sum() == 0  # a cell the pseudo labels do not mention
    other = mask.copy()
    other[10:16, 12:14] = 0  # cell 3 of another mask cache
    predictions = cell_mask_predictions(other, {3: {4: 0.8}})
    write_submission(csv, [{"ID": "a", "ImageWidth": 32, "ImageHeight": 32, "PredictionString": predictions}])
    with pytest.raises(ValueError, match="another mask cache"):
        pseudo_cell_targets(index, csv)
    write_submission(csv, [{"ID": "b", "ImageWidth": 32, "ImageHeight": 32, "PredictionString": ""}])
    with pytest.raises(ValueError, match="lacks 1 image"):
        pseudo_cell_targets(index, csv)


def test_manifest_records_the_crop_format(tmp_path, tiny_synthetic, cached_split):
    ids, mask_dir, spec = cached_split
    extract_split(tiny_synthetic, "train", ids[:1], mask_dir, tmp_path / "crops", spec, workers=1)
    manifest = json.loads((tmp_path / "crops" / "manifest.json").read_text())
    assert (manifest["crop_size"], manifest["channels"], manifest["mask_backend"]) == (16, 4, "precomputed")
