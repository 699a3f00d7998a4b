"""CAM inference: per-cell class scores for a split, written as a Kaggle submission.

    python run_cam_infer.py --yaml_path src/config/kaggle_submission.yaml --sub_path submission.csv
    python run_cam_infer.py --yaml_path src/config/generate_pseudo_label.yaml --sub_path pseudo_label.csv

Every key of the YAML file can be overridden, e.g. ``--conf_how max --tta_flips false`` (the scoring keys of the
YAML's ``scoring:`` block are given flat). Sharded runs (``--num_shards 4 --shard_index 0``) write
``{stem}.shard0-of-4.csv``; ``--merge_shards 4`` joins them into ``--sub_path``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from src.cam.infer_config import InferConfig, add_infer_options, resolve_infer_config
from src.cam.pipeline import run_inference
from src.submission.shards import merge_shards


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, InferConfig | None]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--yaml_path", default="src/config/kaggle_submission.yaml", help="inference config")
    parser.add_argument("--sub_path", help="submission CSV to write (required)")
    parser.add_argument(
        "--merge_shards", type=int, default=0, metavar="N", help="join N shard CSVs into --sub_path and stop"
    )
    add_infer_options(parser)
    args = parser.parse_args(argv)
    if not args.sub_path:
        parser.error("--sub_path is required: the submission CSV to write")
    if args.merge_shards:
        return args, None
    return args, resolve_infer_config(args.yaml_path, args)


def main(args: argparse.Namespace, settings: InferConfig | None) -> int:
    if settings is None:
        merged = merge_shards(args.sub_path, args.merge_shards)
        print(f"merged {args.merge_shards} shards ({len(merged)} images) into {args.sub_path}")
        return 0
    report = run_inference(settings, args.sub_path)
    print(f"{report.done} image(s) scored, {report.resumed} resumed from an earlier run")
    if report.failed:
        print(f"{len(report.failed)} image(s) failed; the finished rows are kept, re-run to complete:", file=sys.stderr)
        for image_id, message in sorted(report.failed.items()):
            print(f"  {image_id}: {message}", file=sys.stderr)
        return 1
    print(f"submission written to {report.out_path}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main(*parse_args()))
