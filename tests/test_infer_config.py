"""run_cam_infer.py settings: one place for the defaults, the nested scoring block, flat overrides, --help."""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import run_cam_infer
from src.cam.infer_config import InferConfig, resolve_infer_config
from src.scoring.cell_scores import CellScoreConfig

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in ROOT.glob("*.py"))
BASE = {"data_dir": "d", "split": "test", "stage": "test", "ckpt_paths": [["both", 1.0, "a.ckpt"]], "mask_dir": "m"}


def test_nested_and_flat_scoring_keys_give_the_same_settings():
    nested = InferConfig.from_dict({**BASE, "scoring": {"conf_how": "max", "cam_weight": 0.25}}, "nested")
    flat = InferConfig.from_dict({**BASE, "conf_how": "max", "cam_weight": 0.25}, "flat")
    assert nested == flat
    assert nested.scoring == CellScoreConfig(conf_how="max", cam_weight=0.25)


def test_unset_scoring_keys_take_the_scoring_dataclass_defaults():
    settings = InferConfig.from_dict(dict(BASE), "defaults")
    assert settings.scoring == CellScoreConfig()


def test_a_flat_key_overrides_the_scoring_block():
    settings = InferConfig.from_dict({**BASE, "scoring": {"conf_how": "max"}, "conf_how": "mean"}, "both")
    assert settings.scoring.conf_how == "mean"


def test_unknown_scoring_key_is_named_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"cfg: unknown scoring key\(s\) \['cam_wieght'\].*cam_weight"):
        InferConfig.from_dict({**BASE, "scoring": {"cam_wieght": 0.5}}, "cfg")


def test_bad_scoring_value_names_the_config():
    with pytest.raises(ValueError, match="cfg: cam_weight must lie in"):
        InferConfig.from_dict({**BASE, "cam_weight": 2.0}, "cfg")


def test_settings_written_beside_a_submission_read_back_equal():
    settings = InferConfig.from_dict({**BASE, "scoring": {"conf_how": "cell_logit", "logit_margin": 3.0}}, "cfg")
    assert InferConfig.from_dict(yaml.safe_load(yaml.safe_dump(settings.as_dict())), "round trip") == settings


def test_command_line_scoring_key_overrides_the_yaml_block(tmp_path):
    path = tmp_path / "infer.yaml"
    path.write_text(yaml.safe_dump({**BASE, "scoring": {"conf_how": "max", "cam_weight": 0.5}}))
    args, settings = run_cam_infer.parse_args(["--yaml_path", str(path), "--sub_path", "s.csv", "--conf_how", "mean"])
    assert settings.scoring.conf_how == "mean" and settings.scoring.cam_weight == 0.5
    assert settings == resolve_infer_config(str(path), args)


def test_help_lists_every_key_with_its_default():
    result = subprocess.run(
        [sys.executable, "run_cam_infer.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for config_class in (InferConfig, CellScoreConfig):
        for spec in dataclasses.fields(config_class):
            if spec.name != "scoring":
                assert f"--{spec.name} VALUE" in text, spec.name
    assert "(default: 'cam_rate_mean')" in text and "(default: 0.75)" in text


def test_missing_sub_path_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as stop:
        run_cam_infer.parse_args(["--yaml_path", str(tmp_path / "x.yaml")])
    assert stop.value.code == 2


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_answers_help(script, capsys):
    module = importlib.import_module(Path(script).stem)
    with pytest.raises(SystemExit) as stop:
        module.parse_args(["--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")
