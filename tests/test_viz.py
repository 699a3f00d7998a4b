import numpy as np
import pytest

from src.viz.render import rgby_to_display, rgby_to_rgb


def test_yellow_shows_in_red_and_green_and_bad_shapes_are_refused():
    rgby = np.zeros((2, 2, 4), np.uint8)
    rgby[..., 3] = 100
    assert rgby_to_rgb(rgby)[0, 0].tolist() == [50, 50, 0]
    with pytest.raises(ValueError, match="RGBY"):
        rgby_to_rgb(np.zeros((2, 2, 3), np.uint8))


def test_display_gain_brings_a_dim_image_to_full_brightness():
    rgby = np.zeros((10, 10, 4), np.uint8)
    rgby[..., 1] = np.arange(100, dtype=np.uint8).reshape(10, 10) // 4  # green 0..24
    shown = rgby_to_display(rgby, percentile=100.0)
    assert shown[..., 1].max() == 255 and shown[..., 1].min() == 0
    assert np.array_equal(rgby_to_display(np.zeros((4, 4, 4), np.uint8)), np.zeros((4, 4, 3), np.uint8))
