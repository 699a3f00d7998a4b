"""Model zoo file: packing checkpoints, naming a member in ckpt_paths, refusing unknown members."""

import pytest
import torch

from src.cam.map_source import CheckpointSpec
from src.training.checkpoints import load_checkpoint_file, load_trained_pl_model
from src.training.lit_model import LitModel
from tests.conftest import run_script


@pytest.fixture(scope="module")
def zoo(tiny_checkpoint, tmp_path_factory):
    path = tmp_path_factory.mktemp("zoo") / "zoo.safetensors"
    run_script(
        "make_model_zoo.py",
        "--ckpt",
        str(tiny_checkpoint),
        str(tiny_checkpoint),
        "--names",
        "a",
        "b",
        "--out",
        str(path),
    )
    return path


def test_zoo_member_in_ckpt_paths_loads_the_packed_weights(zoo, tiny_checkpoint):
    spec = CheckpointSpec.parse(["both", 1, f"{zoo}#b"], 0)
    model, hparams = load_trained_pl_model(LitModel, spec.path)
    original = load_checkpoint_file(tiny_checkpoint)
    assert hparams["timm_model_name"] == "test_resnet"
    for key, value in model.state_dict().items():
        assert torch.equal(value, original["state_dict"][key])


def test_unknown_zoo_member_lists_the_members(zoo):
    with pytest.raises(ValueError, match=r"no member 'c'; members: \['a', 'b'\]"):
        CheckpointSpec.parse(["both", 1, f"{zoo}#c"], 0)
