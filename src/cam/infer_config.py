"""The settings of ``run_cam_infer.py``: a YAML file (``src/config/*.yaml``) with command-line overrides.

Defaults and meanings live in the dataclasses: :class:`InferConfig` for what is read and how, and
:class:`src.scoring.cell_scores.CellScoreConfig` for the per-cell scoring, which the YAML gives as a nested
``scoring:`` block. Scoring keys written flat (top level of an older YAML, or ``--conf_how max`` on the command
line) keep working.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from src.cam.classifier_source import CAM_METHODS
from src.cam.multilayer_gradcam import check_min_prob
from src.config import add_dataclass_options, given_options, load_yaml
from src.scoring.cell_scores import CELL_LOGIT, CellScoreConfig
from src.scoring.fusion import FusionConfig

STAGES = ("test", "gen_pseudo")
SCORING_KEYS = tuple(spec.name for spec in dataclasses.fields(CellScoreConfig))
NOT_IN_FINGERPRINT = ("num_workers", "batch_size", "device", "num_shards", "shard_index")


def _option(default: Any = dataclasses.MISSING, meaning: str = "", factory: Any = dataclasses.MISSING) -> Any:
    return field(default=default, default_factory=factory, metadata={"help": meaning})


@dataclass
class InferConfig:
    """The resolved settings of one ``run_cam_infer.py`` run."""

    data_dir: str = _option(meaning="Kaggle layout: {data_dir}/{split}/{ID}_{red,green,blue,yellow}.png")
    split: str = _option(meaning="test: IDs of sample_submission.csv; train: IDs of train.csv")
    stage: str = _option(meaning="test: p = predicted image probability; gen_pseudo: p = the image's true label")
    ckpt_paths: list = _option(meaning="[[how_join (both|cam|pred), weight, checkpoint], ...]")
    fold: int = _option(-1, "with split train: only this fold of the checkpoints' training folds (-1 = all)")
    cam_method: str = _option(
        "cam",
        "cam: the 1x1 head on the features; gradcam: gradient-weighted at gradcam_layer; multigradcam "
        "(multigradcam_product): Grad-CAMs of several layers combined by their mean (geometric mean), MICRA-Net style",
    )
    gradcam_layer: str = _option(
        "", "module name inside the network ('' = backbone output); multigradcam: comma-separated ('' = each stage)"
    )
    gradcam_min_prob: float = _option(
        0.0,
        "Grad-CAM methods: classes under this probability in every image of a batch get zero maps and no backward "
        "pass (the whole cost of Grad-CAM); half of scoring.min_image_prob skips what scoring never reads",
    )
    mask_backend: str = _option("classical", "classical | learned | hpacellseg | precomputed (see make_cell_masks.py)")
    mask_dir: str = _option("", "folder of the mask cache ({mask_dir}/{ID}.npz, computed when missing)")
    mask_params: dict = _option(
        meaning="backend parameters, e.g. {weights: ...} (learned), {nuclei_model: ..., cell_model: ...}", factory=dict
    )
    image_ext: str = _option("png", "channel file extension")
    tta_flips: bool = _option(True, "average identity, horizontal and vertical flips")
    tta_scales: list = _option(meaning="input scales (15th place: [1.0, 1.2, 1.4])", factory=lambda: [1.0])
    cam_size: int = _option(128, "maps are averaged at this size, then resized to score_size")
    score_size: int = _option(512, "cells are scored with masks and maps at this size (longer side)")
    scoring: CellScoreConfig = _option(meaning="per-cell scoring (nested block)", factory=CellScoreConfig)
    fusion: dict = _option(
        meaning="cell-classifier fusion (src/scoring/fusion.py), with a [cell, w, path] entry", factory=dict
    )
    batch_size: int = _option(8, "images per model batch")
    num_workers: int = _option(2, "image decoding/mask workers and scoring processes")
    device: str = _option("auto", "auto | cpu | cuda | cuda:1")
    num_shards: int = _option(1, "split the images into this many shards ...")
    shard_index: int = _option(0, "... and score this one")

    @classmethod
    def from_dict(cls, config: dict[str, Any], source: str) -> InferConfig:
        """Settings from a YAML mapping; scoring keys nested under ``scoring:`` or flat (a flat key overrides the
        same key of the block, as the command line does). Errors name ``source``."""
        config = dict(config)
        scoring = config.pop("scoring", None) or {}
        if not isinstance(scoring, dict):
            raise ValueError(f"{source}: 'scoring' must be a mapping of scoring keys, got {scoring!r}")
        unknown = sorted(set(scoring) - set(SCORING_KEYS))
        if unknown:
            raise ValueError(f"{source}: unknown scoring key(s) {unknown}; scoring keys: {list(SCORING_KEYS)}")
        scoring = {**scoring, **{k: config.pop(k) for k in SCORING_KEYS if k in config}}  # flat keys win
        known = [spec.name for spec in dataclasses.fields(cls)]
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; known keys: {known + list(SCORING_KEYS)}")
        missing = [k for k in ("data_dir", "split", "stage", "ckpt_paths") if k not in config]
        if missing:
            raise ValueError(f"{source}: missing key(s) {missing}")
        try:
            score_config = CellScoreConfig(**scoring)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None
        settings = cls(**config, scoring=score_config)
        settings.check(source)
        return settings

    def check(self, source: str) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"{source}: stage must be one of {STAGES}, got {self.stage!r}")
        if self.cam_method not in CAM_METHODS:
            raise ValueError(f"{source}: cam_method must be one of {CAM_METHODS}, got {self.cam_method!r}")
        try:
            check_min_prob(self.gradcam_min_prob)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None
        if self.scoring.conf_how == CELL_LOGIT and self.cam_method != "cam":
            raise ValueError(
                f"{source}: conf_how cell_logit reads the signed logit maps of cam_method 'cam', not gradcam"
            )
        FusionConfig.from_dict(self.fusion, f"{source}: fusion")
        if not self.mask_dir:
            raise ValueError(f"{source}: mask_dir is empty; name the folder of the mask cache")
        if not self.ckpt_paths:
            raise ValueError(f"{source}: ckpt_paths is empty")
        if not all(s > 0 for s in self.tta_scales):
            raise ValueError(f"{source}: tta_scales must be positive, got {self.tta_scales}")
        if self.fold >= 0 and self.split != "train":
            raise ValueError(f"{source}: fold {self.fold} selects training images; it needs split 'train'")
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"{source}: need 0 <= shard_index < num_shards, got {self.shard_index}, {self.num_shards}")

    @property
    def map_kind(self) -> str:
        """The class maps the sources give: signed logits for ``cell_logit``, normalised CAMs otherwise."""
        return "logit" if self.scoring.conf_how == CELL_LOGIT else "cam"

    def as_dict(self) -> dict[str, Any]:
        """Plain mapping, scoring nested: what ``{out}.config.yaml`` holds and :meth:`from_dict` reads back."""
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """What decides the output rows (not workers, batch size or sharding)."""
        kept = {k: v for k, v in self.as_dict().items() if k not in NOT_IN_FINGERPRINT}
        return json.dumps(kept, sort_keys=True, default=str)


def add_infer_options(parser: argparse.ArgumentParser) -> None:
    """``--key VALUE`` for every settings key and every scoring key, with its meaning and default."""
    add_dataclass_options(
        parser.add_argument_group("settings (YAML keys; VALUE written as YAML)"), InferConfig, skip=("scoring",)
    )
    add_dataclass_options(parser.add_argument_group("scoring (keys of the YAML's 'scoring:' block)"), CellScoreConfig)


def resolve_infer_config(yaml_path: str, args: argparse.Namespace) -> InferConfig:
    """The YAML file's settings with the command line's options applied on top."""
    config = load_yaml(yaml_path)
    config.update(given_options(args, InferConfig))
    config.update(given_options(args, CellScoreConfig))  # flat: they override the YAML's scoring block
    return InferConfig.from_dict(config, yaml_path)
