"""Tests of the learned mask backend: targets, watershed, weights, cache identity and a tiny training run."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader

from src.cell_masks.cache import MaskCache, MaskCacheMismatchError
from src.cell_masks.learned import (
    LearnedParams,
    LearnedSegmenter,
    _tile_weight,
    augmented_maps,
    cells_from_maps,
    network_input,
    nuclei_from_maps,
    predict_maps,
)
from src.cell_masks.learned_data import Augmentation, instance_targets, load_synthetic, sample_patch
from src.cell_masks.learned_net import NetworkConfig, WorkingScale, build_network, load_weights, save_weights
from src.cell_masks.learned_train import PatchStream, TrainSettings, train_network
from src.cell_masks.learned_val import HeldOut, held_out_scores, prepare_held_out, split_held_out
from src.cell_masks.segment import get_segmenter
from src.config.device import resolve_device
from src.data.io import read_rgby
from tests.conftest import load_script, run_script

TINY = NetworkConfig("mobilenetv3_small_100", 5, (16, 16, 16, 8, 8))


def random_weights(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    save_weights(path, build_network(TINY).eval(), TINY, WorkingScale(), {"seed": seed})
    return path


def two_touching_discs(size: int = 64) -> np.ndarray:
    """(size, size) int32 labels: two discs of radius 12 whose edges overlap by 4 px (the second wins there)."""
    rows, cols = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int32)
    labels[(rows - 32) ** 2 + (cols - 20) ** 2 <= 144] = 1
    labels[(rows - 32) ** 2 + (cols - 40) ** 2 <= 144] = 2
    return labels


def test_targets_put_a_boundary_ring_between_touching_nuclei() -> None:
    labels = two_touching_discs()
    classes = instance_targets(labels, ring=2)
    assert set(np.unique(classes)) == {0, 1, 2}
    assert (classes[32, 26:30] == 2).all()  # two px either side of the contact line is boundary, not interior
    count, _ = cv2.connectedComponents((classes == 1).astype(np.uint8))
    assert count - 1 == 2


def test_watershed_splits_two_touching_hand_made_nuclei() -> None:
    labels = two_touching_discs()
    classes = instance_targets(labels, ring=2)
    maps = np.stack([(classes == k).astype(np.float32) for k in range(3)])
    maps = np.stack([cv2.GaussianBlur(m, (0, 0), 1.0) for m in maps])  # soft, like a network's output
    found = nuclei_from_maps(maps, LearnedParams(), diameter=24.0)
    assert found.max() == 2
    for k in (1, 2):
        overlap = np.bincount(found[labels == k], minlength=3)[1:]
        owner = int(np.argmax(overlap)) + 1
        iou = ((found == owner) & (labels == k)).sum() / ((found == owner) | (labels == k)).sum()
        assert iou > 0.8


def test_cells_follow_their_own_foreground_threshold_not_the_nucleus_one() -> None:
    nuclei = np.zeros((64, 64), np.int32)
    nuclei[28:36, 28:36] = 1
    yy, xx = np.mgrid[:64, :64]
    radius = np.hypot(yy - 31.5, xx - 31.5)
    maps = np.zeros((3, 64, 64), np.float32)
    maps[1] = np.where(radius < 12, 0.9, np.where(radius < 20, 0.45, 0.0))  # a dim outer ring of cytoplasm
    maps[0] = 1.0 - maps[1]
    area = {
        t: int((cells_from_maps(maps, nuclei, LearnedParams(cell_foreground_threshold=t), 8.0) == 1).sum())
        for t in (0.3, 0.6)
    }
    inner, outer = int((radius < 12).sum()), int((radius < 20).sum())
    assert area[0.6] == inner and area[0.3] == outer  # 0.3 keeps the dim ring, 0.6 cuts it
    # the nucleus threshold no longer moves the cells
    high_nuclei = LearnedParams(foreground_threshold=0.95, cell_foreground_threshold=0.3)
    assert int((cells_from_maps(maps, nuclei, high_nuclei, 8.0) == 1).sum()) == outer


def test_patches_hold_input_in_range_and_targets_of_the_right_shape(tiny_synthetic: Path) -> None:
    images = load_synthetic(tiny_synthetic, WorkingScale())
    x, nuclei, cells = sample_patch(images[0], 64, np.random.default_rng(0), Augmentation(drop_cytoplasm=0.0))
    assert x.shape == (2, 64, 64) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert nuclei.shape == cells.shape == (64, 64)
    assert set(np.unique(cells)) <= {0, 1, 2}


def test_patch_stream_is_seeded_and_each_loader_process_draws_its_own_patches(tiny_synthetic: Path) -> None:
    train = load_synthetic(tiny_synthetic, WorkingScale(), split="train")
    settings = TrainSettings(batch_size=2, patch=64, seed=3)

    def first(seed: int) -> torch.Tensor:
        stream = PatchStream([], train, TrainSettings(batch_size=2, patch=64, seed=seed), Augmentation())
        return next(iter(stream))[0]

    assert torch.equal(first(3), first(3)) and not torch.equal(first(3), first(4))
    loader = DataLoader(PatchStream([], train, settings, Augmentation()), batch_size=None, num_workers=2)
    batches = iter(loader)
    from_worker0, from_worker1 = next(batches)[0], next(batches)[0]  # the loader alternates between its workers
    assert not torch.equal(from_worker0, from_worker1) and not torch.equal(from_worker0, first(3))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_refused() -> None:
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="--device cuda"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="--device cuda:1"):
        resolve_device("cuda:1")
    with pytest.raises(ValueError, match="expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")


def test_tiny_training_beats_chance_on_held_out_synthetic_images(tiny_synthetic: Path, tmp_path: Path) -> None:
    """After a few dozen steps the nucleus maps already rank held-out nucleus pixels above background (AUC)."""
    working = WorkingScale()
    train = load_synthetic(tiny_synthetic, working, split="train")
    settings = TrainSettings(steps=40, batch_size=4, patch=64, lr=5e-3, seed=0)
    network, summary = train_network([], train, TINY, settings, Augmentation(), progress=False)
    assert summary["steps"] == 40
    weights = tmp_path / "tiny.pt"
    save_weights(weights, network, TINY, working, {"steps": 40})
    segmenter = LearnedSegmenter(weights)
    scores, truths = [], []
    for image in load_synthetic(tiny_synthetic, working, split="test"):
        shape = (round(image.blue.shape[0] * image.factor), round(image.blue.shape[1] * image.factor))
        maps = predict_maps(segmenter.network, network_input(image.blue, image.cytoplasm, shape))
        scores.append((maps[1] + maps[2]).ravel())
        truths.append((cv2.resize(image.nuclei, shape[::-1], interpolation=cv2.INTER_NEAREST) > 0).ravel())
    assert roc_auc_score(np.concatenate(truths), np.concatenate(scores)) > 0.75  # chance: 0.5
    rgby = read_rgby(tiny_synthetic, "synth-test-00000", split="test")
    nuclei, cells = segmenter(rgby, "synth-test-00000")
    assert nuclei.shape == cells.shape == rgby.shape[:2] and nuclei.dtype == cells.dtype == np.uint16


def test_held_out_images_stay_out_and_the_best_weights_come_back(tiny_synthetic: Path) -> None:
    working = WorkingScale()
    images = load_synthetic(tiny_synthetic, working, split="train")
    train, held = split_held_out(images, 0.25, seed=1)
    assert len(held) == 6 and not {i.name for i in train} & {i.name for i in held}
    assert [i.name for i in split_held_out(images, 0.25, seed=1)[1]] == [i.name for i in held]  # seeded
    with pytest.raises(ValueError, match="val_fraction"):
        split_held_out(images, 1.0, seed=1)
    held_out = HeldOut(prepare_held_out(held), working.nucleus_diameter_px)
    settings = TrainSettings(steps=24, batch_size=4, patch=64, lr=5e-3, seed=0, val_every=6)
    network, summary = train_network([], train, TINY, settings, Augmentation(), progress=False, held_out=held_out)
    assert [h["step"] for h in summary["held_out"]] == [6, 12, 18, 24]
    best = max(summary["held_out"], key=lambda h: h["score"])
    assert (summary["best_step"], summary["best_score"]) == (best["step"], best["score"])
    again = held_out_scores(network, held_out.images, held_out.diameter)  # the returned weights are the best ones
    assert again["score"] == pytest.approx(summary["best_score"], abs=1e-4)
    assert set(again) == {"nuclei_f1", "cells_f1", "score"}


def test_all_dark_image_gives_empty_masks(tmp_path: Path) -> None:
    segmenter = LearnedSegmenter(random_weights(tmp_path / "w.pt"))
    nuclei, cells = segmenter(np.zeros((96, 128, 4), np.uint8))
    assert nuclei.shape == (96, 128) and nuclei.dtype == np.uint16 and not nuclei.any() and not cells.any()


def test_images_larger_than_a_tile_are_tiled() -> None:
    torch.manual_seed(0)
    network = build_network(TINY).eval()
    image = np.random.default_rng(0).random((2, 150, 230)).astype(np.float32)
    maps = predict_maps(network, image, tile_size=64, overlap=16)
    assert maps.shape == (6, 150, 230)
    np.testing.assert_allclose(maps[:3].sum(0), 1.0, atol=1e-5)
    np.testing.assert_allclose(maps[3:].sum(0), 1.0, atol=1e-5)


def test_tiles_weigh_most_at_their_centres_and_a_single_tile_is_the_network_output() -> None:
    weight = _tile_weight(64, 96, overlap=16)
    assert weight.min() > 0 and weight[32, 48] == 1.0 and weight[0, 0] < weight[8, 8] < weight[16, 16] == 1.0
    torch.manual_seed(0)
    network = build_network(TINY).eval()
    image = np.random.default_rng(1).random((2, 64, 96)).astype(np.float32)
    with torch.inference_mode():
        logits = network(torch.from_numpy(image[None]))[0]
    expected = torch.cat([logits[:3].softmax(0), logits[3:].softmax(0)]).numpy()
    np.testing.assert_allclose(predict_maps(network, image, tile_size=128, overlap=16), expected, atol=1e-5)


def test_test_time_augmentation_keeps_the_working_shape_and_flipping_is_mirror_symmetric() -> None:
    torch.manual_seed(0)
    network = build_network(TINY).eval()
    rng = np.random.default_rng(2)
    blue, cytoplasm = rng.random((90, 70)).astype(np.float32), rng.random((90, 70)).astype(np.float32)
    params = LearnedParams(tta_scales=[0.75, 1, 1.5], tta_flip=True)
    maps = augmented_maps(network, blue, cytoplasm, (60, 46), params)
    assert maps.shape == (6, 60, 46)
    np.testing.assert_allclose(maps[:3].sum(0), 1.0, atol=1e-4)
    mirrored = augmented_maps(network, blue[:, ::-1], cytoplasm[:, ::-1], (60, 46), params)
    np.testing.assert_allclose(mirrored[:, :, ::-1], maps, atol=1e-4)  # a flip average cannot prefer a side
    plain = augmented_maps(network, blue, cytoplasm, (60, 46), LearnedParams(tta_scales=[1.0]))
    assert np.abs(plain - maps).max() > 1e-3  # the augmentations change the maps


def test_test_time_augmentation_settings_are_checked() -> None:
    assert LearnedParams(tta_scales=[0.7, 1, 1.4]).tta_scales == (0.7, 1.0, 1.4)  # a YAML list becomes a tuple
    assert LearnedParams(tta_scales=1.25).tta_scales == (1.25,)
    for bad in ([], [0.1], [1.0, "big"], [5]):
        with pytest.raises(ValueError, match="tta_scales"):
            LearnedParams(tta_scales=bad)
    with pytest.raises(ValueError, match="tta_flip"):
        LearnedParams(tta_flip="yes")


def test_cache_refuses_a_folder_made_with_other_weights(tmp_path: Path) -> None:
    first, second = random_weights(tmp_path / "a.pt", 0), random_weights(tmp_path / "b.pt", 1)
    mask_dir = tmp_path / "masks"
    MaskCache(mask_dir, "learned", {"weights": first})
    MaskCache(mask_dir, "learned", {"weights": str(first)})  # the same weights again: accepted
    with pytest.raises(MaskCacheMismatchError, match=f"{mask_dir}.*weights_sha256"):
        MaskCache(mask_dir, "learned", {"weights": second})


def test_missing_weights_are_refused_with_the_file_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="needs --weights"):
        get_segmenter("learned")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        get_segmenter("learned", weights=tmp_path / "nope.pt")


def test_weights_of_another_kind_are_refused_with_the_file_named(tmp_path: Path) -> None:
    state_dict = tmp_path / "state_dict.pth"  # e.g. a bare state dict, as another backend's network ships
    torch.save(build_network(TINY).state_dict(), state_dict)
    with pytest.raises(ValueError, match="state_dict.pth.*not a weight file of the learned mask backend"):
        load_weights(state_dict)
    pickled = tmp_path / "hpacellseg_model.pth"  # a pickled module, as hpacellseg's files are
    torch.save(torch.nn.Conv2d(3, 3, 1), pickled)
    with pytest.raises(ValueError, match="hpacellseg_model.pth"):
        load_weights(pickled)


def test_weights_with_another_channel_count_are_refused(tmp_path: Path) -> None:
    path = random_weights(tmp_path / "w.pt")
    payload = torch.load(path, weights_only=True)
    payload["in_channels"] = 4
    torch.save(payload, tmp_path / "four_channels.pt")
    with pytest.raises(ValueError, match="four_channels.pt.*4 input"):
        load_weights(tmp_path / "four_channels.pt")


def test_train_cell_segmenter_cli_smoke(tiny_synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "weights.pt"
    run_script(
        "train_cell_segmenter.py", "--synthetic_dir", str(tiny_synthetic), "--dsb_dir", "", "--steps", "2",
        "--batch_size", "2", "--patch", "64", "--decoder_channels", "16,16,16,8,8", "--no_progress", "--out", str(out),
    )  # fmt: skip
    _, working, payload = load_weights(out)
    params = payload["train_params"]
    assert params["steps"] == 2 and (params["synthetic_images"], params["synthetic_held_out"]) == (22, 2)
    assert params["best_step"] == 2 and params["held_out"][-1]["step"] == 2  # validated once, at the end
    assert working == WorkingScale()
    masks = tmp_path / "masks"
    run_script(
        "make_cell_masks.py", "--data_dir", str(tiny_synthetic), "--split", "test", "--mask_dir", str(masks),
        "--backend", "learned", "--weights", str(out), "--workers", "1",
    )  # fmt: skip
    assert len(list(masks.glob("*.npz"))) == 6


def test_held_out_dsb_folder_and_missing_weights_flag_are_refused(tmp_path: Path) -> None:
    import make_cell_masks
    import train_cell_segmenter

    args = train_cell_segmenter.parse_args(["--dsb_dir", str(tmp_path / "dsb2018_nuclei"), "--synthetic_dir", ""])
    with pytest.raises(SystemExit, match="held-out"):
        train_cell_segmenter.main(args)
    args = make_cell_masks.parse_args(
        ["--data_dir", str(tmp_path), "--mask_dir", str(tmp_path), "--backend", "learned"]
    )
    with pytest.raises(SystemExit, match="--weights"):
        make_cell_masks.backend_params(args)


def test_foreground_everywhere_gives_finite_labels() -> None:
    """An untrained network can call every pixel a nucleus: the seeds must still come from finite distances."""
    maps = np.stack([np.full((64, 96), value, np.float32) for value in (0.2, 0.6, 0.2)])
    labels = nuclei_from_maps(maps, LearnedParams(), diameter=24.0)
    assert labels.shape == (64, 96) and labels.max() >= 1


def test_the_nuclei_picture_marks_a_match_only_at_iou_one_half_or_more() -> None:
    plot = load_script("scripts/plot_learned_nuclei.py")
    truth = two_touching_discs()
    pred = np.zeros_like(truth)
    pred[truth == 1] = 3  # the first disc found whole
    pred[(truth == 2) & (np.arange(64)[None, :] >= 48)] = 5  # a sliver of the second
    pred_ok, truth_ok = plot.matched(pred, truth)
    assert pred_ok.tolist() == [False, False, False, True, False, False]
    assert truth_ok.tolist() == [False, True, False]
