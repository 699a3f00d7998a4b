"""Tests of src/cell_masks/hpacellseg_backend.py: weight loading, and the real hpacellseg package end to end.

The end-to-end tests take hpacellseg and pytorch_zoo from the source archives in ``../shared/vendor/``
(``HPA_SHARED_DIR`` overrides ``../shared``), extracted into a temporary folder and put on ``sys.path``
for this module's in-process tests (forgotten afterwards) or on the PYTHONPATH of subprocesses: never
installed into the test environment. The networks are DPN-UNets of the real architecture with random
weights, pickled as the published files are (``DataParallel(DPNUnet)``). Random weights give meaningless
masks: these tests check the contract (size, dtype, nucleus k inside cell k, manifest, cache reuse), not
the quality. One non-square real crop runs by default; whole images and the CLIs run under ``-m slow``.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import cv2
import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from nbclient import NotebookClient
from skimage import transform

from src.cell_masks.cache import fill_mask_cache, mask_path, read_masks
from src.cell_masks.hpacellseg_backend import (
    TRUST_NOTE,
    HpaCellSegSegmenter,
    _adapt_rescale,
    build_dpn_unet,
    check_device,
    find_import_roots,
    load_network,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("HPA_SHARED_DIR", ROOT.parent / "shared"))  # beside the clone, as in CI
VENDOR_DIR = SHARED_DIR / "vendor"
ARCHIVES = (VENDOR_DIR / "hpacellseg-7b6dbc6.tar.gz", VENDOR_DIR / "pytorch_zoo-e7f30cd.tar.gz")
HPA_DIR = SHARED_DIR / "data" / "hpa_kaggle_samples"
HPA_ID = "000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0"
CHANNELS = ("red", "green", "blue", "yellow")


def assert_mask_contract(nuclei_mask: np.ndarray, cell_mask: np.ndarray, shape: tuple[int, int]) -> None:
    assert nuclei_mask.shape == cell_mask.shape == shape
    assert nuclei_mask.dtype == cell_mask.dtype == np.uint16
    inside = nuclei_mask > 0
    assert np.array_equal(nuclei_mask[inside], cell_mask[inside]), "nucleus k must lie in cell k"
    ids = np.unique(cell_mask)
    assert np.array_equal(ids, np.arange(len(ids))), "cells are numbered 1..K"
    assert np.array_equal(np.unique(nuclei_mask), ids), "every cell has its nucleus"


def write_real_image(folder: Path, image_id: str, rows: slice, cols: slice) -> tuple[int, int]:
    """Write a crop of the real HPA sample in the Kaggle layout; returns its (H, W)."""
    folder.mkdir(parents=True, exist_ok=True)
    for channel in CHANNELS:
        plane = cv2.imread(str(HPA_DIR / f"{HPA_ID}_{channel}.png"), cv2.IMREAD_UNCHANGED)[rows, cols]
        cv2.imwrite(str(folder / f"{image_id}_{channel}.png"), plane)
    return plane.shape


def save_module(module: torch.nn.Module, path: Path) -> Path:
    torch.save(module, path)
    return path


# ---- weight loading (no vendor package needed) ----


def test_pickled_data_parallel_loads_despite_weights_only_default(tmp_path: Path) -> None:
    path = save_module(torch.nn.DataParallel(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3))).train(), tmp_path / "m.pth")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        torch.load(path)  # what hpacellseg's own loading does under torch >= 2.6
    network = load_network(path, "--nuclei_model")
    assert isinstance(network, torch.nn.Sequential), "the DataParallel wrapper is removed"
    assert not network.training
    assert network(torch.zeros(1, 3, 8, 8)).shape == (1, 3, 6, 6)


def test_file_that_is_not_a_network_is_refused_naming_it(tmp_path: Path) -> None:
    garbage = tmp_path / "nuclei.pth"
    garbage.write_bytes(b"<html>not found</html>")
    with pytest.raises(ValueError, match=f"--nuclei_model {garbage}: not a torch file") as error:
        load_network(garbage, "--nuclei_model")
    assert TRUST_NOTE in str(error.value)
    tensor = save_module(torch.zeros(3), tmp_path / "cell.pth")
    with pytest.raises(ValueError, match=f"--cell_model {tensor}: holds a Tensor, not a network"):
        load_network(tensor, "--cell_model")


def test_network_with_wrong_input_channels_is_refused(tmp_path: Path) -> None:
    network = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3), torch.nn.Conv2d(8, 3, 1))
    path = save_module(network, tmp_path / "cell.pth")
    with pytest.raises(ValueError, match=f"--cell_model {path}: the network's first convolution takes 4 input"):
        load_network(path, "--cell_model")


def test_network_without_three_class_maps_is_refused(tmp_path: Path) -> None:
    path = save_module(torch.nn.Conv2d(3, 1, 1), tmp_path / "nuclei.pth")
    with pytest.raises(ValueError, match=r"gives \(1, 1, 64, 64\); hpacellseg needs \(1, 3, h, w\)"):
        load_network(path, "--nuclei_model")


def test_missing_model_package_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "zoo_for_test.py").write_text("import torch\nclass Net(torch.nn.Conv2d):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import zoo_for_test

    path = save_module(zoo_for_test.Net(3, 3, 1), tmp_path / "nuclei.pth")
    monkeypatch.delitem(sys.modules, "zoo_for_test")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    with pytest.raises(ImportError, match="needs module 'zoo_for_test'.*pytorch_zoo importable"):
        load_network(path, "--nuclei_model")


def test_unusable_device_is_refused() -> None:
    with pytest.raises(ValueError, match="--device 'mps'"):
        check_device("mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            check_device("cuda:0")


def test_rescale_adapter_accepts_hpacellseg_multichannel_argument() -> None:
    module = type("CellSegmentatorModule", (), {"transform": transform})
    _adapt_rescale(module)
    image = np.zeros((40, 60, 3), np.uint8)
    assert module.transform.rescale(image, 0.25, multichannel=True).shape == (10, 15, 3)
    assert module.transform.resize is transform.resize, "other functions pass through"
    _adapt_rescale(module)  # idempotent
    assert module.transform.rescale(image[..., 0], 0.5).shape == (20, 30)


def test_import_roots_from_a_zip_archive_and_an_unpacked_folder(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "HPA-Cell-Segmentation-master.zip", "w") as archive:
        archive.writestr("HPA-Cell-Segmentation-master/hpacellseg/cellsegmentator.py", "")
    (tmp_path / "kaggle" / "pytorch_zoo-master" / "pytorch_zoo").mkdir(parents=True)
    (tmp_path / "kaggle" / "pytorch_zoo-master" / "pytorch_zoo" / "unet.py").write_text("")
    sources = [tmp_path / "HPA-Cell-Segmentation-master.zip", tmp_path / "kaggle"]
    roots = find_import_roots(sources, tmp_path / "vendor")
    assert roots == [
        tmp_path / "vendor" / "HPA-Cell-Segmentation-master" / "HPA-Cell-Segmentation-master",
        tmp_path / "kaggle" / "pytorch_zoo-master",
    ]
    assert find_import_roots(sources, tmp_path / "vendor") == roots, "a finished extraction is reused"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty holds neither hpacellseg nor pytorch_zoo"):
        find_import_roots([tmp_path / "empty"], tmp_path / "vendor")
    (tmp_path / "weights.pth").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="weights.pth is neither a folder nor a .tar.gz/.zip archive"):
        find_import_roots([tmp_path / "weights.pth"], tmp_path / "vendor")
    with pytest.raises(FileNotFoundError, match="missing.tar.gz not found"):
        find_import_roots([tmp_path / "missing.tar.gz"], tmp_path / "vendor")


# ---- the real package from ../shared/vendor ----


@pytest.fixture(scope="module")
def vendor_roots(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Import roots of hpacellseg and pytorch_zoo, extracted from the archives into a temporary folder."""
    missing = [str(path) for path in ARCHIVES if not path.is_file()]
    if missing:
        pytest.skip(f"hpacellseg source archives not available: {missing}")
    if not (HPA_DIR / f"{HPA_ID}_blue.png").is_file():
        pytest.skip(f"real HPA sample not available in {HPA_DIR}")
    return find_import_roots(ARCHIVES, tmp_path_factory.mktemp("vendor"))


@pytest.fixture(scope="module")
def vendor_env(vendor_roots: list[Path]) -> dict[str, str]:
    """Environment of a subprocess that imports hpacellseg and pytorch_zoo from the extracted archives."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [ROOT, *vendor_roots]))}


@pytest.fixture(scope="module")
def vendor_on_path(vendor_roots: list[Path]):
    """hpacellseg and pytorch_zoo importable in this process for the module's tests, forgotten afterwards."""
    patch = pytest.MonkeyPatch()
    for root in reversed(vendor_roots):
        patch.syspath_prepend(str(root))
    yield vendor_roots
    patch.undo()
    for name in [n for n in sys.modules if n.split(".")[0] in ("hpacellseg", "pytorch_zoo")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def dpn_unet_files(vendor_on_path, tmp_path_factory: pytest.TempPathFactory):
    """(nuclei_model, cell_model): random DPN-UNets pickled as DataParallel, as the published files (550 MB each)."""
    folder = tmp_path_factory.mktemp("hpacellseg_weights")
    paths = (folder / "nuclei_model.pth", folder / "cell_model.pth")
    for seed, path in enumerate(paths):
        torch.manual_seed(seed)
        torch.save(torch.nn.DataParallel(build_dpn_unet()), path)
    yield paths
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def real_test_split(vendor_roots, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[int, int]]:
    """A Kaggle-layout data folder whose test split is one non-square crop of the real sample, and its (H, W)."""
    data_dir = tmp_path_factory.mktemp("real_test") / "data"
    shape = write_real_image(data_dir / "test", HPA_ID, slice(0, 1536), slice(None))
    pd.DataFrame(
        {"ID": [HPA_ID], "ImageWidth": [shape[1]], "ImageHeight": [shape[0]], "PredictionString": [""]}
    ).to_csv(data_dir / "sample_submission.csv", index=False)
    return data_dir, shape


def make_masks(vendor_env: dict[str, str], data_dir: Path, mask_dir: Path, weights: tuple[Path, Path]) -> str:
    """Run make_cell_masks.py with the hpacellseg backend on the test split; returns its output."""
    command = [sys.executable, "make_cell_masks.py", "--data_dir", str(data_dir), "--split", "test",
               "--mask_dir", str(mask_dir), "--backend", "hpacellseg", "--nuclei_model", str(weights[0]),
               "--cell_model", str(weights[1]), "--workers", "1"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=vendor_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def assert_manifest(mask_dir: Path, weights: tuple[Path, Path]) -> None:
    manifest = json.loads((mask_dir / "manifest.json").read_text())
    assert manifest == {
        "backend": "hpacellseg",
        "params": {
            "nuclei_model": str(weights[0].resolve()),
            "cell_model": str(weights[1].resolve()),
            "scale_factor": 0.25,
        },
    }


def test_archives_give_one_import_root_per_package(vendor_roots: list[Path]) -> None:
    assert (vendor_roots[0] / "hpacellseg" / "cellsegmentator.py").is_file()
    assert (vendor_roots[1] / "pytorch_zoo" / "unet.py").is_file()


def test_hpacellseg_fills_the_cache_for_a_non_square_real_crop(dpn_unet_files, tmp_path) -> None:
    shape = write_real_image(tmp_path / "data" / "test", "wide", slice(640, 896), slice(128, 512))
    assert shape == (256, 384)
    mask_dir = tmp_path / "masks"
    params = {"nuclei_model": dpn_unet_files[0], "cell_model": dpn_unet_files[1], "device": "cpu"}
    report = fill_mask_cache(tmp_path / "data", "test", ["wide"], mask_dir, "hpacellseg", params, workers=1)
    assert (report.computed, report.failed) == (1, {})
    nuclei_mask, cell_mask = read_masks(mask_path(mask_dir, "wide"))
    assert_mask_contract(nuclei_mask, cell_mask, shape)
    assert cell_mask.max() > 0, "these random networks find a cell in this crop (the contract check is not empty)"
    assert_manifest(mask_dir, dpn_unet_files)
    report = fill_mask_cache(tmp_path / "data", "test", ["wide"], mask_dir, "hpacellseg", params, workers=1)
    assert (report.computed, report.cached) == (0, 1)


def test_bad_weight_file_fails_every_image_naming_it_without_reloading(vendor_on_path, tmp_path, monkeypatch) -> None:
    nuclei, cell = tmp_path / "nuclei.pth", tmp_path / "cell.pth"
    nuclei.write_bytes(b"<html>not found</html>")
    cell.write_bytes(b"<html>not found</html>")
    segmenter = HpaCellSegSegmenter(nuclei, cell)
    loads, real_load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda path, **kwargs: loads.append(path) or real_load(path, **kwargs))
    for _ in range(2):
        with pytest.raises(ValueError, match=f"--nuclei_model {nuclei.resolve()}: not a torch file"):
            segmenter(np.zeros((64, 64, 4), np.uint8), "x")
    assert loads == [str(nuclei.resolve())]


@pytest.mark.slow
def test_make_cell_masks_hpacellseg_on_a_whole_real_image(vendor_env, dpn_unet_files, tmp_path) -> None:
    shape = write_real_image(tmp_path / "data" / "test", HPA_ID, slice(None), slice(None))
    mask_dir = tmp_path / "masks"
    assert "1 computed" in make_masks(vendor_env, tmp_path / "data", mask_dir, dpn_unet_files)
    nuclei_mask, cell_mask = read_masks(mask_path(mask_dir, HPA_ID))
    assert_mask_contract(nuclei_mask, cell_mask, shape)
    assert shape == (2048, 2048) and cell_mask.max() > 0, "these random networks find cells in this image"
    assert_manifest(mask_dir, dpn_unet_files)
    assert "1 already cached" in make_masks(vendor_env, tmp_path / "data", mask_dir, dpn_unet_files)


@pytest.mark.slow
def test_run_cam_infer_makes_hpacellseg_masks_on_demand(
    vendor_env, dpn_unet_files, real_test_split, tiny_checkpoint, tmp_path
) -> None:
    data_dir, shape = real_test_split
    mask_dir, sub_path = tmp_path / "masks", tmp_path / "submission.csv"
    mask_params = f"{{nuclei_model: {dpn_unet_files[0]}, cell_model: {dpn_unet_files[1]}, device: cpu}}"
    command = [sys.executable, "run_cam_infer.py", "--sub_path", str(sub_path), "--data_dir", str(data_dir),
               "--ckpt_paths", f"[[both, 1.0, {tiny_checkpoint}]]", "--mask_backend", "hpacellseg",
               "--mask_dir", str(mask_dir), "--mask_params", mask_params, "--num_workers", "0", "--device", "cpu"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=vendor_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert_mask_contract(*read_masks(mask_path(mask_dir, HPA_ID)), shape)
    assert_manifest(mask_dir, dpn_unet_files)
    assert pd.read_csv(sub_path)["ID"].tolist() == [HPA_ID]
    assert "1 already cached" in make_masks(vendor_env, data_dir, mask_dir, dpn_unet_files), "one cache, both stages"


@pytest.mark.slow
def test_notebook_hpacellseg_path_from_the_archives(dpn_unet_files, real_test_split, tiny_checkpoint, tmp_path) -> None:
    data_dir, shape = real_test_split
    settings = {
        "HPA_REPO_DIR": str(ROOT),
        "HPA_DATA_DIR": str(data_dir),
        "HPA_WORK_DIR": str(tmp_path),
        "HPA_CKPT_PATHS": f"[[both, 1.0, {tiny_checkpoint}]]",
        "HPA_MASK_BACKEND": "hpacellseg",
        "HPA_MASK_PARAMS": f"{{nuclei_model: {dpn_unet_files[0]}, cell_model: {dpn_unet_files[1]}, device: cpu}}",
        "HPA_HPACELLSEG_SOURCES": json.dumps([str(path) for path in ARCHIVES]),
        "HPA_NUM_WORKERS": "1",
    }
    notebook = nbformat.read(ROOT / "notebooks" / "kaggle_inference.ipynb", as_version=4)
    patch = pytest.MonkeyPatch()
    for key, value in settings.items():
        patch.setenv(key, value)
    patch.delenv("PYTHONPATH", raising=False)  # the notebook itself makes the packages importable
    try:
        NotebookClient(
            notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        ).execute()
    finally:
        patch.undo()
    assert_mask_contract(*read_masks(mask_path(tmp_path / "masks_hpacellseg", HPA_ID)), shape)
    assert pd.read_csv(tmp_path / "submission.csv")["ID"].tolist() == [HPA_ID]


@pytest.mark.slow
def test_state_dict_weights_load_into_the_dpn_unet(dpn_unet_files, tmp_path) -> None:
    network = load_network(dpn_unet_files[0], "--nuclei_model")
    state_file = tmp_path / "nuclei_state.pth"
    torch.save(torch.nn.DataParallel(network).state_dict(), state_file)  # keys with the 'module.' prefix
    again = load_network(state_file, "--nuclei_model")
    assert type(again).__name__ == "DPNUnet"
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(network(image), again(image))


@pytest.mark.slow
def test_readme_pip_recipe_installs_both_packages(vendor_roots, tmp_path) -> None:
    pytest.importorskip("setuptools", reason="an offline pip build (--no-build-isolation) needs setuptools")
    target, source = tmp_path / "site", tmp_path / "src"
    pip = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--target",
        str(target),
    ]
    with tarfile.open(ARCHIVES[1]) as archive:
        archive.extractall(source, filter="data")
    setup_py = source / "pytorch_zoo" / "setup.py"
    setup_py.write_text("import setuptools\n" + setup_py.read_text())  # the README's sed line
    for package in (ARCHIVES[0], source / "pytorch_zoo"):
        result = subprocess.run([*pip, str(package)], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-4000:]
    check = "import hpacellseg.cellsegmentator, pytorch_zoo.unet; print(hpacellseg.__version__)"
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.split()[-1] == "0.1.8"  # after pytorch_zoo's own "please compile abn"
