import math

import pytest
import timm
import torch
import torchvision

from src.models.backbone import adapt_first_conv, check_model_name, parse_timm_kwargs
from src.models.classifier import create_classifier
from src.models.factory import build_network
from src.models.losses import (
    ClassificationLoss,
    add_puzzle_cam_outputs,
    merge_tiles,
    sigmoid_focal_loss,
    soft_f1_loss,
    tile_images,
)


def test_unknown_model_name_lists_close_names():
    with pytest.raises(ValueError, match="test_resnet"):
        check_model_name("test_resnt")


def test_classifier_gives_feature_map_logits_and_sub_logits():
    network = create_classifier("test_resnet", in_chans=4, num_classes=19, num_sub_classes=19 * 3).eval()
    with torch.no_grad():
        outputs = network(torch.randn(2, 4, 64, 64))
    assert outputs["features"].ndim == 4 and outputs["features"].shape[:2] == (2, network.num_features)
    assert outputs["logits"].shape == (2, 19)
    assert outputs["sub_logits"].shape == (2, 57)
    assert network.get_classifier().weight.shape == (19, network.num_features, 1, 1)


def test_timm_kwargs_output_stride_doubles_the_feature_map_and_survives_hparams():
    coarse = create_classifier("resnet18", timm_kwargs={"channels": [8, 16, 32, 64]})
    fine = build_network(
        {"timm_model_name": "resnet18", "timm_kwargs": '{"channels": [8, 16, 32, 64], "output_stride": 16}'}
    )
    with torch.no_grad():
        coarse_map = coarse.forward_features(torch.randn(1, 4, 128, 128))
        fine_map = fine.forward_features(torch.randn(1, 4, 128, 128))
    assert coarse_map.shape == (1, 64, 4, 4) and fine_map.shape == (1, 64, 8, 8)


@pytest.mark.parametrize(
    ("text", "message"),
    [("[16]", "JSON object"), ("{output_stride: 16}", "not JSON"), ('{"in_chans": 3}', "factory sets")],
)
def test_bad_timm_kwargs_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        parse_timm_kwargs(text)


def test_timm_kwargs_the_architecture_does_not_take_are_named():
    with pytest.raises(ValueError, match="no_such_argument"):
        create_classifier("test_resnet", timm_kwargs={"no_such_argument": 1})


def test_logits_are_the_spatial_mean_of_the_unrectified_cam():
    network = create_classifier("test_resnet", in_chans=4).eval()
    with torch.no_grad():
        features = network.forward_features(torch.randn(2, 4, 96, 96))
        logits = network.head(features)["logits"]
        linear_cam = torch.einsum("kc,nchw->nkhw", network.get_classifier().weight[:, :, 0, 0], features)
        cam = network.cam(features)
    assert cam.shape == (2, 19, *features.shape[2:])
    torch.testing.assert_close(cam, linear_cam.clamp(min=0))
    torch.testing.assert_close(linear_cam.mean(dim=(2, 3)), logits, atol=1e-5, rtol=1e-5)


def test_first_conv_for_yellow_copies_red_weights():
    weight = torch.randn(8, 3, 3, 3)
    adapted = adapt_first_conv(weight, 4)
    assert adapted.shape == (8, 4, 3, 3)
    torch.testing.assert_close(adapted[:, :3], weight)
    torch.testing.assert_close(adapted[:, 3], weight[:, 0])


def test_torchvision_state_dict_loads_into_4_channel_timm_backbone(tmp_path):
    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18_torchvision.pth"
    torch.save(source.state_dict(), path)
    network = create_classifier("resnet18", in_chans=4, backbone_ckpt=path)
    conv = network.backbone.conv1.weight
    torch.testing.assert_close(conv[:, :3], source.conv1.weight)
    torch.testing.assert_close(conv[:, 3], source.conv1.weight[:, 0])
    torch.testing.assert_close(network.backbone.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)


def test_state_dict_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "test_resnet.pth"
    torch.save({"state_dict": timm.create_model("test_resnet").state_dict()}, path)
    with pytest.raises(ValueError, match="does not fit timm backbone resnet18"):
        create_classifier("resnet18", in_chans=4, backbone_ckpt=path)


def test_missing_backbone_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        create_classifier("test_resnet", backbone_ckpt=tmp_path / "nowhere.pth")


def test_focal_loss_matches_hand_computed_value():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])

    def term(logit: float, target: float) -> float:
        p = 1 / (1 + math.exp(-logit))
        p_t = p if target == 1 else 1 - p
        return -((1 - p_t) ** 2) * math.log(p_t)

    expected = sum(term(x, t) for x, t in zip(logits.flatten().tolist(), targets.flatten().tolist(), strict=True)) / 4
    assert sigmoid_focal_loss(logits, targets).item() == pytest.approx(expected, rel=1e-5)


def test_soft_f1_is_low_for_confident_right_answers_and_high_for_wrong_ones():
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    right = soft_f1_loss(20 * (2 * targets - 1), targets).item()
    wrong = soft_f1_loss(-20 * (2 * targets - 1), targets).item()
    assert right < 1e-3 and wrong > 0.99


def test_sub_category_term_is_weighted_into_the_loss():
    outputs = {"logits": torch.tensor([[1.0, -2.0]]), "sub_logits": torch.tensor([[0.3, -0.7, 2.0, 0.1]])}
    batch = {"target": torch.tensor([[1.0, 0.0]]), "sub_target": torch.tensor([[0.0, 1.0, 0.0, 0.0]])}
    terms = ClassificationLoss("bce", sub_loss_weight=5.0)(outputs, batch)
    assert terms["loss"].item() == pytest.approx(terms["cls_loss"].item() + 5.0 * terms["sub_loss"].item())


def test_unknown_loss_name_is_refused():
    with pytest.raises(ValueError, match="focal"):
        ClassificationLoss("hinge")


def test_merged_tiles_rebuild_the_image():
    images = torch.randn(3, 4, 8, 10)
    tiles = tile_images(images)
    assert tiles.shape == (12, 4, 4, 5)
    torch.testing.assert_close(merge_tiles(tiles), images)


def test_puzzle_cam_adds_tile_terms_that_backpropagate():

    network = create_classifier("test_resnet", in_chans=4)
    images = torch.randn(2, 4, 64, 64)
    outputs = network(images)
    add_puzzle_cam_outputs(network, images, outputs, weight=2.0)
    terms = ClassificationLoss("focal")(outputs, {"target": torch.zeros(2, 19)})
    assert outputs["puzzle_logits"].shape == (2, 19) and terms["puzzle_re_loss"].item() >= 0
    expected = terms["cls_loss"] + terms["puzzle_cls_loss"] + 2.0 * terms["puzzle_re_loss"]
    torch.testing.assert_close(terms["loss"], expected)
    terms["loss"].backward()
    assert network.get_classifier().weight.grad is not None
