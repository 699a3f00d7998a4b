"""Every checkpoint read goes through src/training/checkpoints.py: bad files are refused with their path."""

from __future__ import annotations

import pytest
import torch

from src.training.checkpoints import load_checkpoint_file, load_trained_pl_model, read_checkpoint_hparams
from src.training.lit_model import LitModel
from tests.conftest import load_script


def test_corrupt_checkpoint_names_the_file_and_what_was_expected(tmp_path):
    path = tmp_path / "broken.ckpt"
    path.write_bytes(b"this is not a pickle")
    with pytest.raises(ValueError, match=r"broken\.ckpt.*cannot be read as a checkpoint.*Lightning checkpoint"):
        load_trained_pl_model(LitModel, path)


def test_checkpoint_without_state_dict_is_refused(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match=r"weights\.pth.*without 'state_dict'"):
        load_checkpoint_file(path)


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        read_checkpoint_hparams(tmp_path / "nowhere.ckpt")


def test_checkpoint_without_hyperparameters_is_refused(tmp_path):
    path = tmp_path / "bare.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match=r"bare\.ckpt: no hyperparameters"):
        read_checkpoint_hparams(path)


def test_weights_that_do_not_fit_their_hyperparameters_name_the_file(tmp_path):
    hparams = {"timm_model_name": "test_resnet", "num_inchannels": 4, "round_nb": 0}
    path = tmp_path / "mismatch.ckpt"
    torch.save({"state_dict": {"network.nothing": torch.zeros(1)}, "hyper_parameters": hparams}, path)
    with pytest.raises(ValueError, match=r"mismatch\.ckpt: weights do not fit"):
        load_trained_pl_model(LitModel, path)


def test_a_checkpoint_split_in_half_precision_and_joined_again_predicts_as_before(tmp_path):
    """The way GPU runs come back (scripts/gpu_checks.sh): slim, float16, in parts under a size; joined here."""
    torch.manual_seed(0)
    hparams = {"timm_model_name": "test_resnet", "num_inchannels": 4, "round_nb": 0}
    model = LitModel(**hparams).eval()
    original = tmp_path / "last.ckpt"
    torch.save(
        {"state_dict": model.state_dict(), "hyper_parameters": hparams, "optimizer_states": [{"big": torch.zeros(9)}]},
        original,
    )
    script = load_script("scripts/join_checkpoint.py")
    script.main(
        script.parse_args(["--split", str(original), "--half", "--max_mb", "0.05", "--out", str(tmp_path / "r.ckpt")])
    )
    parts = sorted(tmp_path.glob("r.part*.ckpt"))
    assert len(parts) > 1 and not (tmp_path / "r.ckpt").exists()
    with pytest.raises(SystemExit, match="every part of one split is needed"):
        script.main(script.parse_args(["--join", *map(str, parts[1:]), "--out", str(tmp_path / "bad.ckpt")]))
    script.main(script.parse_args(["--join", *map(str, parts[::-1]), "--out", str(tmp_path / "joined.ckpt")]))
    joined = load_checkpoint_file(tmp_path / "joined.ckpt")
    assert "optimizer_states" not in joined and "part" not in joined
    restored, _ = load_trained_pl_model(LitModel, tmp_path / "joined.ckpt")
    images = torch.randn(2, 4, 64, 64)
    with torch.no_grad():
        expected, got = model(images)["logits"], restored(images)["logits"]
    assert torch.allclose(expected, got, atol=0.05) and not torch.equal(expected, got)  # float16 weights, close
