"""Multi-layer Grad-CAM (MICRA-Net style), map regions and counts, and count_positive_cells.py."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from src.cam.map_source import CheckpointSpec
from src.cam.multilayer_gradcam import active_classes, multilayer_gradcam
from src.cam.sources import load_sources
from src.metrics.map_counting import CountingScores
from src.scoring.map_regions import detect_components, regions_and_centres
from tests.conftest import run_script


class Square(nn.Module):
    def forward(self, x):
        return x * x


class TwoLayerNet(nn.Module):
    """features = (a)^2 with a = the input; logit = w * mean(features): both layers' Grad-CAMs are computable."""

    def __init__(self, w: float = 2.0):
        super().__init__()
        self.first = nn.Identity()
        self.second = Square()
        self.w = w

    def forward_features(self, images):
        return self.second(self.first(images))

    def head(self, features):
        return {"logits": self.w * features.mean(dim=(2, 3))}


def test_multilayer_gradcam_matches_the_hand_computed_maps():
    a = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    net = TwoLayerNet()
    probs, maps = multilayer_gradcam(net, a, [net.first, net.second], "sum")
    # layer 'first': gradient w*2a/4, its mean w*1.25 > 0 -> map a / max(a); layer 'second': gradient w/4 -> a^2/16
    expected = (a / 4 + a**2 / 16) / 2
    assert torch.allclose(maps, expected, atol=1e-4)
    assert torch.allclose(probs, torch.sigmoid(2.0 * (a**2).mean()).view(1, 1))
    _, product = multilayer_gradcam(net, a, [net.first, net.second], "product")
    assert torch.allclose(product, torch.sqrt((a / 4) * (a**2 / 16)), atol=1e-4)


class TwoClassNet(nn.Module):
    """Both logits grow with mean(x^2), so both have the same non-zero maps; class 1's is shifted by -20
    (probability < 0.01 on the test input)."""

    def __init__(self):
        super().__init__()
        self.first = nn.Identity()
        self.second = Square()

    def forward_features(self, images):
        return self.second(self.first(images))

    def head(self, features):
        pooled = features.mean(dim=(2, 3))
        return {"logits": torch.cat([pooled, pooled - 20.0], dim=1)}


def test_gradcam_min_prob_skips_only_the_classes_under_it():
    a = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    net = TwoClassNet()
    modules = [net.first, net.second]
    _, every = multilayer_gradcam(net, a, modules, "sum")
    _, gated = multilayer_gradcam(net, a, modules, "sum", min_prob=0.01)
    assert torch.allclose(gated[:, 0], every[:, 0])  # the likely class is computed as before
    assert torch.count_nonzero(every[:, 1]) > 0  # without the gate the unlikely class has a map
    assert torch.count_nonzero(gated[:, 1]) == 0  # with it, its backward pass is skipped: an all-zero map
    assert active_classes(torch.tensor([[0.0, -9.0], [-9.0, -9.0]]), 0.01) == [0]
    assert active_classes(torch.tensor([[0.0, -9.0]]), 0.0) == [0, 1]


def test_unknown_gradcam_layer_lists_the_backbone_stages(tiny_checkpoint):
    with pytest.raises(ValueError, match=r"no layer 'backbone.nope'.*backbone stages: \['backbone.layer1'"):
        load_sources(
            [CheckpointSpec("both", 1.0, str(tiny_checkpoint))], torch.device("cpu"), "multigradcam", "backbone.nope"
        )


def test_components_of_a_hand_made_map_are_counted_with_their_centres():
    class_map = np.zeros((10, 10))
    class_map[1:3, 1:3] = 1.0  # a 2x2 blob, centre (1.5, 1.5)
    class_map[6:9, 5:8] = 0.8  # a 3x3 blob, centre (7, 6)
    class_map[5, 0] = 0.9  # one pixel: below min_area
    regions, centres = regions_and_centres(class_map[None], np.array([0.9]), prob_threshold=0.5, min_area=2)
    assert centres[0].tolist() == [[1.5, 1.5], [7.0, 6.0]]
    assert regions[0].sum() == 4 + 9 + 1
    gated, none = regions_and_centres(class_map[None], np.array([0.1]), prob_threshold=0.5)
    assert not gated.any() and len(none[0]) == 0
    assert len(detect_components(np.zeros((3, 3), dtype=bool))) == 0


def test_counting_scores_iou_counts_and_detections():
    cell_mask = np.zeros((6, 6), dtype=np.uint16)
    cell_mask[:3, :3], cell_mask[3:, 3:], cell_mask[:3, 3:] = 1, 2, 3
    regions = np.zeros((2, 6, 6), dtype=bool)
    regions[0, :3, :] = True  # cells 1 and 3; truth of class 0 is cells 1 and 2
    centres = [np.array([[1.0, 1.0], [1.0, 4.0]]), np.zeros((0, 2))]
    scores = CountingScores(2)
    scores.add_image(regions, centres, cell_mask, {1: (0,), 2: (0,), 3: (1,)})
    summary = scores.summary()
    assert summary["pixel_iou"] == pytest.approx(
        (9 / 27 + 0.0) / 2, abs=1e-4
    )  # class 0: 9 of 27; class 1: true, missed
    assert summary["count_mae"] == pytest.approx(0.5) and summary["exact_count"] == 0.5
    assert summary["det_precision"] == 0.5 and summary["det_recall"] == pytest.approx(1 / 3, abs=1e-4)


def test_count_positive_cells_writes_counts_and_metrics(tiny_synthetic, tiny_checkpoint, tmp_path):
    run_script(
        "count_positive_cells.py", "--data_dir", str(tiny_synthetic), "--ckpt", str(tiny_checkpoint),
        "--num_images", "2", "--map_size", "32", "--prob_threshold", "0", "--out_dir", str(tmp_path),
    )  # fmt: skip
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["images"] == 2 and 0 <= metrics["pixel_iou"] <= 1
    assert (tmp_path / "cell_counts.csv").read_text().startswith("ID,class,count,centres")


def test_prob_ckpt_gates_with_one_checkpoint_and_maps_with_the_other(tiny_synthetic, tiny_checkpoint, tmp_path):
    """Maps from --ckpt and probabilities from --prob_ckpt (a stage-2 U-Net has no probabilities): with the same
    classifier in both places the counts are those of the single-checkpoint run."""
    common = ["--data_dir", str(tiny_synthetic), "--ckpt", str(tiny_checkpoint), "--num_images", "2",
              "--map_size", "32", "--prob_threshold", "0.3", "--cam_method", "cam"]  # fmt: skip
    run_script("count_positive_cells.py", *common, "--out_dir", str(tmp_path / "one"))
    run_script(
        "count_positive_cells.py", *common, "--prob_ckpt", str(tiny_checkpoint), "--out_dir", str(tmp_path / "two")
    )
    one, two = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("one", "two"))
    assert one == two
    assert (tmp_path / "one" / "cell_counts.csv").read_text() == (tmp_path / "two" / "cell_counts.csv").read_text()
