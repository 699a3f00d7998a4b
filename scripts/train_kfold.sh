#!/usr/bin/env bash
# K-fold image classifier: one run per validation fold, then their ensemble (mean probabilities) labels the test
# split, with per-class thresholds fitted on the out-of-fold predictions (each fold model on its own validation fold).
#
#   DATA_DIR=data/synthetic OUT_DIR=outputs/kfold K=5 TTA=none bash scripts/train_kfold.sh [run_classification.py args]
#
# Fold k trains into $OUT_DIR/fold$k (skipped when its lightning_logs/version_0/checkpoints/last.ckpt exists); the
# labels, metrics and thresholds go to $OUT_DIR/image_labels_$TTA and $OUT_DIR/thresholds_$TTA.json.
set -euo pipefail
PYTHON=${PYTHON:-.venv/bin/python}
DATA_DIR=${DATA_DIR:?set DATA_DIR}
OUT_DIR=${OUT_DIR:?set OUT_DIR}
K=${K:-5}
TTA=${TTA:-none}
ckpts=()
for ((fold = 0; fold < K; fold++)); do
  root="$OUT_DIR/fold$fold"
  ckpt="$root/lightning_logs/version_0/checkpoints/last.ckpt"
  if [[ ! -f "$ckpt" ]]; then
    echo "== fold $fold of $K"
    "$PYTHON" run_classification.py --data_dir "$DATA_DIR" --val_fold "$fold" --n_splits "$K" \
      --default_root_dir "$root" "$@"
  fi
  ckpts+=("$ckpt")
done
echo "== ensemble of $K folds, thresholds fitted out of fold"
"$PYTHON" predict_image_labels.py --data_dir "$DATA_DIR" --ckpt "${ckpts[@]}" --fit_oof --n_splits "$K" \
  --tta "$TTA" --thresholds "$OUT_DIR/thresholds_$TTA.json" --out_dir "$OUT_DIR/image_labels_$TTA"
