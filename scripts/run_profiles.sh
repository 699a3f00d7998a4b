#!/usr/bin/env bash
# Self-supervised cell representations, measured (README "Self-supervised cell representations"):
#   a synthetic benchmark with cell lines and batches (one of each held out of training)
#   -> crops of the true cells (the representation is judged apart from the segmentation)
#   -> contrastive pre-training (pretrain_cells.py) -> cell classifiers from random init and from the pre-trained
#      backbone, with LABEL_FRACTIONS of the training images' labels
#   -> evaluate_profiles.py (hand-crafted, random, self-supervised, cell classifier: NSC, NSCB, probe, bags)
#   -> single-cell mAP of each cell classifier alone on the test split, on all test images, on those of seen and
#      those of held-out cell lines.
# Settings are environment variables; a finished stage is skipped on a re-run (markers in $OUT_DIR/.done).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/last_ckpt.sh

PYTHON=${PYTHON:-.venv/bin/python}
DATA_DIR=${DATA_DIR:-data/synthetic_domains}
OUT_DIR=${OUT_DIR:-outputs/profiles}
NUM_TRAIN=${NUM_TRAIN:-300}
NUM_TEST=${NUM_TEST:-100}
IMAGE_SIZE=${IMAGE_SIZE:-256}
CELL_LINES=${CELL_LINES:-4}
BATCHES=${BATCHES:-3}
CROP_SIZE=${CROP_SIZE:-32}
TIMM=${TIMM:-cell_cnn}
TIMM_KWARGS=${TIMM_KWARGS:-'{"widths": [16, 32, 64, 128]}'}
EPOCHS_PRE=${EPOCHS_PRE:-90}  # 461 s on 2 cores (README)
PRE_BATCH=${PRE_BATCH:-256}
PRE_LR=${PRE_LR:-0.05}       # SGD; SIFLoc's 0.003 is for batch 32 and 100 epochs
POSITIVES=${POSITIVES:-image}  # SIFLoc's same-image pairs (chosen on validation fold 0, README)
EPOCHS_CELL=${EPOCHS_CELL:-10}  # with all labels; a share F of the labels trains EPOCHS_CELL / F epochs (same steps)
EPOCHS_IMAGE=${EPOCHS_IMAGE:-3}
LABEL_FRACTIONS=${LABEL_FRACTIONS:-"0.1 1.0"}
NUM_WORKERS=${NUM_WORKERS:-0}
ACCELERATOR=${ACCELERATOR:-auto}

DONE="$OUT_DIR/.done"
mkdir -p "$DONE"
stage() { [ -f "$DONE/$1" ] && { echo "== $1: done earlier, skipped"; return 1; }; echo "== $1"; return 0; }
finish() { touch "$DONE/$1"; }
CROPS="$OUT_DIR/crops_$CROP_SIZE"
TRUTH_MASKS="{cell_dir: $DATA_DIR/truth/cell_masks, nuclei_dir: $DATA_DIR/truth/nuclei_masks}"

$PYTHON make_synthetic_data.py --out "$DATA_DIR" --num_train "$NUM_TRAIN" --num_test "$NUM_TEST" \
  --size "$IMAGE_SIZE" --cell_lines "$CELL_LINES" --batches "$BATCHES" --holdout_cell_lines 1 --holdout_batches 1
if stage crops; then
  for split in train test; do
    $PYTHON extract_cell_crops.py --data_dir "$DATA_DIR" --split "$split" --mask_backend precomputed \
      --mask_params "$TRUTH_MASKS" --mask_dir "$DATA_DIR/masks/${split}_truth" --crop_dir "$CROPS" \
      --crop_size "$CROP_SIZE" --num_workers 2
  done
  finish crops
fi
if stage pretrain; then
  $PYTHON pretrain_cells.py --crop_dir "$CROPS" --splits train,test --positives "$POSITIVES" \
    --timm_model_name "$TIMM" --timm_kwargs "$TIMM_KWARGS" --batch_size "$PRE_BATCH" --lr "$PRE_LR" \
    --max_epochs "$EPOCHS_PRE" --num_workers "$NUM_WORKERS" --accelerator "$ACCELERATOR" \
    --default_root_dir "$OUT_DIR/pretrain"
  finish pretrain
fi
if stage image_classifier; then  # only for run_cam_infer's image part, whose weight is 0 in the cell-alone rows
  $PYTHON run_classification.py --data_dir "$DATA_DIR" --timm_model_name resnet18 \
    --timm_kwargs '{"channels": [32, 64, 128, 256], "output_stride": 16}' --input_size "$IMAGE_SIZE" --aug_mode 2 \
    --batch_size 16 --num_workers "$NUM_WORKERS" --max_epochs "$EPOCHS_IMAGE" --optim_name adam --lr 1e-3 \
    --accelerator "$ACCELERATOR" --default_root_dir "$OUT_DIR/image_classifier"
  finish image_classifier
fi
IMAGE_CKPT=$(last_ckpt "$OUT_DIR/image_classifier")
MODELS=(--model handcrafted=handcrafted --model "random=random:$TIMM:$TIMM_KWARGS"
  --model "selfsup=$(last_ckpt "$OUT_DIR/pretrain")")
for init in random selfsup; do
  for fraction in $LABEL_FRACTIONS; do
    name="cell_${init}_${fraction}"
    if stage "$name"; then
      epochs=$(awk -v e="$EPOCHS_CELL" -v f="$fraction" 'BEGIN { printf "%d", e / f + 0.5 }')
      INIT_ARGS=()
      [ "$init" = selfsup ] && INIT_ARGS=(--backbone_ckpt "$OUT_DIR/pretrain/backbone.pth")
      $PYTHON run_classification.py --data_dir "$DATA_DIR" --cell_crop_dir "$CROPS" --label_fraction "$fraction" \
        --timm_model_name "$TIMM" --timm_kwargs "$TIMM_KWARGS" "${INIT_ARGS[@]}" --batch_size 128 \
        --num_workers "$NUM_WORKERS" --max_epochs "$epochs" --optim_name adam --lr 2e-3 --loss bce \
        --accelerator "$ACCELERATOR" --default_root_dir "$OUT_DIR/$name" --segm_truth_dir "$DATA_DIR/truth"
      $PYTHON run_cam_infer.py --yaml_path src/config/kaggle_submission.yaml --data_dir "$DATA_DIR" \
        --sub_path "$OUT_DIR/submissions/$name.csv" --mask_backend precomputed --mask_params "$TRUTH_MASKS" \
        --mask_dir "$DATA_DIR/masks/test_truth" --ckpt_paths "[[both, 1.0, $IMAGE_CKPT], [cell, 1.0, $(last_ckpt "$OUT_DIR/$name")]]" \
        --conf_how image_prob --fusion "{cell_weight: 1.0}" --num_workers 1
      finish "$name"
    fi
    MODELS+=(--model "$name=$(last_ckpt "$OUT_DIR/$name")")
  done
done
if stage profiles; then
  mkdir -p "$OUT_DIR/profiles"
  $PYTHON evaluate_profiles.py --data_dir "$DATA_DIR" --crop_dir "$CROPS" "${MODELS[@]}" \
    --out_dir "$OUT_DIR/profiles" --picture images/cell_embeddings.png --picture_model selfsup | tee "$OUT_DIR/profiles/table.md"
  finish profiles
fi
# single-cell mAP of each cell classifier alone: every test image, then seen and held-out cell lines
$PYTHON - "$DATA_DIR" "$OUT_DIR" <<'PY'
import sys, pandas as pd
data, out = sys.argv[1:]
meta = pd.read_csv(f"{data}/metadata.csv")
test = meta[meta["split"] == "test"]
held = sorted(set(test["cell_line"]) - set(meta.loc[meta["split"] == "train", "cell_line"]))
test[~test["cell_line"].isin(held)][["ID"]].to_csv(f"{out}/test_seen_lines.csv", index=False)
test[test["cell_line"].isin(held)][["ID"]].to_csv(f"{out}/test_heldout_lines.csv", index=False)
PY
SUBS=()
for init in random selfsup; do for fraction in $LABEL_FRACTIONS; do
  SUBS+=(--submission "cell_${init}_${fraction}=$OUT_DIR/submissions/cell_${init}_${fraction}.csv")
done; done
for part in sample_submission test_seen_lines test_heldout_lines; do
  split_csv="$OUT_DIR/$part.csv"; [ "$part" = sample_submission ] && split_csv="$DATA_DIR/sample_submission.csv"
  echo "== single-cell mAP, $part"
  $PYTHON evaluate.py --truth_dir "$DATA_DIR/truth" --split_csv "$split_csv" "${SUBS[@]}" \
    --json "$OUT_DIR/cell_map_$part.json" | tail -n 3
done
