"""Resume after a real kill (SIGKILL of the process group): CAM inference, training, and the pipeline script.

Each process is killed on a progress marker it writes itself (a row in the partial file, a checkpoint file, a
stage line), never after a fixed sleep, so the tests hold on a slow machine.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from src.config import CONFIG_DIR, load_yaml
from src.submission.codec import read_submission
from tests.conftest import ROOT, run_script
from tests.test_training import train_args, write_kaggle_data


def _start(args: list[str], env: dict | None = None) -> subprocess.Popen:
    """Start a command in its own process group (so the kill reaches its children), output to a temp file."""
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _kill_when(process: subprocess.Popen, ready, timeout: float = 300.0) -> None:
    """SIGKILL the process group as soon as ``ready()`` is true; fail if the process ends first."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"finished before the kill point:\n{process.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "kill point not reached in time"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def _line_count(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


@pytest.mark.slow
def test_cam_inference_killed_after_its_first_row_resumes_to_the_same_submission(
    tiny_synthetic, tiny_checkpoint, tmp_path
):
    config = load_yaml(CONFIG_DIR / "kaggle_submission.yaml")
    config.update(data_dir=str(tiny_synthetic), ckpt_paths=[["both", 1.0, str(tiny_checkpoint)]])
    yaml_path = tmp_path / "infer.yaml"
    yaml_path.write_text(yaml.safe_dump(config))

    def args(sub: Path) -> list[str]:
        return [
            sys.executable, "run_cam_infer.py", "--yaml_path", str(yaml_path), "--sub_path", str(sub),
            "--mask_dir", str(tmp_path / "masks"), "--num_workers", "0", "--batch_size", "1", "--score_size", "128",
            "--cam_size", "32",
        ]  # fmt: skip

    killed = tmp_path / "killed.csv"
    partial = tmp_path / "killed.csv.partial.jsonl"
    _kill_when(_start(args(killed)), lambda: _line_count(partial) >= 2)  # the fingerprint and one finished row
    assert not killed.exists()
    rows_before = _line_count(partial) - 1
    resumed = run_script(*args(killed)[1:])
    assert f"{6 - rows_before} image(s) scored, {rows_before} resumed" in resumed.stdout
    run_script(*args(tmp_path / "whole.csv")[1:])
    assert killed.read_bytes() == (tmp_path / "whole.csv").read_bytes()


@pytest.mark.slow
def test_training_killed_in_its_second_epoch_resumes_from_last_ckpt_to_the_same_epochs(tmp_path):
    data = write_kaggle_data(tmp_path / "data")
    root = tmp_path / "run"
    args = [sys.executable, "run_classification.py", *train_args(data, root), "--max_epochs", "4"]
    first = root / "lightning_logs" / "version_0" / "checkpoints"
    _kill_when(_start(args), lambda: (first / "last.ckpt").exists() and any(first.glob("epoch-0-*.ckpt")))
    steps_per_epoch = torch.load(first / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    assert steps_per_epoch > 0
    run_script(*args[1:], "--ckpt_path", str(first / "last.ckpt"))
    resumed = torch.load(
        root / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert (resumed["epoch"], resumed["global_step"]) == (3, 4 * steps_per_epoch)


@pytest.mark.slow
def test_pipeline_killed_during_a_stage_redoes_only_that_stage(tmp_path):
    env = dict(
        os.environ,
        PYTHON=sys.executable, DATA_DIR=str(tmp_path / "data"), OUT_DIR=str(tmp_path / "out"), NUM_TRAIN="24",
        NUM_TEST="6", IMAGE_SIZE="128", TIMM="test_resnet", INPUT_SIZE="64", BATCH_SIZE="8", NUM_WORKERS="0",
        EPOCHS0="1", EPOCHS1="2", EPOCHS_SEGM="1", K_CLUSTER="2", ACCELERATOR="cpu", STAGE2="0", CELL="0",
    )  # fmt: skip
    process = _start(["bash", "scripts/run_pipeline.sh"], env)
    round1 = tmp_path / "out" / "round1" / "lightning_logs"
    _kill_when(process, lambda: any(round1.glob("version_*/checkpoints/last.ckpt")), timeout=600)  # round 1 mid-way
    done = tmp_path / "out" / ".done"
    assert sorted(p.name for p in done.iterdir()) == ["round0", "sub_labels"]
    result = subprocess.run(
        ["bash", "scripts/run_pipeline.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "== round0: done earlier, skipped" in lines and "== sub_labels: done earlier, skipped" in lines
    assert "== round1" in lines and any(line.startswith("== round1: finished") for line in lines)
    assert not any(line.startswith("== round0: finished") or line == "== round0" for line in lines)
    assert len(read_submission(tmp_path / "out" / "submission.csv")) == 6
