"""The Kaggle inference notebook, executed end to end (nbclient) on tiny synthetic data with a tiny checkpoint."""

from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from src.cell_masks.cache import mask_path, read_masks
from src.submission.codec import encode_binary_mask, parse_prediction_string, read_submission

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "kaggle_inference.ipynb"


@pytest.fixture(scope="module")
def notebook_run(tiny_synthetic, tiny_checkpoint, tmp_path_factory):
    work = tmp_path_factory.mktemp("kaggle_working")
    patch = pytest.MonkeyPatch()
    for key, value in {
        "HPA_REPO_DIR": str(ROOT),
        "HPA_DATA_DIR": str(tiny_synthetic),
        "HPA_WORK_DIR": str(work),
        "HPA_CKPT_PATHS": f"[[both, 1.0, {tiny_checkpoint}]]",
        "HPA_MASK_BACKEND": "classical",
        "HPA_NUM_WORKERS": "1",
    }.items():
        patch.setenv(key, value)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    try:
        NotebookClient(
            notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}}
        ).execute()
    finally:
        patch.undo()
    return work, notebook


def test_notebook_writes_a_submission_for_every_test_image(notebook_run, tiny_synthetic):
    work, _ = notebook_run
    submission = read_submission(work / "submission.csv")
    expected = read_submission(tiny_synthetic / "sample_submission.csv")
    assert sorted(submission["ID"]) == sorted(expected["ID"])


def test_notebook_predictions_decode_to_its_cached_cell_masks(notebook_run):
    work, _ = notebook_run
    submission = read_submission(work / "submission.csv")
    for row in submission.itertuples():
        _, cell_mask = read_masks(mask_path(work / "masks_classical", row.ID))
        predicted = {p.rle for p in parse_prediction_string(row.PredictionString)}
        cells = {encode_binary_mask(cell_mask == k) for k in np.unique(cell_mask) if k > 0}
        assert predicted == cells, row.ID


def test_notebook_shows_the_submission_head(notebook_run):
    _, notebook = notebook_run
    last_outputs = notebook.cells[-1].outputs
    text = "".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in last_outputs)
    assert "submission.csv" in text and "PredictionString" in text
