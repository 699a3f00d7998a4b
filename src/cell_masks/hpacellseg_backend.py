"""The HPA cell segmentator (two DPN-UNets, package ``hpacellseg``) as a backend.

Neither ``hpacellseg`` nor its model package ``pytorch_zoo`` is on the package index, and
``pip install`` of the hpacellseg archive fails today (it pulls pytorch_zoo, whose setup.py
does not import setuptools). Install hpacellseg with ``pip install --no-deps`` and make
pytorch_zoo importable (README "Installation"; offline: ``add_import_roots``).

The published weights are pickled ``DataParallel(DPNUnet)`` objects. torch >= 2.6 refuses
them under its default ``weights_only=True``, so this module loads both files itself with
``weights_only=False`` and hands the networks to ``CellSegmentator``. Unpickling runs code
stored in the file: use only weight files from a source you trust (the HPA Zenodo record).
A state dict of the same network is accepted too (it needs pytorch_zoo to build the network).

The weight paths must exist: CellSegmentator would otherwise try to download them, which this
project never does at run time.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
import shutil
import sys
import tarfile
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from src.cell_masks.classical import relabel_consistent

logger = logging.getLogger(__name__)

GITHUB_ARCHIVE = "https://github.com/CellProfiling/HPA-Cell-Segmentation/archive/master.zip"
INSTALL_HINT = (
    f"pip install --no-deps {GITHUB_ARCHIVE} (or the archive hpacellseg-7b6dbc6.tar.gz), and make pytorch_zoo "
    "importable as README 'Installation' shows (its setup.py needs 'import setuptools' added)"
)
WEIGHTS_HINT = (
    "download the nuclei model (NUCLEI_MODEL_URL) and the 3-channel cell model (MULTI_CHANNEL_CELL_MODEL_URL) "
    "listed in hpacellseg/constants.py on a machine with internet, copy them here (e.g. "
    "models/hpacellseg/nuclei_model.pth and models/hpacellseg/cell_model.pth) and pass them as "
    "--nuclei_model and --cell_model"
)
TRUST_NOTE = (
    "these .pth files are pickled Python objects and loading them runs code stored in them: "
    "use only files from a source you trust (the HPA Zenodo record)"
)
# The module inside each package that marks the folder to put on sys.path (see add_import_roots).
PACKAGE_MARKERS = {"hpacellseg": "cellsegmentator.py", "pytorch_zoo": "unet.py"}
INPUT_CHANNELS = 3  # the nuclei model sees the blue channel three times; the cell model red, yellow, blue


def import_hpacellseg() -> tuple[Any, Any]:
    """The ``CellSegmentator`` class and ``label_cell`` function of the hpacellseg package.

    Raises:
        ImportError: the package is not installed; the message says how to install it.
    """
    try:
        segmentator_module = importlib.import_module("hpacellseg.cellsegmentator")
        utils_module = importlib.import_module("hpacellseg.utils")
    except ImportError as error:
        raise ImportError(
            f"backend 'hpacellseg' needs the hpacellseg package, which is not importable ({error}). "
            f"Install it with: {INSTALL_HINT}  (or use --backend classical, which needs no weights)"
        ) from error
    _adapt_rescale(segmentator_module)
    return segmentator_module.CellSegmentator, utils_module.label_cell


def _adapt_rescale(segmentator_module: Any) -> None:
    """Let hpacellseg 0.1.8 call ``transform.rescale(..., multichannel=True)`` on current scikit-image.

    scikit-image replaced ``multichannel`` by ``channel_axis`` (0.19) and no longer accepts the old name
    (0.26 is pinned here). The package's ``transform`` name is pointed at a wrapper that translates it.
    """
    transform = segmentator_module.transform
    if "multichannel" in inspect.signature(transform.rescale).parameters:
        return
    segmentator_module.transform = _RescaleCompat(transform)


class _RescaleCompat:
    """``skimage.transform`` whose ``rescale`` also accepts ``multichannel``."""

    def __init__(self, transform: Any) -> None:
        self._transform = transform

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transform, name)

    def rescale(self, image: np.ndarray, scale: float, multichannel: bool = False, **kwargs: Any) -> np.ndarray:
        return self._transform.rescale(image, scale, channel_axis=-1 if multichannel else None, **kwargs)


def add_import_roots(sources: Sequence[str | os.PathLike], extract_dir: str | os.PathLike) -> list[Path]:
    """Make hpacellseg and pytorch_zoo importable from their source archives, without pip (Kaggle offline).

    Each source is a ``.tar.gz``/``.tgz``/``.zip`` archive, extracted once under ``extract_dir``, or a
    folder (an archive Kaggle already unpacked). The folder holding ``hpacellseg/cellsegmentator.py`` or
    ``pytorch_zoo/unet.py`` is put first on ``sys.path`` (worker processes started with spawn inherit it).

    Returns:
        The folders added to ``sys.path``, one per package found.

    Raises:
        FileNotFoundError: a source is missing, or holds neither package.
    """
    roots = find_import_roots(sources, extract_dir)
    for root in reversed(roots):
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    return roots


def find_import_roots(sources: Sequence[str | os.PathLike], extract_dir: str | os.PathLike) -> list[Path]:
    """The folders to put on ``sys.path`` for the packages in ``sources`` (see ``add_import_roots``)."""
    roots: list[Path] = []
    for source in (Path(path).resolve() for path in sources):
        if source.is_dir():
            folder = source
        elif source.is_file():
            folder = _extract(source, Path(extract_dir).resolve())
        else:
            raise FileNotFoundError(f"hpacellseg sources: {source} not found")
        found = [
            min(markers, key=lambda path: len(path.parts)).parent.parent
            for package, module in PACKAGE_MARKERS.items()
            if (markers := list(folder.glob(f"**/{package}/{module}")))
        ]
        if not found:
            raise FileNotFoundError(f"hpacellseg sources: {source} holds neither {' nor '.join(PACKAGE_MARKERS)}")
        roots.extend(root for root in found if root not in roots)
    return roots


def _extract(archive: Path, extract_dir: Path) -> Path:
    """Unpack one archive into ``extract_dir/<archive name>`` (once; a finished copy is reused)."""
    name = archive.name.removesuffix(".tar.gz").removesuffix(".tgz").removesuffix(".zip")
    target = extract_dir / name
    done = target / ".extracted"
    if done.is_file():
        return target
    is_zip = zipfile.is_zipfile(archive)
    if not is_zip and not tarfile.is_tarfile(archive):
        raise FileNotFoundError(f"hpacellseg sources: {archive} is neither a folder nor a .tar.gz/.zip archive")
    shutil.rmtree(target, ignore_errors=True)  # a partial extraction of an interrupted run
    target.mkdir(parents=True)
    if is_zip:
        with zipfile.ZipFile(archive) as handle:
            handle.extractall(target)
    else:
        with tarfile.open(archive) as handle:
            handle.extractall(target, filter="data")
    done.touch()
    return target


def check_weights(nuclei_model: str | os.PathLike | None, cell_model: str | os.PathLike | None) -> tuple[Path, Path]:
    """Both weight files as existing paths.

    Raises:
        FileNotFoundError: a path is missing or not a file; the message says where the weights go.
    """
    paths = {"--nuclei_model": nuclei_model, "--cell_model": cell_model}
    problems = [
        f"{flag} {'is not given' if path is None else f'file not found: {path}'}"
        for flag, path in paths.items()
        if path is None or not Path(path).is_file()
    ]
    if problems:
        raise FileNotFoundError(f"backend 'hpacellseg': {'; '.join(problems)}. To get the weights: {WEIGHTS_HINT}")
    return Path(nuclei_model), Path(cell_model)


def check_device(device: str) -> None:
    """Refuse a device hpacellseg cannot use here (it would fall back to the CPU with a mere message).

    Raises:
        ValueError: not 'cpu', 'cuda' or 'cuda:N', or CUDA asked for on a machine without it.
    """
    import torch

    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"backend 'hpacellseg': --device {device!r} is not 'cpu', 'cuda' or 'cuda:N'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"backend 'hpacellseg': --device {device} but CUDA is not available here; use --device cpu")


def build_dpn_unet(input_channels: int = INPUT_CHANNELS, classes: int = 3) -> Any:
    """pytorch_zoo's ``DPNUnet`` (dpn92 encoder), the architecture of both hpacellseg networks, randomly initialised.

    Its constructor downloads ImageNet weights for the encoder; that is skipped here.

    Returns:
        The network, (N, input_channels, H, W) -> (N, classes, H, W) logits.

    Raises:
        ImportError: pytorch_zoo is not importable.
    """
    try:
        abstract_model = importlib.import_module("pytorch_zoo.abstract_model")
        dpn = importlib.import_module("pytorch_zoo.dpn")
        unet = importlib.import_module("pytorch_zoo.unet")
    except ImportError as error:
        raise ImportError(
            f"the DPN-UNet needs pytorch_zoo, which is not importable ({error}): {INSTALL_HINT}"
        ) from error
    params = abstract_model.encoder_params["dpn92"]
    saved = dict(params)
    params.update(init_op=functools.partial(dpn.dpn92, pretrained=None), url=None)
    try:
        return unet.DPNUnet(classes, input_channels, "dpn92")
    finally:
        params.clear()
        params.update(saved)


def load_network(path: str | os.PathLike, flag: str, device: str = "cpu") -> Any:
    """One hpacellseg network from a pickled module (as published) or a state dict, ready for inference.

    The file is unpickled with ``torch.load(weights_only=False)``: it runs code stored in the file, so it
    must come from a trusted source. A ``DataParallel`` wrapper is removed (one image per forward pass;
    the wrapper refuses to run on the CPU).

    Args:
        path: the .pth file.
        flag: the command-line argument that named it (for messages), e.g. '--nuclei_model'.
        device: torch device the tensors are mapped to.

    Returns:
        The network in eval mode on ``device``, (1, 3, H, W) -> (1, 3, H, W).

    Raises:
        ImportError: the file refers to a module that is not importable (pytorch_zoo).
        ValueError: the file is not a pickled network or state dict, or the network does not take 3 channels.
    """
    import torch

    try:
        loaded = torch.load(path, weights_only=False, map_location=device)
    except ModuleNotFoundError as error:
        raise ImportError(
            f"{flag} {path}: the pickled network needs module {error.name!r}, which is not importable: {INSTALL_HINT}"
        ) from error
    except Exception as error:  # unpickling fails with many exception types
        raise ValueError(
            f"{flag} {path}: not a torch file holding a network ({type(error).__name__}: {error}); "
            f"expected hpacellseg's pickled DPN-UNet. Note: {TRUST_NOTE}"
        ) from error
    if isinstance(loaded, dict):
        loaded = _network_from_state_dict(loaded, path, flag)
    if isinstance(loaded, torch.nn.DataParallel):
        loaded = loaded.module
    if not isinstance(loaded, torch.nn.Module):
        raise ValueError(
            f"{flag} {path}: holds a {type(loaded).__name__}, not a network (torch.nn.Module) or its state dict"
        )
    network = loaded.to(device).eval()
    _check_input_and_output(network, path, flag, device)
    return network


def _check_input_and_output(network: Any, path: str | os.PathLike, flag: str, device: str) -> None:
    """Run the network once on a (1, 3, 64, 64) zero image: it must take 3 channels and give >= 3 class maps.

    Raises:
        ValueError: the first convolution takes another number of channels, the network fails, or its
            output is not (1, C >= 3, h, w).
    """
    import torch

    called: list[torch.nn.Conv2d] = []
    hooks = [
        module.register_forward_pre_hook(lambda conv, _inputs: called.append(conv))
        for module in network.modules()
        if isinstance(module, torch.nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            output = network(torch.zeros(1, INPUT_CHANNELS, 64, 64, device=device))
    except RuntimeError as error:
        if called and called[0].in_channels != INPUT_CHANNELS:
            raise ValueError(
                f"{flag} {path}: the network's first convolution takes {called[0].in_channels} input channel(s); "
                f"hpacellseg's nuclei and cell models take {INPUT_CHANNELS}"
            ) from error
        raise ValueError(f"{flag} {path}: the network fails on a (1, 3, 64, 64) image: {error}") from error
    finally:
        for hook in hooks:
            hook.remove()
    if not isinstance(output, torch.Tensor) or output.ndim != 4 or output.shape[1] < 3:
        found = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(
            f"{flag} {path}: the network gives {found}; hpacellseg needs (1, 3, h, w) class scores "
            "(background, border, inside)"
        )


def _network_from_state_dict(state: dict, path: str | os.PathLike, flag: str) -> Any:
    """A DPN-UNet holding a state dict (keys with or without DataParallel's 'module.' prefix)."""
    state = {key.removeprefix("module."): value for key, value in state.items()}
    network = build_dpn_unet()
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{flag} {path}: a state dict that does not fit pytorch_zoo's DPNUnet: {error}") from error
    return network


class HpaCellSegSegmenter:
    """Nucleus and cell labels from hpacellseg (scale 0.25, padding, 3-channel cell model).

    The package, weight paths and device are checked at construction; the networks are loaded on
    first use, so the object can be sent to worker processes cheaply.
    """

    name = "hpacellseg"

    def __init__(
        self,
        nuclei_model: str | os.PathLike | None = None,
        cell_model: str | os.PathLike | None = None,
        device: str = "cpu",
        scale_factor: float = 0.25,
    ) -> None:
        import_hpacellseg()
        nuclei_path, cell_path = check_weights(nuclei_model, cell_model)
        check_device(device)
        self.params = {
            "nuclei_model": str(nuclei_path.resolve()),
            "cell_model": str(cell_path.resolve()),
            "scale_factor": float(scale_factor),
        }
        self.device = device
        self._segmentator = None
        self._label_cell = None
        self._load_error: Exception | None = None

    def _load(self) -> None:
        """Load both networks once; a failure is kept and raised again for every later image."""
        if self._load_error is not None:
            raise self._load_error
        try:
            self._load_networks()
        except (ImportError, ValueError) as error:
            self._load_error = error
            raise

    def _load_networks(self) -> None:
        cell_segmentator, label_cell = import_hpacellseg()
        nuclei_net = load_network(self.params["nuclei_model"], "--nuclei_model", self.device)
        cell_net = load_network(self.params["cell_model"], "--cell_model", self.device)
        self._segmentator = cell_segmentator(
            nuclei_net,
            cell_net,
            scale_factor=self.params["scale_factor"],
            device=self.device,
            padding=True,
            multi_channel_model=True,
        )
        self._label_cell = label_cell

    def __call__(self, rgby: np.ndarray, image_id: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Segment one (H, W, 4) RGBY uint8 image; returns (nuclei_mask, cell_mask), (H, W) uint16."""
        if self._segmentator is None:
            self._load()
        red, blue, yellow = rgby[..., 0], rgby[..., 2], rgby[..., 3]
        height, width = rgby.shape[:2]
        with warnings.catch_warnings():
            # hpacellseg 0.1.8 calls scikit-image functions by deprecated argument names on every image.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", "Only one label was provided", UserWarning)
            nuclei_pred = _fit(self._segmentator.pred_nuclei([blue])[0], height, width, image_id)
            cell_pred = _fit(self._segmentator.pred_cells([[red], [yellow], [blue]])[0], height, width, image_id)
            nuclei_mask, cell_mask = self._label_cell(nuclei_pred, cell_pred)
        cells = cell_mask.astype(np.int64)
        return relabel_consistent(np.where(nuclei_mask > 0, cells, 0), cells)


def _fit(prediction: np.ndarray, height: int, width: int, image_id: str | None) -> np.ndarray:
    """A (h, w, 3) uint8 network output at the image's (height, width).

    hpacellseg restores the size by giving cv2 (rows, cols) where it expects (width, height): a
    non-square image comes back (W, H). The output is resized before labelling, so the labels are
    drawn at the image's geometry.
    """
    if prediction.shape[:2] == (height, width):
        return prediction
    logger.debug("image %s: hpacellseg returned %s for %s; resizing", image_id, prediction.shape, (height, width))
    return cv2.resize(prediction, (width, height), interpolation=cv2.INTER_LINEAR)
