"""The torch device of a ``--device`` option, shared by the stage scripts that take one."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else the CPU; 'cpu', 'cuda' or 'cuda:N' as given.

    Raises:
        ValueError: another name, or CUDA asked for on a machine without it (an error, not a silent CPU run).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)
