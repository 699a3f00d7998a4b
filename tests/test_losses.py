"""Loss values against numbers computed by hand on 2-4 element inputs (src/models/losses.py)."""

import math

import pytest
import torch
from torch import nn

from src.models.losses import (
    ClassificationLoss,
    SegmentationLoss,
    add_puzzle_cam_outputs,
    merge_tiles,
    sigmoid_focal_loss,
    soft_f1_loss,
    tile_images,
)

LN2 = math.log(2.0)
LN3 = math.log(3.0)


def test_soft_f1_loss_is_one_minus_the_mean_of_per_class_soft_f1():
    # probabilities [[0.75, 0.25], [0.5, 0.75]], targets [[1, 0], [0, 1]]
    # class 0: 2 x 0.75 / (1.25 + 1) = 2/3; class 1: 2 x 0.75 / (1.0 + 1) = 3/4; loss 1 - (2/3 + 3/4) / 2 = 7/24
    logits = torch.tensor([[LN3, -LN3], [0.0, LN3]], dtype=torch.float64)
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert soft_f1_loss(logits, targets).item() == pytest.approx(7 / 24, rel=1e-5)
    # eps (1e-6) is added to each denominator: exact in float64
    exact = 1 - (1.5 / (2.25 + 1e-6) + 1.5 / (2.0 + 1e-6)) / 2
    assert soft_f1_loss(logits, targets).item() == pytest.approx(exact, rel=1e-12)


def test_soft_f1_sums_targets_over_the_batch_per_class():
    # targets [[1, 1], [0, 1]]: class 0 2 x 0.75 / (1.25 + 1) = 2/3, class 1 2 x 1.0 / (1.0 + 2) = 2/3 -> loss 1/3
    logits = torch.tensor([[LN3, -LN3], [0.0, LN3]], dtype=torch.float64)
    targets = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    assert soft_f1_loss(logits, targets).item() == pytest.approx(1 / 3, rel=1e-5)


def test_soft_f1_of_a_class_without_targets_or_probability_is_zero_not_nan():
    logits = torch.tensor([[-100.0, 0.0]], dtype=torch.float64)
    targets = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    # class 0: 0 / (0 + 0 + eps) = 0; class 1: 2 x 0.5 / (0.5 + 1) = 2/3 -> loss 1 - 1/3
    assert soft_f1_loss(logits, targets).item() == pytest.approx(2 / 3, rel=1e-5)


def test_focal_loss_of_a_sure_right_answer_is_down_weighted_by_gamma():
    # logit ln 3 for target 1: p_t = 3/4, bce = ln(4/3), weight (1/4)^gamma
    logits, targets = torch.tensor([[LN3]]), torch.tensor([[1.0]])
    assert sigmoid_focal_loss(logits, targets, gamma=2.0).item() == pytest.approx(math.log(4 / 3) / 16, rel=1e-5)
    assert sigmoid_focal_loss(logits, targets, gamma=1.0).item() == pytest.approx(math.log(4 / 3) / 4, rel=1e-5)
    assert sigmoid_focal_loss(logits, targets).item() == pytest.approx(math.log(4 / 3) / 16, rel=1e-5)  # gamma 2


def test_classification_loss_adds_soft_f1_and_the_weighted_sub_category_term_by_hand():
    outputs = {"logits": torch.zeros(1, 2), "sub_logits": torch.tensor([[LN3, 0.0, 0.0, 0.0]])}
    batch = {"target": torch.tensor([[1.0, 0.0]]), "sub_target": torch.tensor([[1.0, 0.0, 0.0, 0.0]])}
    terms = ClassificationLoss("bce", soft_f1_weight=0.5, sub_loss_weight=5.0)(outputs, batch)
    cls = LN2  # every logit 0: bce ln 2 per element
    f1 = 1 - (2 * 0.5 / (0.5 + 1) + 0.0) / 2  # class 0: 2/3, class 1: 0 -> 2/3
    sub = (math.log(4 / 3) + 3 * LN2) / 4  # p = 3/4 on the true sub-category, 1/2 on the three others
    assert terms["cls_loss"].item() == pytest.approx(cls, rel=1e-5)
    assert terms["f1_loss"].item() == pytest.approx(f1, rel=1e-5)
    assert terms["sub_loss"].item() == pytest.approx(sub, rel=1e-5)
    assert terms["loss"].item() == pytest.approx(cls + 0.5 * f1 + 5.0 * sub, rel=1e-5)


def test_sub_category_term_uses_the_focal_base_loss_and_its_gamma():
    outputs = {"logits": torch.tensor([[LN3]]), "sub_logits": torch.tensor([[LN3, 0.0]])}
    batch = {"target": torch.tensor([[1.0]]), "sub_target": torch.tensor([[1.0, 0.0]])}
    terms = ClassificationLoss("focal", sub_loss_weight=2.0, gamma=1.0)(outputs, batch)
    cls = math.log(4 / 3) / 4  # p_t 3/4: (1/4)^1 ln(4/3)
    sub = (math.log(4 / 3) / 4 + 0.5 * LN2) / 2  # second element: p_t 1/2, (1/2)^1 ln 2
    assert set(terms) == {"cls_loss", "sub_loss", "loss"}
    assert terms["loss"].item() == pytest.approx(cls + 2.0 * sub, rel=1e-5)


def test_sub_head_without_sub_target_is_refused():
    with pytest.raises(KeyError, match="sub_target"):
        ClassificationLoss()(
            {"logits": torch.zeros(1, 2), "sub_logits": torch.zeros(1, 4)}, {"target": torch.zeros(1, 2)}
        )


def test_tiles_are_tile_major_top_left_top_right_bottom_left_bottom_right():
    images = torch.arange(2 * 4, dtype=torch.float32).reshape(2, 1, 2, 2)  # image 0: [[0, 1], [2, 3]], 1: [[4, 5], ...]
    assert tile_images(images).flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    torch.testing.assert_close(merge_tiles(tile_images(images)), images)


class _CentredFeatures(nn.Module):
    """Features = the image minus its own spatial mean; head = spatial mean; CAM = the features themselves.

    Tiles are centred on their own mean, so the merged tile features differ from the full image's: the
    reconstruction term is mean |x - mean(x)| for 1-pixel tiles."""

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return images - images.mean(dim=(2, 3), keepdim=True)

    def head(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": features.mean(dim=(2, 3))}

    def cam(self, features: torch.Tensor) -> torch.Tensor:
        return features


def test_puzzle_cam_reconstruction_term_and_total_loss_by_hand():
    network = _CentredFeatures()
    images = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]]]])  # mean 3: full features -2, -1, 0, 3; tiles all 0
    outputs = {"logits": torch.zeros(1, 1), "features": network.forward_features(images)}
    add_puzzle_cam_outputs(network, images, outputs, weight=0.5)
    assert outputs["puzzle_re_loss"].item() == pytest.approx((2 + 1 + 0 + 3) / 4)
    assert outputs["puzzle_logits"].tolist() == [[0.0]]
    terms = ClassificationLoss("bce")(outputs, {"target": torch.ones(1, 1)})
    assert terms["puzzle_cls_loss"].item() == pytest.approx(LN2, rel=1e-5)
    assert terms["loss"].item() == pytest.approx(LN2 + LN2 + 0.5 * 1.5, rel=1e-5)


def test_puzzle_cam_resizes_merged_features_to_the_full_feature_map():
    class Pooled(_CentredFeatures):
        def forward_features(self, images):  # a 4x4 image gives 1x1 features, each 2x2 tile too: merged 2x2
            return nn.functional.avg_pool2d(images, 4) if images.shape[-1] == 4 else images.mean((2, 3), True)

    network = Pooled()
    images = torch.arange(16.0).reshape(1, 1, 4, 4)  # tile means 2.5, 4.5, 10.5, 12.5; their bilinear mean 7.5
    outputs = {"logits": torch.zeros(1, 1), "features": network.forward_features(images)}
    add_puzzle_cam_outputs(network, images, outputs, weight=1.0)
    assert outputs["puzzle_logits"].tolist() == [[7.5]]
    assert outputs["puzzle_re_loss"].item() == pytest.approx(0.0)


@pytest.mark.parametrize(("loss_name", "expected"), [("bce", LN2), ("focal", LN2 / 4)])
def test_segmentation_loss_per_pixel_by_hand(loss_name, expected):
    outputs = {"logits": torch.zeros(1, 20, 2, 2)}
    batch = {"target": torch.zeros(1, 20, 2, 2)}
    assert SegmentationLoss(loss_name)(outputs, batch)["loss"].item() == pytest.approx(expected, rel=1e-5)


def test_segmentation_loss_refuses_mismatched_shapes_and_unknown_names():
    with pytest.raises(ValueError, match="differ"):
        SegmentationLoss()({"logits": torch.zeros(1, 20, 2, 2)}, {"target": torch.zeros(1, 20, 2, 3)})
    with pytest.raises(ValueError, match="differ"):
        SegmentationLoss()({"logits": torch.zeros(1, 20, 2, 3)}, {"target": torch.zeros(1, 20, 2, 2)})
    with pytest.raises(ValueError, match="focal"):
        SegmentationLoss("dice")


def test_classification_loss_defaults_are_focal_gamma_2_without_soft_f1_and_sub_weight_5():
    outputs = {"logits": torch.tensor([[LN3]]), "sub_logits": torch.tensor([[0.0]])}
    terms = ClassificationLoss()(outputs, {"target": torch.tensor([[1.0]]), "sub_target": torch.tensor([[1.0]])})
    assert set(terms) == {"cls_loss", "sub_loss", "loss"}
    assert terms["loss"].item() == pytest.approx(math.log(4 / 3) / 16 + 5.0 * LN2 / 4, rel=1e-5)


def test_tiles_of_a_non_square_batch_of_five_merge_back():
    images = torch.arange(5 * 8, dtype=torch.float32).reshape(5, 1, 2, 4)
    tiles = tile_images(images)
    assert tiles.shape == (20, 1, 1, 2)
    assert tiles[5].flatten().tolist() == [2.0, 3.0]  # image 0 top-right tile: row 0, columns 2-3
    torch.testing.assert_close(merge_tiles(tiles), images)


def test_puzzle_cam_resizes_merged_features_smaller_than_the_full_map():
    class Halved(_CentredFeatures):
        def forward_features(self, images):  # floor-halving: a 6 px image gives 3 px, its 3 px tiles 1 px each
            return nn.functional.avg_pool2d(images, 2)

    network = Halved()
    images = torch.ones(1, 1, 6, 6)
    outputs = {"logits": torch.zeros(1, 1), "features": network.forward_features(images)}
    add_puzzle_cam_outputs(network, images, outputs, weight=1.0)
    assert outputs["puzzle_re_loss"].item() == pytest.approx(0.0)
