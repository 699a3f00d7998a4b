"""Reading trained runs: every checkpoint file is loaded here, and every error names the file.

A run of ``run_classification.py`` leaves ``lightning_logs/version_N/{hparams.yaml, checkpoints/*.ckpt}``; a
checkpoint is a Lightning dict with ``state_dict`` and ``hyper_parameters``.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytorch_lightning as pl
import torch
import yaml

EXPECTED = "a Lightning checkpoint written by run_classification.py (a dict with 'state_dict' and 'hyper_parameters')"
ModelT = TypeVar("ModelT", bound=pl.LightningModule)


def load_checkpoint_file(checkpoint_path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's dict, on CPU.

    Checkpoints are pickles (``weights_only=False``): load only files from a trusted source.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable torch checkpoint, or holds no ``state_dict``; names the file and
            what was expected.
    """
    checkpoint_path = Path(checkpoint_path)
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint_path}")
    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, OSError, ValueError) as error:
        raise ValueError(f"{checkpoint_path}: cannot be read as a checkpoint ({error}); expected {EXPECTED}") from None
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise ValueError(
            f"{checkpoint_path}: holds a {type(checkpoint).__name__} without 'state_dict'; expected {EXPECTED}"
        )
    return dict(checkpoint)


def read_checkpoint_hparams(checkpoint_path: str | os.PathLike) -> dict[str, Any]:
    """Hyperparameters of a run: its ``hparams.yaml`` beside ``checkpoints/`` when present, else the checkpoint's own.

    Raises:
        FileNotFoundError: the checkpoint does not exist.
        ValueError: neither source holds hyperparameters, or the file is not a checkpoint.
    """
    checkpoint_path = Path(checkpoint_path)
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint_path}")
    yaml_path = checkpoint_path.parent.parent / "hparams.yaml"
    if yaml_path.is_file():
        with open(yaml_path) as handle:
            hparams = yaml.safe_load(handle)
        if isinstance(hparams, dict) and hparams:
            return hparams
    hparams = load_checkpoint_file(checkpoint_path).get("hyper_parameters")
    if not hparams:
        raise ValueError(f"{checkpoint_path}: no hyperparameters in the checkpoint and no {yaml_path}")
    return dict(hparams)


def load_trained_pl_model(
    model_class: type[ModelT], checkpoint_path: str | os.PathLike, only_load_yaml: bool = False
) -> tuple[ModelT | None, dict[str, Any]]:
    """Load a trained run: (model in eval mode on CPU, or None with ``only_load_yaml``; hyperparameters dict).

    The hyperparameters come from the run's ``hparams.yaml`` (or the checkpoint); the model is
    rebuilt from the checkpoint's own hyperparameters and its weights loaded strictly.

    Raises:
        FileNotFoundError, ValueError: see :func:`load_checkpoint_file`; also weights that do not fit the network
            the hyperparameters describe, with the file named.
    """
    hparams = read_checkpoint_hparams(checkpoint_path)
    if only_load_yaml:
        return None, hparams
    checkpoint = load_checkpoint_file(checkpoint_path)
    saved = checkpoint.get("hyper_parameters")
    if not saved:
        raise ValueError(f"{checkpoint_path}: no 'hyper_parameters' in the checkpoint; expected {EXPECTED}")
    model = model_class(**dict(saved))
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as error:
        raise ValueError(f"{checkpoint_path}: weights do not fit the network of its hyperparameters: {error}") from None
    model.eval()
    return model, dict(model.hparams)


TRAINING_STATE = ("optimizer_states", "lr_schedulers", "loops", "callbacks")


def slim_checkpoint(checkpoint: Mapping[str, Any], half: bool = False) -> dict[str, Any]:
    """The checkpoint without its training state (optimiser, schedulers, loops, callbacks): enough to infer.

    With ``half`` the floating-point weights are stored as float16 (loading casts them back to the network's type).
    """
    slim = {key: value for key, value in checkpoint.items() if key not in TRAINING_STATE}
    if half:
        slim["state_dict"] = {
            name: tensor.half() if torch.is_floating_point(tensor) else tensor
            for name, tensor in checkpoint["state_dict"].items()
        }
    return slim


def split_checkpoint(checkpoint: Mapping[str, Any], max_bytes: int) -> list[dict[str, Any]]:
    """The checkpoint in parts of at most about ``max_bytes`` of weights each; :func:`join_checkpoint` undoes it.

    A checkpoint within ``max_bytes`` comes back whole, as the one item. Otherwise the first part holds everything
    but the weights; the weights are cut between tensors, so one tensor larger than ``max_bytes`` makes a part of
    its own.
    """
    groups: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in checkpoint["state_dict"].items():
        nbytes = tensor.numel() * tensor.element_size()
        if groups[-1] and size + nbytes > max_bytes:
            groups.append({})
            size = 0
        groups[-1][name] = tensor
        size += nbytes
    if len(groups) == 1:
        return [dict(checkpoint)]
    head = {key: value for key, value in checkpoint.items() if key != "state_dict"}
    return [
        {**(head if index == 0 else {}), "state_dict": group, "part": index, "parts": len(groups)}
        for index, group in enumerate(groups)
    ]


def join_checkpoint(parts: list[Mapping[str, Any]], dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """One checkpoint from the parts of :func:`split_checkpoint` (any order), floating weights cast to ``dtype``.

    Raises:
        ValueError: parts missing, repeated or from splits of different sizes.
    """
    numbers = sorted(part.get("part", -1) for part in parts)
    counts = {part.get("parts") for part in parts}
    if len(counts) != 1 or numbers != list(range(len(parts))) or counts != {len(parts)}:
        raise ValueError(
            f"parts {numbers} of splits into {sorted(map(str, counts))}: every part of one split is needed"
        )
    ordered = sorted(parts, key=lambda part: part["part"])
    joined = {key: value for key, value in ordered[0].items() if key not in ("part", "parts", "state_dict")}
    joined["state_dict"] = {
        name: tensor.to(dtype) if torch.is_floating_point(tensor) else tensor
        for part in ordered
        for name, tensor in part["state_dict"].items()
    }
    return joined
