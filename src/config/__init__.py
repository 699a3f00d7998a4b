"""Inference configs: YAML files whose every key can be overridden on the command line."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a non-mapping names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path) as handle:
        config = yaml.safe_load(handle)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a YAML mapping of keys to values, got {type(config).__name__}")
    return config


def _parse_like(default: Any, key: str):
    """An argparse ``type`` that reads a command-line string as YAML and checks it against the default's type."""

    def parse(text: str) -> Any:
        value = yaml.safe_load(text)
        if default is None or value is None:
            return value
        if isinstance(default, bool) != isinstance(value, bool):
            raise argparse.ArgumentTypeError(f"--{key} expects true/false, got {text!r}")
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(default, (list, dict)) and not isinstance(value, type(default)):
            raise argparse.ArgumentTypeError(f"--{key} expects a YAML {type(default).__name__}, got {text!r}")
        if isinstance(default, str):
            return text
        if not isinstance(value, type(default)):
            raise argparse.ArgumentTypeError(f"--{key} expects {type(default).__name__}, got {text!r}")
        return value

    return parse


_TYPE_SAMPLES = {"str": "", "int": 0, "float": 0.0, "bool": False, "list": [], "dict": {}}


def add_dataclass_options(group: argparse._ArgumentGroup, config_class: type, skip: tuple[str, ...] = ()) -> None:
    """One ``--key VALUE`` option per field of a config dataclass, its help the field's meaning and default.

    Values are read as YAML and checked against the field's type; an option not given is None (the YAML file or
    the dataclass default then decides).
    """
    for spec in dataclasses.fields(config_class):
        if spec.name in skip:
            continue
        if spec.default is not dataclasses.MISSING:
            default = spec.default
            shown = f"default: {default!r}"
        elif spec.default_factory is not dataclasses.MISSING:
            default = spec.default_factory()
            shown = f"default: {default!r}"
        else:
            default = _TYPE_SAMPLES.get(str(spec.type))
            shown = "required"
        meaning = spec.metadata.get("help", "")
        group.add_argument(
            f"--{spec.name}",
            type=_parse_like(default, spec.name),
            default=None,
            metavar="VALUE",
            help=f"{meaning} ({shown})" if meaning else f"({shown})",
        )


def given_options(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    """The options of :func:`add_dataclass_options` that the command line set."""
    names = [spec.name for spec in dataclasses.fields(config_class)]
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
