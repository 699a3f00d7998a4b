#!/usr/bin/env bash
# Choose the per-cell scoring on the validation fold (training images no model trained on), never on the test split:
# each setting is one run_cam_infer.py run on fold $FOLD of the training images, scored against the per-cell truth.
#   CKPT=outputs/synthetic/round1/lightning_logs/version_0/checkpoints/last.ckpt bash scripts/tune_scoring.sh
# SETTINGS holds ';'-separated run_cam_infer.py overrides, one setting each; a finished setting is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
DATA_DIR=${DATA_DIR:-data/synthetic}
CKPT=${CKPT:?name the checkpoint: CKPT=.../last.ckpt}
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
  name=$(echo "${args[*]}" | sed 's/--//g; s/ /_/g')
  names+=("$name")
  settings_run+=("${args[*]}")
  [ -f "$OUT/$name.csv" ] && { echo "== $name: done earlier, skipped"; continue; }
  echo "== $name"
  $PYTHON run_cam_infer.py --yaml_path src/config/kaggle_submission.yaml --sub_path "$OUT/$name.csv" \
    --data_dir "$DATA_DIR" --split train --fold "$FOLD" --ckpt_paths "[[both, 1.0, $CKPT]]" \
    --mask_backend "$MASK_BACKEND" --mask_dir "$DATA_DIR/masks/train_$MASK_BACKEND" --num_workers "$NUM_WORKERS" \
    "${args[@]}"
done
$PYTHON evaluate.py --truth_dir "$DATA_DIR/truth" --json "$OUT/evaluation.json" \
  $(for name in "${names[@]}"; do echo "--submission $name=$OUT/$name.csv"; done) > "$OUT/evaluation.txt" 2>&1 ||
  { cat "$OUT/evaluation.txt" >&2; exit 1; }
echo "| setting (validation fold $FOLD, $(basename "$DATA_DIR")) | single-cell mAP |"
echo "|---|---|"
for i in "${!names[@]}"; do
  map=$($PYTHON -c 'import json, sys; print("%.3f" % json.load(open(sys.argv[1]))["results"][sys.argv[2]]["mAP"])' \
    "$OUT/evaluation.json" "${names[$i]}")
  echo "| \`$(echo ${settings_run[$i]})\` | $map |"
done
