#!/usr/bin/env bash
# segm_thresh sensitivity of stage 2: after a finished run_pipeline.sh, retrain the U-Net at each threshold on the
# same pseudo labels and score it, reusing that run's classifiers, pseudo labels and stage-1 submissions.
#   THRESHOLDS="0.15 0.225 0.35" BASE_OUT=outputs/synthetic bash scripts/sweep_segm_thresh.sh
# Each threshold gets $BASE_OUT/segm_thresh_$T (the earlier stages linked in); a finished threshold is skipped.
# Any other run_pipeline.sh variable (EPOCHS_SEGM, TIMM, ...) must match the base run's.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
BASE_OUT=${BASE_OUT:-outputs/synthetic}
THRESHOLDS=${THRESHOLDS:-0.15 0.225 0.35}
REUSED_STAGES=(round0 sub_labels round1 pseudo_labels infer_image_prob infer_cam_round0 infer_cam_round1
  infer_cam_round1_rate_mean infer_cam_round1_truth_masks)

for stage in round0 sub_labels round1 pseudo_labels; do
  [ -f "$BASE_OUT/.done/$stage" ] || { echo "$BASE_OUT has not finished $stage: run scripts/run_pipeline.sh first" >&2; exit 1; }
done
for t in $THRESHOLDS; do
  out="$BASE_OUT/segm_thresh_$t"
  mkdir -p "$out/.done" "$out/submissions"
  for dir in round0 sccam round1 segm; do ln -sfn "$(realpath "$BASE_OUT/$dir")" "$out/$dir"; done
  for stage in "${REUSED_STAGES[@]}"; do
    name=${stage#infer_}
    if [ -f "$BASE_OUT/.done/$stage" ]; then
      touch "$out/.done/$stage"
      [ "$name" = "$stage" ] || ln -sf "$(realpath "$BASE_OUT/submissions/$name.csv")" "$out/submissions/$name.csv"
    fi
  done
  echo "=== segm_thresh $t -> $out"
  SEGM_THRESH=$t OUT_DIR=$out PYTHON=$PYTHON bash scripts/run_pipeline.sh > "$out/pipeline.log" 2>&1 ||
    { echo "failed: see $out/pipeline.log" >&2; exit 1; }
done

$PYTHON - "$BASE_OUT" $THRESHOLDS <<'EOF'
import json
import sys
from pathlib import Path

base, thresholds = Path(sys.argv[1]), sys.argv[2:]
print("| segm_thresh | stage 2 segmentation mAP | ensemble mAP |")
print("|---|---|---|")
for t in thresholds:
    results = json.loads((base / f"segm_thresh_{t}" / "evaluation.json").read_text())["results"]
    print(f"| {t} | {results['segmentation']['mAP']:.3f} | {results['ensemble']['mAP']:.3f} |")
EOF
