"""A model zoo file: several trained runs (weights and hyperparameters) in one safetensors file, MICRA-Net style.

Tensors are stored as ``{member}/{state_dict key}``; the file's metadata ``manifest`` is JSON, one record per member
(name, hyperparameters, source checkpoint). A ``ckpt_paths`` entry names a member as ``ZOO.safetensors#member``;
:func:`resolve_zoo_member` unpacks it once into a run folder under the temporary directory (``hparams.yaml`` and
``checkpoints/{member}.ckpt``), so every reader of checkpoints works unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from src.data.atomic import write_text_atomic
from src.training.checkpoints import load_checkpoint_file

ZOO_SUFFIX = ".safetensors"
MEMBER_SEPARATOR = "#"


def write_zoo(out_path: str | os.PathLike, checkpoints: Sequence[str | os.PathLike], names: Sequence[str]) -> None:
    """Pack checkpoints (Lightning dicts with ``state_dict`` and ``hyper_parameters``) under ``names``."""
    if len(names) != len(checkpoints) or len(set(names)) != len(names):
        raise ValueError(f"need one distinct name per checkpoint, got names {list(names)} for {len(checkpoints)}")
    for name in names:
        if not name or "/" in name or MEMBER_SEPARATOR in name:
            raise ValueError(f"member name {name!r} must be non-empty without '/' or '{MEMBER_SEPARATOR}'")
    tensors, manifest = {}, []
    for name, path in zip(names, checkpoints):
        checkpoint = load_checkpoint_file(path)
        for key, value in checkpoint["state_dict"].items():
            tensors[f"{name}/{key}"] = value.detach().cpu().contiguous()
        hparams = json.loads(json.dumps(dict(checkpoint.get("hyper_parameters") or {}), default=str))
        manifest.append({"name": name, "source": str(path), "hyper_parameters": hparams})
    save_file(tensors, str(out_path), metadata={"manifest": json.dumps(manifest)})


def read_manifest(zoo_path: str | os.PathLike) -> list[dict]:
    """The member records of a zoo file; ValueError naming the file when it is not one."""
    zoo_path = Path(zoo_path)
    if not zoo_path.is_file():
        raise FileNotFoundError(f"model zoo not found: {zoo_path}")
    try:
        with safe_open(str(zoo_path), framework="pt") as handle:
            return json.loads((handle.metadata() or {})["manifest"])
    except Exception as error:
        raise ValueError(f"{zoo_path}: not a model zoo file ({type(error).__name__}: {error})") from None


def is_zoo_member(path: str) -> bool:
    return MEMBER_SEPARATOR in path and path.split(MEMBER_SEPARATOR, 1)[0].endswith(ZOO_SUFFIX)


def resolve_zoo_member(path: str) -> str:
    """``ZOO.safetensors#member`` -> the path of the member's unpacked checkpoint (made once); other paths as they are.

    Raises:
        ValueError: an unknown member, with the zoo's members listed.
    """
    if not is_zoo_member(path):
        return path
    zoo_path, member = path.split(MEMBER_SEPARATOR, 1)
    records = {record["name"]: record for record in read_manifest(zoo_path)}
    if member not in records:
        raise ValueError(f"{zoo_path}: no member {member!r}; members: {sorted(records)}")
    digest = hashlib.sha256(f"{Path(zoo_path).resolve()}:{os.path.getmtime(zoo_path)}".encode()).hexdigest()[:16]
    run_dir = Path(tempfile.gettempdir()) / f"hpa_zoo_{digest}" / member
    checkpoint_path = run_dir / "checkpoints" / f"{member}.ckpt"
    if not checkpoint_path.is_file():
        prefix = f"{member}/"
        with safe_open(zoo_path, framework="pt") as handle:
            state_dict = {key[len(prefix) :]: handle.get_tensor(key) for key in handle.keys() if key.startswith(prefix)}
        hparams = records[member]["hyper_parameters"]
        checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "hparams.yaml", yaml.safe_dump(hparams))
        partial = checkpoint_path.with_suffix(".partial")
        torch.save({"state_dict": state_dict, "hyper_parameters": hparams}, partial)
        os.replace(partial, checkpoint_path)
    return str(checkpoint_path)
