"""The one TTA loop of the map sources (src/cam/map_source.py) on sources whose maps are known, the CAM / Grad-CAM
identity of a linear head, and the classifier and segmentation sources (src/cam/classifier_source.py,
src/cam/segm_source.py) on networks without a checkpoint whose maps are computable by hand."""

import re

import pytest
import torch

from src.cam.classifier_source import ClassifierSource
from src.cam.map_source import CheckpointSpec, MapSource, normalise_per_class, tta_views, view_maps
from src.cam.segm_source import SegmentationSource
from src.data.classes import NUM_CLASSES
from src.models.classifier import create_classifier
from src.models.preprocess import normalize_images


class EchoSource(MapSource):
    """A map source without a checkpoint: every class map is the view's red channel times ``gain``, and the
    probability of every class is the view's top-left red value (so it depends on which view it sees).

    ``rescale`` multiplies the image by the scale instead of resizing it, so each scale is recognisable in the mean.
    """

    def __init__(self, gain: float = 1.0, flip_back: bool = True):
        self.device = torch.device("cpu")
        self.in_chans = 4
        self.gain = gain

    def rescale(self, images: torch.Tensor, scale: float) -> torch.Tensor:
        return images * scale

    def forward_view(self, images, map_kind):
        maps = (self.gain * images[:, :1]).expand(-1, NUM_CLASSES, -1, -1).clone()
        probs = images[:, 0, 0, 0][:, None].expand(-1, NUM_CLASSES).clone()
        return probs, maps


def _asymmetric_image(size: int = 6) -> torch.Tensor:
    """(1, 4, size, size) uint8: one bright pixel at row 1, column 4 of the red channel; the rest dark."""
    images = torch.zeros(1, 4, size, size, dtype=torch.uint8)
    images[0, 0, 1, 4] = 255
    images[0, 0, 0, 0] = 100  # a distinct top-left value
    return images


def test_flipped_views_come_back_aligned_with_the_image():
    images = _asymmetric_image()
    red = normalize_images(images)[:, :1]
    _, maps = EchoSource().predict(images, (6, 6), flips=True, scales=[1.0], map_kind="logit")
    torch.testing.assert_close(maps, red.expand(-1, NUM_CLASSES, -1, -1))
    assert maps[0, 0].argmax().item() == 1 * 6 + 4  # the bright pixel stays at (1, 4)


def test_cam_maps_of_flipped_views_peak_where_the_image_peaks():
    images = _asymmetric_image()
    _, cams = EchoSource().predict(images, (6, 6), flips=True, scales=[1.0], map_kind="cam")
    expected = normalise_per_class(torch.relu(normalize_images(images)[:, :1]))
    torch.testing.assert_close(cams[:, :1], expected)
    assert cams[0, 3].max().item() == pytest.approx(1.0, abs=1e-4) and cams[0, 3, 1, 4] == cams[0, 3].max()


def test_probabilities_are_the_mean_over_the_three_views():
    images = _asymmetric_image()
    red = normalize_images(images)[0, 0]
    # top-left red value seen by the identity, horizontal flip (row 0, last column) and vertical flip (last row)
    expected = (red[0, 0] + red[0, 5] + red[5, 0]) / 3
    probs, _ = EchoSource().predict(images, (6, 6), flips=True, scales=[1.0], map_kind="logit")
    torch.testing.assert_close(probs, expected.expand(1, NUM_CLASSES))
    probs, _ = EchoSource().predict(images, (6, 6), flips=False, scales=[1.0], map_kind="logit")
    torch.testing.assert_close(probs, red[0, 0].expand(1, NUM_CLASSES))


def test_scales_are_averaged_with_equal_weight_over_scales_and_flips():
    images = _asymmetric_image()
    red = normalize_images(images)[:, :1]
    probs, maps = EchoSource().predict(images, (6, 6), flips=True, scales=[1.0, 2.0, 0.5], map_kind="logit")
    torch.testing.assert_close(maps, (1.0 + 2.0 + 0.5) / 3 * red.expand(-1, NUM_CLASSES, -1, -1))
    top_left = (red[0, 0, 0, 0] + red[0, 0, 0, 5] + red[0, 0, 5, 0]) / 3
    torch.testing.assert_close(probs, (3.5 / 3 * top_left).expand(1, NUM_CLASSES))


def test_maps_are_resized_to_cam_size():
    images = _asymmetric_image(size=8)
    _, maps = EchoSource().predict(images, (4, 4), flips=False, scales=[1.0], map_kind="logit")
    red = normalize_images(images)[:, :1]
    torch.testing.assert_close(maps[:, :1], torch.nn.functional.avg_pool2d(red, 2))  # bilinear 2x down = 2x2 mean


def test_each_view_is_normalised_before_averaging_in_cam_mode():
    images = _asymmetric_image()
    _, small = EchoSource(gain=1.0).predict(images, (6, 6), flips=True, scales=[1.0, 3.0], map_kind="cam")
    _, large = EchoSource(gain=50.0).predict(images, (6, 6), flips=True, scales=[1.0], map_kind="cam")
    torch.testing.assert_close(small, large)  # divided by each view's own maximum: the gain and scale cancel


def test_unknown_map_kind_is_refused():
    with pytest.raises(ValueError, match="map_kind"):
        EchoSource().predict(_asymmetric_image(), (6, 6), flips=False, scales=[1.0], map_kind="prob")


def test_tta_views_and_view_maps():
    assert tta_views(True) == [(), (3,), (2,)] and tta_views(False) == [()]
    maps = torch.tensor([[[[-1.0, 2.0], [4.0, 0.0]]]])
    torch.testing.assert_close(view_maps(maps, "logit"), maps)
    torch.testing.assert_close(view_maps(maps, "cam"), torch.tensor([[[[0.0, 2.0], [4.0, 0.0]]]]) / (4 + 1e-5))


def _classifier_source(cam_method: str) -> ClassifierSource:
    """A ClassifierSource around a fresh test_resnet, without a checkpoint (the network is all it uses)."""
    torch.manual_seed(0)
    source = ClassifierSource.__new__(ClassifierSource)
    source.network = create_classifier("test_resnet", in_chans=4).eval()
    with torch.no_grad():  # large maps, so the +1e-5 of the per-class normalisation is negligible for both methods
        source.network.get_classifier().weight.mul_(1000.0)
    source.device, source.in_chans, source.cam_method, source.gradcam_module = torch.device("cpu"), 4, cam_method, None
    source.spec, source.gradcam_min_prob = CheckpointSpec("both", 1.0, "in-memory"), 0.0
    return source


def test_gradcam_at_the_backbone_output_equals_the_relu_cam_up_to_a_positive_factor():
    torch.manual_seed(1)
    images = torch.randint(0, 256, (1, 4, 64, 64), dtype=torch.uint8)
    normalised = normalize_images(images)
    cam_source, grad_source = _classifier_source("cam"), _classifier_source("gradcam")
    cam_probs, logit_maps = cam_source.forward_view(normalised, "cam")
    grad_probs, gradcams = grad_source.forward_view(normalised, "cam")
    h, w = logit_maps.shape[2:]
    # logits are the mean of the linear head over the feature map: d logit / d feature = weight / (h w) everywhere
    torch.testing.assert_close(gradcams * (h * w), torch.relu(logit_maps), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_probs, cam_probs)
    # at the feature map's size the TTA-averaged, per-class normalised maps are equal (the factor cancels); at a
    # larger cam_size they are not: CAM is resized before its ReLU, Grad-CAM after it (see the README)
    _, cams = cam_source.predict(images, (h, w), flips=True, scales=[1.0])
    _, grads = grad_source.predict(images, (h, w), flips=True, scales=[1.0])
    torch.testing.assert_close(grads, cams, rtol=1e-3, atol=1e-4)


def test_logit_maps_need_the_cam_method():
    with pytest.raises(ValueError, match="logit maps need cam_method"):
        _classifier_source("gradcam").check_request("logit")


def test_classifier_rescale_resizes_bilinearly_and_keeps_scale_one():
    images = torch.rand(1, 4, 8, 8)
    source = _classifier_source("cam")
    assert source.rescale(images, 1.0) is images
    assert source.rescale(images, 0.5).shape == (1, 4, 4, 4)
    torch.testing.assert_close(source.rescale(images, 0.5), torch.nn.functional.avg_pool2d(images, 2))
    assert source.rescale(images, 2.0).shape == (1, 4, 16, 16)


@pytest.mark.parametrize(("side", "scale", "expected"), [(64, 1.0, 64), (64, 0.5, 32), (64, 0.25, 32), (96, 1.25, 128)])
def test_segmentation_rescale_rounds_sides_to_the_output_stride(side, scale, expected):
    source = SegmentationSource.__new__(SegmentationSource)
    images = torch.rand(1, 4, side, side)
    assert source.rescale(images, scale).shape[2:] == (expected, expected)


def test_checkpoint_spec_parses_a_valid_entry_and_names_each_bad_one(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"")
    assert CheckpointSpec.parse(["cam", "2", ckpt], 0) == CheckpointSpec("cam", 2.0, str(ckpt))
    with pytest.raises(ValueError, match=r"ckpt_paths\[3\] must be \[how_join, weight, path\]"):
        CheckpointSpec.parse(["both", 1.0], 3)
    with pytest.raises(ValueError, match="how_join must be one of"):
        CheckpointSpec.parse(["all", 1.0, ckpt], 0)
    with pytest.raises(ValueError, match="is not a number"):
        CheckpointSpec.parse(["both", "heavy", ckpt], 0)
    with pytest.raises(ValueError, match=r"must be \[how_join, weight, path\]"):
        CheckpointSpec.parse(["both", 1.0, ckpt, "extra"], 0)
    for weight in (0.0, -1.0):
        with pytest.raises(ValueError, match="must be > 0"):
            CheckpointSpec.parse(["both", weight, ckpt], 0)
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        CheckpointSpec.parse(["both", 1.0, tmp_path / "nowhere.ckpt"], 0)


def test_checkpoint_spec_is_immutable():
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        CheckpointSpec("both", 1.0, "x").weight = 2.0


def test_a_run_without_input_size_or_channels_in_its_hparams_means_512_px_rgby(monkeypatch):
    import src.cam.map_source as map_source

    class Loaded:
        network = torch.nn.Identity()

    monkeypatch.setattr(map_source, "load_trained_pl_model", lambda _cls, _path: (Loaded(), {}))
    source = MapSource(CheckpointSpec("both", 1.0, "old.ckpt"), torch.device("cpu"))
    assert (source.input_size, source.in_chans) == (512, 4)
    monkeypatch.setattr(
        map_source, "load_trained_pl_model", lambda _c, _p: (Loaded(), {"input_size": 64, "num_inchannels": 3})
    )
    source = MapSource(CheckpointSpec("both", 1.0, "new.ckpt"), torch.device("cpu"))
    assert (source.input_size, source.in_chans) == (64, 3)


def test_per_class_normalisation_adds_its_epsilon_to_the_maximum():
    maps = torch.full((1, 1, 2, 2), 1e-4)
    torch.testing.assert_close(normalise_per_class(maps), torch.full((1, 1, 2, 2), 1e-4 / (1e-4 + 1e-5)))


class RedToLogits(torch.nn.Module):
    """A segmentation network without a checkpoint: a 1x1 convolution whose 20 logits are ``weights[k]`` times
    the red channel (no bias); channel 19 is the background. Its output is a dict like the U-Net's."""

    def __init__(self, weights: list[float]):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 20, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, 0, 0, 0] = torch.tensor(weights)

    def forward(self, images):
        return {"logits": self.conv(images)}


def _segmentation_source(weights: list[float]) -> SegmentationSource:
    """A SegmentationSource around :class:`RedToLogits`, without a checkpoint (the network is all it uses)."""
    source = SegmentationSource.__new__(SegmentationSource)
    source.network, source.device, source.in_chans = RedToLogits(weights).eval(), torch.device("cpu"), 4
    source.spec = CheckpointSpec("cam", 1.0, "in-memory")
    return source


def _red_pixel() -> torch.Tensor:
    """(1, 4, 2, 2) normalised images: red 1.0 at the top-left pixel, 0 everywhere else."""
    images = torch.zeros(1, 4, 2, 2)
    images[0, 0, 0, 0] = 1.0
    return images


def test_segmentation_logit_maps_are_the_19_class_logits_in_full_precision():
    weights = [0.3] + [-0.7] * 18 + [0.1]  # 0.3 and 0.7 are not bfloat16 numbers: CPU autocast would round them
    probs, maps = _segmentation_source(weights).forward_view(_red_pixel(), "logit")
    expected = torch.zeros(1, NUM_CLASSES, 2, 2)
    expected[0, 0, 0, 0], expected[0, 1:, 0, 0] = 0.3, -0.7  # the background's 0.1 is left out
    assert probs is None
    torch.testing.assert_close(maps, expected, rtol=0, atol=1e-7)


def test_segmentation_cam_maps_are_each_class_sigmoid_minus_the_background_clipped_at_0():
    weights = [0.3] + [-0.7] * 18 + [0.1]  # background logit 0.1 at the red pixel, 0 elsewhere
    probs, maps = _segmentation_source(weights).forward_view(_red_pixel(), "cam")
    sigmoid = torch.sigmoid(torch.tensor([0.3, 0.1]))
    expected = torch.zeros(1, NUM_CLASSES, 2, 2)  # away from the red pixel every class is 0.5 - 0.5 = 0
    expected[0, 0, 0, 0] = sigmoid[0] - sigmoid[1]  # 0.5744 - 0.5250; classes 1-18 are below the background: 0
    assert probs is None
    torch.testing.assert_close(maps, expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("how_join", ["both", "pred", "cell"])
def test_segmentation_source_refuses_every_join_but_cam(how_join):
    with pytest.raises(ValueError, match=f"join it with how_join 'cam', not '{how_join}'"):
        SegmentationSource(CheckpointSpec(how_join, 1.0, "segm.ckpt"), torch.device("cpu"))


def test_segmentation_source_loads_a_segmentation_run_and_refuses_a_classification_run(monkeypatch):
    import src.cam.map_source as map_source

    class Loaded:
        network = RedToLogits([0.0] * 20)

    monkeypatch.setattr(map_source, "load_trained_pl_model", lambda _c, _p: (Loaded(), {"segm_label_dir": "labels"}))
    source = SegmentationSource(CheckpointSpec("cam", 1.0, "segm.ckpt"), torch.device("cpu"))
    assert source.network is Loaded.network
    monkeypatch.setattr(map_source, "load_trained_pl_model", lambda _c, _p: (Loaded(), {"segm_label_dir": ""}))
    with pytest.raises(ValueError, match="classifier.ckpt: not a segmentation checkpoint"):
        SegmentationSource(CheckpointSpec("cam", 1.0, "classifier.ckpt"), torch.device("cpu"))


def test_segmentation_rescale_keeps_a_size_on_the_stride_and_resizes_bilinearly():
    images = torch.rand(1, 4, 64, 64)
    source = _segmentation_source([0.0] * 20)
    assert source.rescale(images, 1.0) is images
    torch.testing.assert_close(source.rescale(images, 0.5), torch.nn.functional.avg_pool2d(images, 2))


def _loaded_classifier(monkeypatch, cam_method: str = "cam", gradcam_layer: str = "", hparams=None):
    """A ClassifierSource built by its constructor around a fresh test_resnet (the checkpoint loader returns it
    with ``hparams``)."""
    import src.cam.map_source as map_source

    class Loaded:
        network = create_classifier("test_resnet", in_chans=4)

    monkeypatch.setattr(map_source, "load_trained_pl_model", lambda _c, _p: (Loaded(), hparams or {}))
    return ClassifierSource(
        CheckpointSpec("both", 1.0, "classifier.ckpt"), torch.device("cpu"), cam_method, gradcam_layer
    )


def test_unknown_cam_method_is_refused():
    with pytest.raises(ValueError, match="cam_method must be one of .* got 'gradcam\\+\\+'"):
        ClassifierSource(CheckpointSpec("both", 1.0, "classifier.ckpt"), torch.device("cpu"), "gradcam++")


def test_gradcam_hooks_the_named_layer_and_the_backbone_output_by_default(monkeypatch):
    source = _loaded_classifier(monkeypatch, "gradcam", "backbone.layer3")
    assert source.gradcam_module is source.network.backbone.layer3 and source.gradcam_modules == []
    assert _loaded_classifier(monkeypatch, "gradcam").gradcam_module is None


def test_multi_layer_methods_hook_the_listed_layers_or_one_per_backbone_stage(monkeypatch):
    source = _loaded_classifier(monkeypatch, "multigradcam", " backbone.layer2 , ,backbone.layer4")
    backbone = source.network.backbone
    assert source.gradcam_modules == [backbone.layer2, backbone.layer4] and source.gradcam_module is None
    source = _loaded_classifier(monkeypatch, "multigradcam_product")
    backbone = source.network.backbone
    assert source.gradcam_modules == [backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4]


def test_the_cam_method_hooks_no_layer(monkeypatch):
    source = _loaded_classifier(monkeypatch, "cam", "backbone.layer3")
    assert source.gradcam_module is None and source.gradcam_modules == []


def test_an_unknown_layer_is_named_with_the_layers_ending_like_it_and_the_backbone_stages(monkeypatch):
    close = ["backbone.conv1", *(f"backbone.layer{i}.0.conv1" for i in range(1, 5))]
    stages = [f"backbone.layer{i}" for i in range(1, 5)]
    with pytest.raises(ValueError) as error:
        _loaded_classifier(monkeypatch, "gradcam", "backbone.layer9.0.conv1")
    assert str(error.value) == (
        f"classifier.ckpt: no layer 'backbone.layer9.0.conv1' for Grad-CAM; layers like it: {close}; "
        f"backbone stages: {stages}"
    )


def test_an_unknown_layer_lists_at_most_8_layers_ending_like_it(monkeypatch):
    # 20 test_resnet layers end with '1'; the first 8 in module order are listed
    close = ["backbone.conv1", "backbone.conv1.1", "backbone.bn1", "backbone.act1", "backbone.layer1"]
    close += ["backbone.layer1.0.conv1", "backbone.layer1.0.bn1", "backbone.layer1.0.act1"]
    with pytest.raises(ValueError, match=f"layers like it: {re.escape(str(close))}; "):
        _loaded_classifier(monkeypatch, "multigradcam", "backbone.layer1.0.conv1.1")


def test_a_classifier_checkpoint_must_have_19_classes(monkeypatch):
    with pytest.raises(ValueError, match="classifier.ckpt: checkpoint has 18 classes, inference needs 19"):
        _loaded_classifier(monkeypatch, hparams={"num_classes": 18})
    with pytest.raises(ValueError, match="checkpoint has 20 classes"):
        _loaded_classifier(monkeypatch, hparams={"num_classes": 20})
    assert _loaded_classifier(monkeypatch, hparams={"num_classes": 19}).cam_method == "cam"


def test_a_segmentation_checkpoint_is_refused_as_a_classifier(monkeypatch):
    with pytest.raises(ValueError, match="classifier.ckpt: a segmentation checkpoint cannot be used as a classifier"):
        _loaded_classifier(monkeypatch, hparams={"segm_label_dir": "labels"})


def test_gradcam_sources_give_cam_maps():
    _classifier_source("gradcam").check_request("cam")


class Square(torch.nn.Module):
    def forward(self, x):
        return x * x


class SquareNet(torch.nn.Module):
    """A one-class classifier whose Grad-CAMs are computable by hand: layer ``first`` (a 1x1 convolution of weight
    1) gives a = the input, layer ``second`` the features a^2; the logit is 2 mean(a^2), the logit map 2 a^2."""

    def __init__(self):
        super().__init__()
        self.first = torch.nn.Conv2d(1, 1, 1, bias=False)
        torch.nn.init.ones_(self.first.weight)
        self.second = Square()

    def forward_features(self, images):
        return self.second(self.first(images))

    def head(self, features):
        return {"logits": 2.0 * features.mean(dim=(2, 3))}

    def logit_map(self, features):
        return 2.0 * features


def _square_source(cam_method: str, layer: str = "") -> ClassifierSource:
    """A ClassifierSource around :class:`SquareNet`: Grad-CAM at ``layer`` ('first', or '' = the features), the
    multi-layer methods at both layers."""
    source = ClassifierSource.__new__(ClassifierSource)
    source.network, source.device, source.in_chans = SquareNet(), torch.device("cpu"), 1
    source.cam_method, source.spec = cam_method, CheckpointSpec("both", 1.0, "in-memory")
    source.gradcam_module = source.network.first if layer == "first" else None
    source.gradcam_modules = [] if cam_method == "gradcam" else [source.network.first, source.network.second]
    source.gradcam_min_prob = 0.0
    return source


A = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # the input a of SquareNet; mean(a^2) = 7.5, so the logit is 15


def test_gradcam_at_the_backbone_output_weights_the_features_by_their_mean_gradient():
    probs, cams = _square_source("gradcam").forward_view(A, "cam")
    # d logit / d a^2 = 2 / 4 everywhere: the Grad-CAM is 0.5 a^2
    torch.testing.assert_close(cams, 0.5 * A**2)
    torch.testing.assert_close(probs, torch.sigmoid(torch.tensor([[15.0]])))


def test_gradcam_at_a_named_layer_weights_that_layer_and_removes_its_hook():
    source = _square_source("gradcam", "first")
    probs, cams = source.forward_view(A, "cam")
    # d logit / d a = 2 * 2a / 4 = a, whose mean is 2.5: the Grad-CAM is 2.5 a
    torch.testing.assert_close(cams, 2.5 * A)
    torch.testing.assert_close(probs, torch.sigmoid(torch.tensor([[15.0]])))
    assert not source.network.first._forward_hooks


def test_multigradcam_averages_the_normalised_layer_maps_and_the_product_takes_their_geometric_mean():
    # each layer's Grad-CAM divided by its maximum: 2.5 a / 10 = a / 4 at 'first', 0.5 a^2 / 8 = a^2 / 16 at 'second'
    _, mean = _square_source("multigradcam").forward_view(A, "cam")
    _, product = _square_source("multigradcam_product").forward_view(A, "cam")
    torch.testing.assert_close(mean, (A / 4 + A**2 / 16) / 2, rtol=0, atol=1e-4)
    torch.testing.assert_close(product, torch.sqrt(A / 4 * A**2 / 16), rtol=0, atol=1e-4)


class TwiceNet(SquareNet):
    """SquareNet with its layer ``first`` (weight 1, now bias 1) called twice: first(x) = x + 1, then b = x + 2;
    the features are b^2, the logit 2 mean(b^2)."""

    def __init__(self):
        super().__init__()
        self.first.bias = torch.nn.Parameter(torch.ones(1))

    def forward_features(self, images):
        return self.second(self.first(self.first(images)))


def test_gradcam_of_a_layer_called_twice_is_taken_at_its_last_call():
    source = _square_source("gradcam", "first")
    source.network = TwiceNet()
    source.gradcam_module = source.network.first
    _, cams = source.forward_view(A, "cam")
    # d logit / d b = b = a + 2, whose mean is 4.5: 4.5 (a + 2) at the last call (the first call would give 4.5 (a + 1))
    torch.testing.assert_close(cams, 4.5 * (A + 2))


def test_the_cam_method_gives_the_signed_logit_maps_of_the_head():
    source = _square_source("cam")
    source.check_request("logit")
    probs, maps = source.forward_view(A, "logit")
    torch.testing.assert_close(maps, 2.0 * A**2)
    torch.testing.assert_close(probs, torch.sigmoid(torch.tensor([[15.0]])))
