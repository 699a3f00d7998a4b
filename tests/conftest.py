"""Shared fixtures: a tiny synthetic benchmark and a tiny classifier trained on it, built once per session."""

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def run_script(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a root script with the test interpreter; fail with its stderr when it exits non-zero."""
    result = subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{script} exited {result.returncode}:\n{result.stderr[-4000:]}"
    return result


def load_script(relative_path: str) -> ModuleType:
    """Import a script that is not a package module (``scripts/...``, ``benchmarks/...``) by its path."""
    path = ROOT / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """24 train + 6 test synthetic images of 128 px with per-cell truth."""
    out = tmp_path_factory.mktemp("synthetic") / "data"
    run_script(
        "make_synthetic_data.py", "--out", str(out), "--num_train", "24", "--num_test", "6",
        "--size", "128", "--seed", "3", "--workers", "1",
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_synthetic, tmp_path_factory) -> Path:
    """A round-0 test_resnet trained one epoch on ``tiny_synthetic`` at 64 px: its last.ckpt."""
    root = tmp_path_factory.mktemp("round0")
    run_script(
        "run_classification.py", "--data_dir", str(tiny_synthetic), "--timm_model_name", "test_resnet",
        "--input_size", "64", "--cache_size", "128", "--batch_size", "8", "--num_workers", "0", "--max_epochs", "1",
        "--accelerator", "cpu", "--lr", "0.05", "--default_root_dir", str(root),
    )  # fmt: skip
    return root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
