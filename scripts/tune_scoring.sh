#!/usr/bin/env bash
# Choose the per-cell scoring on the validation fold (training images no model trained on), never on the test split:
# each setting is one run_cam_infer.py run on fold $FOLD of the training images, scored against the per-cell truth.
#   CKPT=outputs/synthetic/round1/lightning_logs/version_0/checkpoints/last.ckpt bash scripts/tune_scoring.sh
# SETTINGS holds ';'-separated run_cam_infer.py overrides, one setting each; a finished setting is skipped.
# CKPT_PATHS replaces the checkpoints, e.g. a cell classifier beside round 1 to choose the fusion (write its YAML
# without spaces: --fusion {"rule":"geometric","cell_weight":0.7}):
#   CKPT=R1.ckpt CKPT_PATHS="[[both, 1.0, R1.ckpt], [cell, 1.0, CELL.ckpt]]" SETTINGS="..." bash scripts/tune_scoring.sh
# The best setting (validation mAP) is written to $OUT/best_setting.txt for later runs to read.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
DATA_DIR=${DATA_DIR:-data/synthetic}
CKPT=${CKPT:?name the checkpoint: CKPT=.../last.ckpt}
CKPT_PATHS=${CKPT_PATHS:-"[[both, 1.0, $CKPT]]"}
FOLD=${FOLD:-0}                           # the run's --val_fold
OUT=${OUT:-$(dirname "$(dirname "$CKPT")")/tune_fold$FOLD}
MASK_BACKEND=${MASK_BACKEND:-classical}
NUM_WORKERS=${NUM_WORKERS:-2}
SETTINGS=${SETTINGS:-"--conf_how image_prob; --conf_how cell_logit --logit_slope 1 --logit_margin 2;
  --conf_how cell_logit --logit_slope 1 --logit_margin 4; --conf_how cell_logit --logit_slope 1 --logit_margin 6;
  --conf_how cell_logit --logit_slope 3 --logit_margin 2; --conf_how cam_rate_mean --cam_weight 0.5;
  --conf_how cam_rate_mean --cam_weight 0.75"}
[ -d "$DATA_DIR/truth" ] || { echo "tuning needs per-cell truth in $DATA_DIR/truth" >&2; exit 1; }

mkdir -p "$OUT"
names=()
settings_run=()
IFS=';' read -ra settings <<< "$(echo "$SETTINGS" | tr '\n' ' ')"
for setting in "${settings[@]}"; do
  read -ra args <<< "$setting"
  [ ${#args[@]} -gt 0 ] || continue
  name=$(echo "${args[*]}" | sed 's/--//g; s/ /_/g; s/[^A-Za-z0-9_.-]//g')
  names+=("$name")
  settings_run+=("${args[*]}")
  [ -f "$OUT/$name.csv" ] && { echo "== $name: done earlier, skipped"; continue; }
  echo "== $name"
  $PYTHON run_cam_infer.py --yaml_path src/config/kaggle_submission.yaml --sub_path "$OUT/$name.csv" \
    --data_dir "$DATA_DIR" --split train --fold "$FOLD" --ckpt_paths "$CKPT_PATHS" \
    --mask_backend "$MASK_BACKEND" --mask_dir "$DATA_DIR/masks/train_$MASK_BACKEND" --num_workers "$NUM_WORKERS" \
    "${args[@]}"
done
$PYTHON evaluate.py --truth_dir "$DATA_DIR/truth" --json "$OUT/evaluation.json" \
  $(for name in "${names[@]}"; do echo "--submission $name=$OUT/$name.csv"; done) > "$OUT/evaluation.txt" 2>&1 ||
  { cat "$OUT/evaluation.txt" >&2; exit 1; }
echo "| setting (validation fold $FOLD, $(basename "$DATA_DIR")) | single-cell mAP |"
echo "|---|---|"
best=-1
for i in "${!names[@]}"; do
  map=$($PYTHON -c 'import json, sys; print("%.3f" % json.load(open(sys.argv[1]))["results"][sys.argv[2]]["mAP"])' \
    "$OUT/evaluation.json" "${names[$i]}")
  echo "| \`$(echo ${settings_run[$i]})\` | $map |"
  if [ "$best" = -1 ] || $PYTHON -c 'import sys; sys.exit(not float(sys.argv[1]) > float(sys.argv[2]))' "$map" "$best_map"; then
    best=$i; best_map=$map
  fi
done
echo "${settings_run[$best]}" > "$OUT/best_setting.txt"
echo "best on validation fold $FOLD: ${settings_run[$best]} ($best_map) -> $OUT/best_setting.txt"
