"""Inference configs: YAML files whose every key can be overridden on the command line."""

from __future__ import annotations

import argparse
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


def add_yaml_overrides(parser: argparse.ArgumentParser, config: dict[str, Any]) -> None:
    """Add one ``--key VALUE`` option per top-level YAML key (values parsed as YAML)."""
    group = parser.add_argument_group("YAML overrides", "any key of the YAML file, value written as YAML")
    for key, default in config.items():
        group.add_argument(f"--{key}", type=_parse_like(default, key), default=None, metavar="VALUE")


def resolve_config(
    yaml_path: str | os.PathLike, parser: argparse.ArgumentParser, argv: list[str] | None
) -> tuple[argparse.Namespace, dict[str, Any]]:
    """Parse ``argv`` with ``parser`` extended by the keys of ``yaml_path``.

    Returns:
        The parsed namespace and the YAML config with command-line overrides applied.
    """
    config = load_yaml(yaml_path)
    add_yaml_overrides(parser, config)
    args = parser.parse_args(argv)
    for key in config:
        value = getattr(args, key)
        if value is not None:
            config[key] = value
    return args, config
