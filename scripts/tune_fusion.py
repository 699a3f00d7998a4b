"""Choose the fusion of the cell classifier with the image-level scores on the validation fold.

    python scripts/tune_fusion.py --image_sub VAL_cell_logit.csv --cell_sub VAL_cell_alone.csv \
        --truth_dir data/synthetic/truth --out outputs/synthetic/tune_fusion/best_fusion.yaml

Both submissions are run_cam_infer.py runs on the validation fold (``--split train --fold 0``), the first with the
image classifier alone, the second with ``[cell, 1, CELL.ckpt]`` and ``--fusion "{cell_weight: 1.0}"``. Prints
each candidate's single-cell mAP and writes the best ``fusion:`` block (YAML) to --out.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import asdict
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.data.atomic import write_text_atomic  # noqa: E402
from src.metrics import load_truth  # noqa: E402
from src.scoring.fusion import CELL_POOLS, FUSION_RULES, FusionConfig  # noqa: E402
from src.scoring.fusion_tuning import tune_fusion  # noqa: E402
from src.submission.codec import read_submission  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image_sub", type=Path, required=True, help="image-level part on the validation fold")
    parser.add_argument("--cell_sub", type=Path, required=True, help="cell classifier alone on the validation fold")
    parser.add_argument("--truth_dir", type=Path, required=True)
    parser.add_argument("--rules", default=",".join(FUSION_RULES))
    parser.add_argument("--cell_weights", default="0.2,0.3,0.4,0.5,0.7,1.0")
    parser.add_argument("--negatives", default="dark,mean")
    parser.add_argument("--cell_pool", default="max", choices=CELL_POOLS, help="image context of each cell's scores")
    parser.add_argument(
        "--cell_pool_weights", default="0,0.8,0.9,0.95", help="weights g of the pooled cells (0: each cell alone)"
    )
    parser.add_argument("--out", type=Path, required=True, help="YAML file of the best fusion block")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    image_part, cell_part = read_submission(args.image_sub), read_submission(args.cell_sub)
    truth = load_truth(args.truth_dir, image_part["ID"].astype(str).tolist())
    rules = args.rules.split(",")
    candidates = list(
        dict.fromkeys(  # with cell_weight 1 the rule does not matter: score that candidate once
            FusionConfig(
                rule=rule if float(w) < 1.0 else rules[0],
                cell_weight=float(w),
                negative=negative,
                cell_pool=args.cell_pool if float(g) > 0.0 else "none",
                cell_pool_weight=float(g),
            )
            for rule, w, negative, g in itertools.product(
                rules, args.cell_weights.split(","), args.negatives.split(","), args.cell_pool_weights.split(",")
            )
        )
    )
    print(f"{len(candidates)} candidate fusions on {len(image_part)} validation images", flush=True)
    results = tune_fusion(image_part, cell_part, truth, candidates)
    print(f"| fusion (validation, {len(image_part)} images) | single-cell mAP |\n|---|---|")
    for config, score in results:
        print(
            f"| {config.rule}, cell_weight {config.cell_weight}, negative {config.negative}, "
            f"cell_pool {config.cell_pool} {config.cell_pool_weight} | {score:.3f} |"
        )
    keys = ("rule", "cell_weight", "negative", "cell_pool", "cell_pool_weight")
    best = {k: v for k, v in asdict(results[0][0]).items() if k in keys}
    write_text_atomic(args.out, yaml.safe_dump(best, default_flow_style=True))
    print(f"best: {best} -> {args.out}")


if __name__ == "__main__":
    main(parse_args())
