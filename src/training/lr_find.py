"""Learning-rate range test (Lightning's ``Tuner.lr_find``): the loss curve as a picture, the suggestion as JSON.

Atlas 2018 picked its one-cycle peak (8e-4) this way. The test trains ``num_training`` steps with the learning rate
rising exponentially from ``min_lr`` to ``max_lr`` and suggests the rate of the steepest loss descent; the run's
weights are restored afterwards, nothing is trained for real.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from pytorch_lightning.tuner import Tuner  # noqa: E402

from src.data.atomic import write_text_atomic  # noqa: E402


def find_lr(
    run, out_dir: str | os.PathLike, num_training: int = 100, min_lr: float = 1e-6, max_lr: float = 1.0
) -> float:
    """Run the range test on a built run (:func:`src.training.run.build_run`); write ``lr_find.png`` and
    ``lr_find.json`` (suggestion, learning rates, losses) to ``out_dir``.

    Returns:
        the suggested learning rate.

    Raises:
        ValueError: when the curve is too short or flat to suggest a rate.
    """
    finder = Tuner(run.trainer).lr_find(
        run.model, datamodule=run.datamodule, min_lr=min_lr, max_lr=max_lr, num_training=num_training,
        update_attr=False, early_stop_threshold=None,
    )  # fmt: skip
    suggestion = finder.suggestion() if finder is not None else None
    if suggestion is None:
        raise ValueError(f"lr_find: no suggestion from {num_training} steps; raise --lr_find_steps")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    finder.plot(suggest=True).savefig(out_dir / "lr_find.png", dpi=100)
    record = {
        "suggestion": float(suggestion),
        "lr": [float(x) for x in finder.results["lr"]],
        "loss": [float(x) for x in finder.results["loss"]],
    }
    write_text_atomic(out_dir / "lr_find.json", json.dumps(record) + "\n")
    return float(suggestion)
