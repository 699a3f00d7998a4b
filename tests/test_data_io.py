"""Kaggle data layer: channel files, labels, bad-input errors, the real samples when present."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from src.data.classes import CHANNELS, CLASS_NAMES, NEGATIVE, NUM_CLASSES
from src.data.io import channel_path, labels_to_multihot, read_channel, read_labels, read_rgby, resize_image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KAGGLE_SAMPLES = SHARED_DATA / "hpa_kaggle_samples"
PUBLIC_JPG = SHARED_DATA / "hpa_public_jpg"


def write_channels(folder: Path, image_id: str, planes: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for channel, plane in planes.items():
        assert cv2.imwrite(str(folder / f"{image_id}_{channel}.png"), plane)


def distinct_planes(shape: tuple[int, int] = (6, 8)) -> dict[str, np.ndarray]:
    """Four uint8 planes, each a different gradient, so a swapped order shows."""
    base = np.arange(shape[0] * shape[1], dtype=np.uint8).reshape(shape)
    return {channel: base + 50 * index for index, channel in enumerate(CHANNELS)}


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_class_table() -> None:
    assert NUM_CLASSES == 19 and len(CLASS_NAMES) == 19
    assert CLASS_NAMES[0] == "Nucleoplasm" and CLASS_NAMES[NEGATIVE] == "Negative"
    assert CHANNELS == ("red", "green", "blue", "yellow")


def test_read_rgby_stacks_channels_in_order(tmp_path: Path) -> None:
    planes = distinct_planes()
    write_channels(tmp_path / "train", "abc", planes)
    image = read_rgby(tmp_path, "abc")
    assert image.shape == (6, 8, 4) and image.dtype == np.uint8
    for index, channel in enumerate(CHANNELS):
        assert np.array_equal(image[..., index], planes[channel])
    write_channels(tmp_path / "test", "xyz", planes)
    assert np.array_equal(read_rgby(tmp_path, "xyz", split="test"), image)


def test_missing_channel_names_the_path(tmp_path: Path) -> None:
    planes = distinct_planes()
    del planes["yellow"]
    write_channels(tmp_path / "train", "abc", planes)
    missing = channel_path(tmp_path, "abc", "yellow")
    with pytest.raises(FileNotFoundError, match=f"image abc: missing channel file.*{missing}"):
        read_rgby(tmp_path, "abc")
    with pytest.raises(FileNotFoundError, match=str(missing)):
        read_channel(missing)


def test_channels_of_different_shapes_name_the_id(tmp_path: Path) -> None:
    planes = distinct_planes()
    planes["green"] = np.zeros((6, 9), np.uint8)
    write_channels(tmp_path / "train", "odd-one", planes)
    with pytest.raises(ValueError, match=r"image odd-one: channels differ in shape .*green=\(6, 9\)"):
        read_rgby(tmp_path, "odd-one")


def test_16_bit_png_is_scaled_to_8_bit(tmp_path: Path) -> None:
    plane = np.array([[0, 255, 256, 300], [4095, 32768, 65280, 65535]], np.uint16)
    write_channels(tmp_path / "train", "deep", {c: plane for c in CHANNELS})
    image = read_rgby(tmp_path, "deep")
    assert image.dtype == np.uint8
    assert image[..., 0].tolist() == [[0, 0, 1, 1], [15, 128, 255, 255]]


def test_resize_to_square_and_to_width_height(tmp_path: Path) -> None:
    write_channels(
        tmp_path / "train", "abc", {c: np.full((16, 16), 10 * (i + 1), np.uint8) for i, c in enumerate(CHANNELS)}
    )
    small = read_rgby(tmp_path, "abc", size=8)
    assert small.shape == (8, 8, 4)
    assert small[0, 0].tolist() == [10, 20, 30, 40]  # constant planes stay constant, order kept
    assert read_rgby(tmp_path, "abc", size=(6, 4)).shape == (4, 6, 4)  # (width, height)
    assert resize_image(small, 32).shape == (32, 32, 4)
    assert resize_image(np.zeros((5, 7), np.uint8), (3, 2)).shape == (2, 3)


def test_public_jpg_layout_picks_each_channels_plane(tmp_path: Path) -> None:
    # A public-HPA RGB jpg: the signal sits in the channel's own plane (yellow in red and green).
    rgb = {"red": (200, 0, 0), "green": (0, 150, 0), "blue": (0, 0, 100), "yellow": (180, 180, 0)}
    for channel, color in rgb.items():
        image = np.zeros((16, 16, 3), np.uint8)
        image[4:12, 4:12] = color[::-1]  # BGR for OpenCV
        assert cv2.imwrite(str(tmp_path / f"P_A1_1_{channel}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 100])
    image = read_rgby(tmp_path, "P_A1_1", split="", ext="jpg")
    assert image.shape == (16, 16, 4)
    assert np.abs(image[8, 8].astype(int) - [200, 150, 100, 180]).max() <= 3
    assert image[0, 0].max() <= 3


def test_read_labels_to_multihot(tmp_path: Path) -> None:
    frame = read_labels(write_csv(tmp_path / "train.csv", "ID,Label\n007,0|5\nb,18\nc,16|0|2\n"))
    assert frame["ID"].tolist() == ["007", "b", "c"]
    assert frame["labels"].tolist() == [[0, 5], [18], [16, 0, 2]]
    multihot = labels_to_multihot(frame["labels"].tolist())
    assert multihot.shape == (3, 19) and multihot.dtype == np.float32
    assert np.flatnonzero(multihot[2]).tolist() == [0, 2, 16]
    assert multihot.sum() == 6


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("a,0\nb,19\n", r"row 3 \(ID b\): class id\(s\) \[19\] outside 0..18"),
        ("a,0\nb,3|-1\n", r"row 3 \(ID b\): class id\(s\) \[-1\]"),
        ("a,0\nb,\n", r"row 3 \(ID b\): empty label"),
        ("a,1.5\n", r"row 2 \(ID a\): label '1.5' is not"),
        ("a,0||2\n", r"row 2 \(ID a\): label '0\|\|2' is not"),
        ("a,0\nb,1\na,2\n", r"duplicate ID\(s\): a"),
    ],
)
def test_bad_labels_are_rejected(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_labels(write_csv(tmp_path / "train.csv", "ID,Label\n" + body))


def test_label_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_labels(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="missing column 'Label'"):
        read_labels(write_csv(tmp_path / "train.csv", "ID,Target\na,0\n"))


@pytest.fixture(scope="module")
def kaggle_samples() -> pd.DataFrame:
    if not (KAGGLE_SAMPLES / "train.csv").is_file():
        pytest.skip(f"real HPA Kaggle samples not found at {KAGGLE_SAMPLES} (only in the project workspace)")
    return read_labels(KAGGLE_SAMPLES / "train.csv")


def test_real_kaggle_samples_read_correctly(kaggle_samples: pd.DataFrame) -> None:
    assert len(kaggle_samples) == 3
    image_id = kaggle_samples["ID"].iloc[0]
    image = read_rgby(KAGGLE_SAMPLES, image_id, split="")
    assert image.shape == (2048, 2048, 4) and image.dtype == np.uint8
    for index, channel in enumerate(CHANNELS):
        raw = cv2.imread(str(KAGGLE_SAMPLES / f"{image_id}_{channel}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(image[..., index], raw if raw.dtype == np.uint8 else (raw >> 8).astype(np.uint8))
        assert image[..., index].std() > 1, f"{channel} has no signal"
    assert read_rgby(KAGGLE_SAMPLES, image_id, split="", size=256).shape == (256, 256, 4)


def test_real_public_jpgs_read_correctly() -> None:
    if not PUBLIC_JPG.is_dir():
        pytest.skip(f"real public HPA jpgs not found at {PUBLIC_JPG} (only in the project workspace)")
    image_id = sorted(p.name.rsplit("_", 1)[0] for p in PUBLIC_JPG.glob("*_blue.jpg"))[0]
    image = read_rgby(PUBLIC_JPG, image_id, split="", ext="jpg")
    assert image.ndim == 3 and image.shape[2] == 4 and image.dtype == np.uint8
    means = image.reshape(-1, 4).mean(axis=0)
    assert means.min() > 5, f"a channel has no signal: means {means}"  # yellow included
    blue_bgr = cv2.imread(str(PUBLIC_JPG / f"{image_id}_blue.jpg"))
    assert blue_bgr.reshape(-1, 3).mean(axis=0).argmax() == 0  # the signal sits in the blue plane
    assert np.array_equal(image[..., 2], blue_bgr[..., 0])
    yellow_bgr = cv2.imread(str(PUBLIC_JPG / f"{image_id}_yellow.jpg"))
    assert np.array_equal(image[..., 3], yellow_bgr[..., 1:].max(axis=-1))
