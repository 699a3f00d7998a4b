"""scripts/run_pipeline.sh end to end at a tiny scale: every stage, the table, and a resumed re-run."""

import json
import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT, run_script

STAGES = (
    "image_prob", "cam_round0", "cam_round1", "cam_round1_rate_mean", "segmentation", "ensemble", "cam_round1_truth_masks"
)  # fmt: skip


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    env = dict(
        os.environ,
        PYTHON=os.environ.get("PYTHON", str(ROOT / ".venv" / "bin" / "python")),
        DATA_DIR=str(root / "data"), OUT_DIR=str(root / "out"), NUM_TRAIN="24", NUM_TEST="6", IMAGE_SIZE="128",
        TIMM="test_resnet", INPUT_SIZE="64", BATCH_SIZE="8", NUM_WORKERS="0", EPOCHS0="1", EPOCHS1="1",
        EPOCHS_SEGM="1", K_CLUSTER="2", ACCELERATOR="cpu", CELL="0",
    )  # fmt: skip
    result = subprocess.run(
        ["bash", "scripts/run_pipeline.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, env, result.stdout


def test_pipeline_prints_the_table_of_every_stage(pipeline_run):
    root, _, stdout = pipeline_run
    report = json.loads((root / "out" / "evaluation.json").read_text())
    assert set(report["results"]) == {*STAGES, "image-label floor"}
    for result in report["results"].values():
        assert 0.0 <= result["mAP"] <= 1.0
    assert "image-label floor" in stdout and "submission:" in stdout


def test_pipeline_submission_scores_with_evaluate(pipeline_run, tmp_path):
    root, _, _ = pipeline_run
    run_script(
        "evaluate.py", "--submission", str(root / "out" / "submission.csv"), "--truth_dir", str(root / "data" / "truth"),
        "--split_csv", str(root / "data" / "sample_submission.csv"), "--json", str(tmp_path / "eval.json"),
    )  # fmt: skip
    score = json.loads((tmp_path / "eval.json").read_text())["results"]["submission"]["mAP"]
    ensemble = json.loads((root / "out" / "evaluation.json").read_text())["results"]["ensemble"]["mAP"]
    assert score == pytest.approx(ensemble)


def test_pipeline_rerun_skips_finished_stages(pipeline_run):
    _, env, _ = pipeline_run
    result = subprocess.run(
        ["bash", "scripts/run_pipeline.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    skipped = [line for line in result.stdout.splitlines() if line.endswith("done earlier, skipped")]
    assert len(skipped) == 5 + len(STAGES)  # round0, sub_labels, round1, pseudo_labels, segmentation + inference


@pytest.mark.slow  # retrains the U-Net and re-runs two inferences (40 s); the stages are the pipeline test's
def test_segm_thresh_sweep_retrains_only_the_unet(pipeline_run):
    root, env, _ = pipeline_run
    result = subprocess.run(
        ["bash", "scripts/sweep_segm_thresh.sh"], cwd=ROOT, env=dict(env, BASE_OUT=str(root / "out"), THRESHOLDS="0.3"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sweep = root / "out" / "segm_thresh_0.3"
    log = (sweep / "pipeline.log").read_text()
    assert "== round0: done earlier, skipped" in log and "== segmentation: finished" in log
    hparams = (sweep / "segm_train" / "lightning_logs" / "version_0" / "hparams.yaml").read_text()
    assert "segm_thresh: 0.3" in hparams
    results = json.loads((sweep / "evaluation.json").read_text())["results"]
    row = next(line for line in result.stdout.splitlines() if line.startswith("| 0.3 |"))
    assert f"{results['segmentation']['mAP']:.3f}" in row and f"{results['ensemble']['mAP']:.3f}" in row


def test_stage2_off_stops_after_stage1(pipeline_run, tmp_path):
    """A copy of the finished run without its stage-2 outputs: STAGE2=0 must not make them again and must submit
    round 1 (the stage-1 inference rows are kept, so the re-run only evaluates)."""
    root, env, _ = pipeline_run
    out = tmp_path / "out"
    shutil.copytree(root / "out", out, symlinks=True)
    for name in ("segmentation", "infer_segmentation", "infer_ensemble"):
        (out / ".done" / name).unlink()
    for path in (out / "segm_train", out / "submissions" / "segmentation.csv", out / "submissions" / "ensemble.csv"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    result = subprocess.run(
        ["bash", "scripts/run_pipeline.sh"], cwd=ROOT, env=dict(env, OUT_DIR=str(out), STAGE2="0"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "== segmentation" not in result.stdout and not (out / "segm_train").exists()
    assert not (out / "submissions" / "ensemble.csv").exists()
    results = json.loads((out / "evaluation.json").read_text())["results"]
    assert set(results) == {*STAGES, "image-label floor"} - {"segmentation", "ensemble"}
    assert (out / "submission.csv").read_bytes() == (out / "submissions" / "cam_round1.csv").read_bytes()


def _cell_env(env: dict, out) -> dict:
    return dict(
        env, OUT_DIR=str(out), CELL="1", CELL_PARALLEL="1", CROP_SIZE="16", CELL_TIMM_KWARGS='{"widths": [8, 16]}',
        EPOCHS_CELL="1", CELL_BATCH_SIZE="32",
    )  # fmt: skip


def test_cell_stage_in_the_background_needs_image_targets(pipeline_run, tmp_path):
    """CELL_PARALLEL=1 with pseudo targets is refused before any work (they come from round 1's pseudo labels)."""
    _, env, _ = pipeline_run
    refused = subprocess.run(
        ["bash", "scripts/run_pipeline.sh"], cwd=ROOT, env=dict(_cell_env(env, tmp_path / "out"), CELL_TARGETS="pseudo"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2 and "CELL_PARALLEL=1 needs CELL_TARGETS=image" in refused.stderr
    assert not (tmp_path / "out" / "cell_train").exists()


@pytest.mark.slow  # a second pipeline run with five inferences (about a minute); `make run` runs this path
def test_cell_stage_in_the_background_adds_its_rows_and_submits_the_fused_one(pipeline_run, tmp_path):
    """CELL=1 with CELL_PARALLEL=1 on a copy of the finished run: crops and the cell classifier run beside the
    (already finished) image chain, the fusion is chosen on the validation fold, and the fused row is submitted."""
    root, env, _ = pipeline_run
    out = tmp_path / "out"
    shutil.copytree(root / "out", out, symlinks=True)
    result = subprocess.run(
        ["bash", "scripts/run_pipeline.sh"], cwd=ROOT, env=_cell_env(env, out), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "== cell stage in the background" in result.stdout and "== round0: done earlier" in result.stdout
    assert "== cell_train: finished" in (out / "cell_stage.log").read_text()
    assert (out / "tune_fusion" / "best_fusion.yaml").is_file()
    results = json.loads((out / "evaluation.json").read_text())["results"]
    assert {"cell_alone", "cell_fused_cam_round1", "cell_fused_truth_masks"} <= set(results)
    assert (out / "submission.csv").read_bytes() == (out / "submissions" / "cell_fused_cam_round1.csv").read_bytes()
