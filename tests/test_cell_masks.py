"""Tests of src/cell_masks: segmentation backends, instance matching and the mask cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from src.cell_masks.cache import (
    CorruptMaskFileError,
    MaskCache,
    MaskCacheMismatchError,
    fill_mask_cache,
    mask_path,
    read_masks,
    remove_stale_temporaries,
    shard_ids,
    write_masks,
)
from src.cell_masks.classical import estimate_nucleus_diameter, segment_classical, segment_nuclei
from src.cell_masks.hpacellseg_backend import INSTALL_HINT, check_weights
from src.cell_masks.quality import f1_score, match_instances
from src.cell_masks.segment import get_segmenter, segment_image
from src.data.io import read_rgby

ROOT = Path(__file__).resolve().parents[1]
HPA_DIR = ROOT.parent / "shared" / "data" / "hpa_kaggle_samples"
HPA_ID = "000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0"
CHANNELS = ("red", "green", "blue", "yellow")


def draw_cells(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """An (H, W, 4) uint8 field of well-separated cells on a grid and their number."""
    rng = np.random.default_rng(seed)
    radius = min(height, width) / 16
    step = int(3 * radius)
    image = np.zeros((height, width, 4), dtype=np.uint8)
    count = 0
    for y in range(step // 2, height - step // 2 + 1, step):
        for x in range(step // 2, width - step // 2 + 1, step):
            center = (x, y)
            for channel, value in ((0, 110), (3, 90)):
                plane = np.ascontiguousarray(image[..., channel])
                cv2.circle(plane, center, int(1.3 * radius), value, -1)
                image[..., channel] = plane
            plane = np.ascontiguousarray(image[..., 2])
            cv2.ellipse(plane, center, (int(0.6 * radius), int(0.5 * radius)), 30, 0, 360, 200, -1)
            image[..., 2] = plane
            count += 1
    noise = rng.integers(0, 12, size=image.shape, dtype=np.uint8)
    return np.maximum(image, noise), count


def assert_consistent(nuclei_mask: np.ndarray, cell_mask: np.ndarray, shape: tuple[int, int]) -> None:
    assert nuclei_mask.shape == cell_mask.shape == shape
    assert nuclei_mask.dtype == cell_mask.dtype == np.uint16
    inside = nuclei_mask > 0
    assert np.array_equal(nuclei_mask[inside], cell_mask[inside]), "nucleus k must lie in cell k"
    assert set(np.unique(cell_mask)) - {0} == set(np.unique(nuclei_mask)) - {0}, "every cell has a nucleus"
    ids = np.unique(cell_mask)
    assert np.array_equal(ids, np.arange(len(ids))), "cells are numbered 1..K"


def write_image(folder: Path, image_id: str, rgby: np.ndarray, dtype=np.uint8) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, channel in enumerate(CHANNELS):
        plane = rgby[..., index].astype(dtype) * (257 if dtype == np.uint16 else 1)
        cv2.imwrite(str(folder / f"{image_id}_{channel}.png"), plane)


def final_files(mask_dir: Path) -> list[Path]:
    """Cache files under their final names (temporary files of atomic writes start with a dot)."""
    return [path for path in mask_dir.glob("*.npz") if not path.name.startswith(".")]


# ---- instance matching ----


def test_match_instances_counts_and_iou() -> None:
    truth = np.zeros((20, 20), np.int32)
    truth[0:10, 0:10], truth[10:20, 10:20], truth[0:4, 15:19] = 1, 2, 3
    pred = np.zeros_like(truth)
    pred[0:10, 0:8] = 5  # IoU 0.8 with truth 1
    pred[10:20, 10:13] = 7  # IoU 0.3 with truth 2: below threshold
    pred[15:18, 0:3] = 9  # no truth
    tp, fp, fn, mean_iou = match_instances(pred, truth, 0.5)
    assert (tp, fp, fn) == (1, 2, 2)
    assert mean_iou == pytest.approx(0.8)
    assert f1_score(tp, fp, fn) == pytest.approx(1 / 3)


def test_match_instances_empty_images() -> None:
    empty = np.zeros((8, 8), np.uint16)
    assert match_instances(empty, empty, 0.5)[:3] == (0, 0, 0)
    assert f1_score(0, 0, 0) == 1.0


# ---- classical backend ----


def test_blank_image_gives_empty_masks() -> None:
    nuclei_mask, cell_mask = segment_image(np.zeros((300, 400, 4), np.uint8), "classical")
    assert_consistent(nuclei_mask, cell_mask, (300, 400))
    assert cell_mask.max() == 0


def test_saturated_image_does_not_crash() -> None:
    nuclei_mask, cell_mask = segment_image(np.full((256, 256, 4), 255, np.uint8), "classical")
    assert_consistent(nuclei_mask, cell_mask, (256, 256))
    assert cell_mask.max() <= 1


@pytest.mark.parametrize("shape", [(1728, 1728), (2048, 2048), (3072, 3072), (600, 1000)])
def test_drawn_cells_are_found_at_any_size(shape: tuple[int, int]) -> None:
    rgby, count = draw_cells(*shape)
    nuclei_mask, cell_mask = segment_classical(rgby)
    assert_consistent(nuclei_mask, cell_mask, shape)
    assert int(cell_mask.max()) == count


def test_dim_nucleus_among_bright_ones_is_found() -> None:
    blue = np.full((192, 192), 30, np.uint8)
    truth = np.zeros(blue.shape, np.int32)
    for k, (y, x) in enumerate(((56 + 40 * i, 56 + 40 * j) for i in range(3) for j in range(3)), start=1):
        cv2.circle(blue, (x, y), 13, 80 if k == 5 else 230, -1)  # the centre nucleus is dim
        cv2.circle(truth, (x, y), 13, k, -1)
    blue = cv2.GaussianBlur(blue, (0, 0), 1.5)
    blue = np.maximum(blue, np.random.default_rng(0).integers(0, 10, blue.shape).astype(np.uint8))
    tp, fp, fn, _ = match_instances(segment_nuclei(blue), truth, 0.5)
    assert (tp, fp, fn) == (9, 0, 0)


def embryo(gap: int, blur: float, rings: int, diameter: int = 10) -> np.ndarray:
    """A dim oval body whose rim is lined with ``rings`` rings of bright nuclei ``gap`` px apart (DSB2018 embryos)."""
    image = np.zeros((512, 512), np.float32)
    cv2.ellipse(image, (256, 256), (200, 140), 0, 0, 360, 0.25, -1)
    for ring in range(rings):
        a, b = 200 - diameter // 2 - ring * (diameter + gap), 140 - diameter // 2 - ring * (diameter + gap)
        steps = int(2 * np.pi * np.sqrt((a * a + b * b) / 2) / (diameter + gap))
        for angle in np.linspace(0, 2 * np.pi, steps, endpoint=False):
            center = (int(256 + a * np.cos(angle)), int(256 + b * np.sin(angle)))
            cv2.circle(image, center, diameter // 2, 0.8, -1)
    return cv2.GaussianBlur(image, (0, 0), blur) if blur else image


@pytest.mark.parametrize(("gap", "blur", "rings"), [(3, 0.0, 2), (1, 1.5, 3)], ids=["3-classes", "4-classes"])
def test_nucleus_size_of_an_embryo_is_its_nuclei_not_its_body(gap: int, blur: float, rings: int) -> None:
    # The Otsu foreground is the whole body, one convex blob about 280 px wide. Nuclei 3 px apart stand apart
    # in the upper of three Otsu classes; blurred and 1 px apart, only in the upper of four.
    estimate = estimate_nucleus_diameter(embryo(gap, blur, rings))
    assert estimate is not None and 7.0 <= estimate <= 15.0, estimate


def test_nucleus_size_of_two_large_nuclei_of_unequal_brightness() -> None:
    # Too few nuclei for the median area: the inscribed circles give it, and the bright nucleus, alone in the
    # upper Otsu class and about half as wide, does not make the estimate smaller.
    image = np.zeros((512, 640), np.float32)
    cv2.circle(image, (200, 200), 50, 0.45, -1)
    cv2.circle(image, (450, 300), 28, 0.9, -1)
    estimate = estimate_nucleus_diameter(image)
    assert estimate is not None and 80.0 <= estimate <= 130.0, estimate


def test_sixteen_bit_png_gives_same_masks_as_eight_bit(tmp_path: Path) -> None:
    rgby, _ = draw_cells(512, 512, seed=3)
    write_image(tmp_path / "eight", "img", rgby)
    write_image(tmp_path / "sixteen", "img", rgby, dtype=np.uint16)
    assert cv2.imread(str(tmp_path / "sixteen" / "img_blue.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    masks_8 = segment_classical(read_rgby(tmp_path, "img", split="eight"))
    masks_16 = segment_classical(read_rgby(tmp_path, "img", split="sixteen"))
    assert np.array_equal(masks_8[1], masks_16[1])


def test_real_hpa_sample_agrees_with_hpacellseg() -> None:
    reference_file = HPA_DIR / "masks_hpacellseg" / f"{HPA_ID}_predictedmask.png"
    if not reference_file.is_file():
        pytest.skip(f"real HPA sample not available: {reference_file}")
    nuclei_mask, cell_mask = segment_classical(read_rgby(HPA_DIR, HPA_ID, split=""))
    assert_consistent(nuclei_mask, cell_mask, (2048, 2048))
    tp, fp, fn, _ = match_instances(cell_mask, cv2.imread(str(reference_file), cv2.IMREAD_UNCHANGED), 0.6)
    assert f1_score(tp, fp, fn) >= 0.7


def test_unknown_backend_and_parameter_are_refused() -> None:
    with pytest.raises(ValueError, match="classical, learned, hpacellseg, precomputed"):
        get_segmenter("cellpose")
    with pytest.raises(ValueError, match="nucleus_size"):
        get_segmenter("classical", nucleus_size=3)


# ---- hpacellseg and precomputed backends ----


def test_hpacellseg_missing_package_says_what_to_install() -> None:
    try:
        import hpacellseg  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="HPA-Cell-Segmentation/archive/master.zip"):
            get_segmenter("hpacellseg", nuclei_model="n.pth", cell_model="c.pth")
    else:
        pytest.skip("hpacellseg is installed here")
    assert "pip install" in INSTALL_HINT


def test_hpacellseg_missing_weights_say_where_they_go(tmp_path: Path) -> None:
    nuclei = tmp_path / "nuclei_model.pth"
    nuclei.write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="--cell_model file not found") as error:
        check_weights(nuclei, tmp_path / "missing.pth")
    assert "MULTI_CHANNEL_CELL_MODEL_URL" in str(error.value)
    with pytest.raises(FileNotFoundError, match="--nuclei_model is not given"):
        check_weights(None, nuclei)


def test_precomputed_png_and_npz_masks(tmp_path: Path) -> None:
    rgby, _ = draw_cells(256, 256)
    cells = np.zeros((256, 256), np.uint8)
    cells[10:60, 10:60], cells[100:200, 100:200] = 4, 9  # second cell has no nucleus folder entry
    nuclei = np.zeros((256, 256), np.uint8)
    nuclei[20:40, 20:40] = 1
    (tmp_path / "cells").mkdir()
    (tmp_path / "nuclei").mkdir()
    cv2.imwrite(str(tmp_path / "cells" / "a_predictedmask.png"), cells)
    np.savez_compressed(tmp_path / "nuclei" / "a.npz", arr_0=nuclei)
    nuclei_mask, cell_mask = segment_image(
        rgby, "precomputed", image_id="a", cell_dir=tmp_path / "cells", nuclei_dir=tmp_path / "nuclei"
    )
    assert_consistent(nuclei_mask, cell_mask, (256, 256))
    assert int(cell_mask.max()) == 1 and (cell_mask == 1).sum() == 50 * 50
    with pytest.raises(FileNotFoundError, match="image b: no mask file"):
        segment_image(rgby, "precomputed", image_id="b", cell_dir=tmp_path / "cells")


# ---- mask cache ----


def test_corrupt_cache_file_is_detected_and_recomputed(tmp_path: Path) -> None:
    rgby, count = draw_cells(256, 256)
    cache = MaskCache(tmp_path, "classical", {})
    first = cache.get("x", lambda _: rgby)
    path = mask_path(tmp_path, "x")
    path.write_bytes(path.read_bytes()[:100])  # truncate
    with pytest.raises(CorruptMaskFileError):
        read_masks(path)
    calls = []
    again = cache.get("x", lambda image_id: calls.append(image_id) or rgby)
    assert calls == ["x"] and np.array_equal(first[1], again[1]) and int(again[1].max()) == count
    assert np.array_equal(read_masks(path)[1], first[1])
    assert cache.get("x", lambda _: pytest.fail("cached masks must not be recomputed"))[1].max() == count


def test_manifest_mismatch_is_refused(tmp_path: Path) -> None:
    MaskCache(tmp_path, "classical", {})
    assert json.loads((tmp_path / "manifest.json").read_text())["backend"] == "classical"
    with pytest.raises(MaskCacheMismatchError, match="nucleus_diameter"):
        MaskCache(tmp_path, "classical", {"nucleus_diameter": 40.0})


def test_write_read_roundtrip(tmp_path: Path) -> None:
    nuclei = np.arange(12, dtype=np.uint16).reshape(3, 4)
    write_masks(tmp_path / "a.npz", nuclei, nuclei * 2)
    loaded = read_masks(tmp_path / "a.npz")
    assert np.array_equal(loaded[0], nuclei) and np.array_equal(loaded[1], nuclei * 2)
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]


def test_stale_temporary_files_are_removed_but_fresh_ones_kept(tmp_path: Path) -> None:
    stale, fresh = tmp_path / ".a.x1.tmp.npz", tmp_path / ".b.x2.tmp.npz"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    assert remove_stale_temporaries(tmp_path) == 1
    assert not stale.exists() and fresh.exists()


def test_shards_cover_every_id_exactly_once() -> None:
    ids = [f"id{i:03d}" for i in range(37)][::-1]
    shards = [shard_ids(ids, 4, index) for index in range(4)]
    flat = [image_id for shard in shards for image_id in shard]
    assert sorted(flat) == sorted(ids) and len(flat) == len(set(flat))
    with pytest.raises(ValueError, match="shard_index"):
        shard_ids(ids, 4, 4)


def test_fill_two_workers_and_rerun_reuses(tmp_path: Path) -> None:
    for index in range(3):
        write_image(tmp_path / "data" / "train", f"img{index}", draw_cells(256, 320, seed=index)[0])
    ids = ["img0", "img1", "img2"]
    report = fill_mask_cache(tmp_path / "data", "train", ids, tmp_path / "masks", workers=2)
    assert (report.computed, report.cached, report.failed) == (3, 0, {})
    report = fill_mask_cache(tmp_path / "data", "train", ids + ["missing"], tmp_path / "masks", workers=1)
    assert (report.computed, report.cached) == (0, 3) and list(report.failed) == ["missing"]


def test_make_cell_masks_cli_smoke(tmp_path: Path) -> None:
    for index in range(2):
        write_image(tmp_path / "data" / "test", f"img{index}", draw_cells(256, 256, seed=index)[0])
    command = [sys.executable, str(ROOT / "make_cell_masks.py"), "--data_dir", str(tmp_path / "data"), "--split", "test",
               "--mask_dir", str(tmp_path / "masks"), "--workers", "1", "--num_shards", "2", "--shard_index", "1"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "1 computed" in result.stdout
    assert [p.name for p in final_files(tmp_path / "masks")] == ["img1.npz"]


def test_killed_fill_leaves_whole_files_and_rerun_completes(tmp_path: Path) -> None:
    num_images = 40
    for index in range(num_images):
        write_image(tmp_path / "data" / "train", f"img{index:02d}", draw_cells(1024, 1024, seed=index)[0])
    mask_dir = tmp_path / "masks"
    command = [sys.executable, str(ROOT / "make_cell_masks.py"), "--data_dir", str(tmp_path / "data"),
               "--mask_dir", str(mask_dir), "--workers", "1"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not final_files(mask_dir) and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    done = final_files(mask_dir)
    assert 0 < len(done) < num_images, "the run must be killed in the middle"
    for path in done:
        read_masks(path)  # whole files only
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"{num_images - len(done)} computed" in result.stdout and f"{len(done)} already cached" in result.stdout
    assert len(final_files(mask_dir)) == num_images
