#!/usr/bin/env bash
# Self-supervised cell representations, measured (README "Self-supervised cell representations"):
#   a synthetic benchmark with cell lines and batches
#   -> crops of the true cells (the representation is judged apart from the segmentation)
#   -> contrastive pre-training (pretrain_cells.py) -> cell classifiers from random init and from the pre-trained
#      backbone, with LABEL_FRACTIONS of the training images' labels
#   -> evaluate_profiles.py (hand-crafted, random, self-supervised, cell classifier: NSC, NSCB, probe, bags)
#   -> single-cell mAP of each cell classifier alone on the test split
#   -> domain shift: for each cell line, cell classifiers trained without that line's labels
#      (--exclude_cell_lines) against ones trained on a same-sized share of all lines, scored on the same test
#      images of that line; the drop per line and its mean (domain_shift.md).
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
SHIFT_LINES=${SHIFT_LINES:-all}  # cell lines held out in turn for the domain-shift test ("none": skip it)
NUM_WORKERS=${NUM_WORKERS:-0}
ACCELERATOR=${ACCELERATOR:-auto}

DONE="$OUT_DIR/.done"
mkdir -p "$DONE"
stage() { [ -f "$DONE/$1" ] && { echo "== $1: done earlier, skipped"; return 1; }; echo "== $1"; return 0; }
finish() { touch "$DONE/$1"; }
CROPS="$OUT_DIR/crops_$CROP_SIZE"
TRUTH_MASKS="{cell_dir: $DATA_DIR/truth/cell_masks, nuclei_dir: $DATA_DIR/truth/nuclei_masks}"

$PYTHON make_synthetic_data.py --out "$DATA_DIR" --num_train "$NUM_TRAIN" --num_test "$NUM_TEST" \
  --size "$IMAGE_SIZE" --cell_lines "$CELL_LINES" --batches "$BATCHES"
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
# cell_classifier NAME INIT FRACTION SHARE [run_classification.py options]: train it on --label_fraction FRACTION
# for EPOCHS_CELL / SHARE epochs (SHARE: the share of the training images it sees, so that every classifier takes
# about the same number of steps) and write its cell-alone submission on the test split to
# $OUT_DIR/submissions/NAME.csv
cell_classifier() {
  local name=$1 init=$2 fraction=$3 share=$4 epochs
  shift 4
  epochs=$(awk -v e="$EPOCHS_CELL" -v f="$share" 'BEGIN { printf "%d", e / f + 0.5 }')
  local init_args=()
  [ "$init" = selfsup ] && init_args=(--backbone_ckpt "$OUT_DIR/pretrain/backbone.pth")
  $PYTHON run_classification.py --data_dir "$DATA_DIR" --cell_crop_dir "$CROPS" --label_fraction "$fraction" \
    --timm_model_name "$TIMM" --timm_kwargs "$TIMM_KWARGS" "${init_args[@]}" "$@" --batch_size 128 \
    --num_workers "$NUM_WORKERS" --max_epochs "$epochs" --optim_name adam --lr 2e-3 --loss bce \
    --accelerator "$ACCELERATOR" --default_root_dir "$OUT_DIR/$name" --segm_truth_dir "$DATA_DIR/truth"
  $PYTHON run_cam_infer.py --yaml_path src/config/kaggle_submission.yaml --data_dir "$DATA_DIR" \
    --sub_path "$OUT_DIR/submissions/$name.csv" --mask_backend precomputed --mask_params "$TRUTH_MASKS" \
    --mask_dir "$DATA_DIR/masks/test_truth" --ckpt_paths "[[both, 1.0, $IMAGE_CKPT], [cell, 1.0, $(last_ckpt "$OUT_DIR/$name")]]" \
    --conf_how image_prob --fusion "{cell_weight: 1.0}" --num_workers 1
}
MODELS=(--model handcrafted=handcrafted --model "random=random:$TIMM:$TIMM_KWARGS"
  --model "selfsup=$(last_ckpt "$OUT_DIR/pretrain")")
for init in random selfsup; do
  for fraction in $LABEL_FRACTIONS; do
    name="cell_${init}_${fraction}"
    if stage "$name"; then
      cell_classifier "$name" "$init" "$fraction" "$fraction"
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
SUBS=()
for init in random selfsup; do for fraction in $LABEL_FRACTIONS; do
  SUBS+=(--submission "cell_${init}_${fraction}=$OUT_DIR/submissions/cell_${init}_${fraction}.csv")
done; done
echo "== single-cell mAP of each cell classifier alone, test split"
$PYTHON evaluate.py --truth_dir "$DATA_DIR/truth" --split_csv "$DATA_DIR/sample_submission.csv" "${SUBS[@]}" \
  --json "$OUT_DIR/cell_map_test.json" | tail -n 3

# Domain shift: every line L is scored on its own test images by classifiers trained without L's labels
# ("unseen") and by ones trained on all lines ("seen") with the same number of training images on average
# (a share (lines - 1) / lines of them) and the same epochs, so each line's difficulty is measured with the
# line seen.
if [ "$SHIFT_LINES" = none ]; then exit 0; fi
if [ "$SHIFT_LINES" = all ]; then SHIFT_LINES=$(seq -f "line%g" 0 $((CELL_LINES - 1))); fi
SEEN_FRACTION=$(awk -v n="$CELL_LINES" 'BEGIN { printf "%.4f", (n - 1) / n }')
for init in random selfsup; do
  if stage "shift_${init}_seen"; then
    cell_classifier "shift_${init}_seen" "$init" "$SEEN_FRACTION" "$SEEN_FRACTION"
    finish "shift_${init}_seen"
  fi
  for line in $SHIFT_LINES; do
    if stage "shift_${init}_no_${line}"; then
      cell_classifier "shift_${init}_no_${line}" "$init" 1.0 "$SEEN_FRACTION" --exclude_cell_lines "$line"
      finish "shift_${init}_no_${line}"
    fi
  done
done
SHIFT_JSONS=()
for line in $SHIFT_LINES; do
  awk -F, -v line="$line" 'NR == 1 || ($2 == "test" && $3 == line) { print $1 }' "$DATA_DIR/metadata.csv" \
    > "$OUT_DIR/test_$line.csv"
  echo "== domain shift, test images of $line"
  LINE_SUBS=()
  for init in random selfsup; do
    LINE_SUBS+=(--submission "${init}_seen=$OUT_DIR/submissions/shift_${init}_seen.csv"
      --submission "${init}_unseen=$OUT_DIR/submissions/shift_${init}_no_${line}.csv")
  done
  $PYTHON evaluate.py --truth_dir "$DATA_DIR/truth" --split_csv "$OUT_DIR/test_$line.csv" "${LINE_SUBS[@]}" \
    --json "$OUT_DIR/shift_$line.json" | tail -n 1
  SHIFT_JSONS+=("$line=$OUT_DIR/shift_$line.json")
done
$PYTHON scripts/domain_shift_table.py --data_dir "$DATA_DIR" "${SHIFT_JSONS[@]}" \
  | tee "$OUT_DIR/domain_shift.md"
