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
#      images of that line; the drop per line and its mean (domain_shift_cell_line.md); the same for batches
#      (--exclude_batches, domain_shift_batch.md).
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
TEMPERATURE=${TEMPERATURE:-0.2}  # NT-Xent; SIFLoc's 0.1 gained less on validation fold 0 (README)
EPOCHS_CELL=${EPOCHS_CELL:-10}  # with all labels; a share F of the labels trains EPOCHS_CELL / F epochs (same steps)
EPOCHS_IMAGE=${EPOCHS_IMAGE:-3}
LABEL_FRACTIONS=${LABEL_FRACTIONS:-"0.1 1.0"}
SHIFT_LINES=${SHIFT_LINES:-all}  # cell lines held out in turn for the domain-shift test ("none": skip it)
SHIFT_BATCHES=${SHIFT_BATCHES:-all}  # the same for acquisition batches
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
  $PYTHON pretrain_cells.py --crop_dir "$CROPS" --splits train,test --positives "$POSITIVES" --temperature "$TEMPERATURE" \
    --timm_model_name "$TIMM" --timm_kwargs "$TIMM_KWARGS" --batch_size "$PRE_BATCH" --lr "$PRE_LR" \
    --max_epochs "$EPOCHS_PRE" --num_workers "$NUM_WORKERS" --accelerator "$ACCELERATOR" \
    --default_root_dir "$OUT_DIR/pretrain"
  finish pretrain
fi
if stage image_classifier; then  # run_cam_infer's image part (weight 0 in the cell-alone rows) and a profiles row
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
  --model "selfsup=$(last_ckpt "$OUT_DIR/pretrain")" --model "image_classifier=$IMAGE_CKPT")
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
    --shift_column cell_line --shift_column batch --out_dir "$OUT_DIR/profiles" \
    --picture images/cell_embeddings.png --picture_model selfsup | tee "$OUT_DIR/profiles/table.md"
  finish profiles
fi
SUBS=()
for init in random selfsup; do for fraction in $LABEL_FRACTIONS; do
  SUBS+=(--submission "cell_${init}_${fraction}=$OUT_DIR/submissions/cell_${init}_${fraction}.csv")
done; done
echo "== single-cell mAP of each cell classifier alone, test split"
$PYTHON evaluate.py --truth_dir "$DATA_DIR/truth" --split_csv "$DATA_DIR/sample_submission.csv" "${SUBS[@]}" \
  --json "$OUT_DIR/cell_map_test.json" | tail -n 3

# Domain shift: each cell line (then each batch) D is scored on its own test images by classifiers trained
# without D's labels ("unseen") and by ones trained on all of them ("seen") with the same number of training
# images on average (a share (N - 1) / N of them for N lines or batches) and the same epochs, so each one's
# difficulty is measured with it seen.
# domain_shift KIND FLAG COUNT PREFIX NAMES: KIND is the metadata column (cell_line, batch), FLAG the cell stage's
# option that holds one out, NAMES "all", "none" or a list; writes $OUT_DIR/domain_shift_KIND.md
domain_shift() {
  local kind=$1 flag=$2 count=$3 prefix=$4 names=$5 seen_fraction init name jsons=() subs
  if [ "$names" = none ] || [ "$count" -lt 2 ]; then return 0; fi
  if [ "$names" = all ]; then names=$(seq -f "$prefix%g" 0 $((count - 1))); fi
  seen_fraction=$(awk -v n="$count" 'BEGIN { printf "%.4f", (n - 1) / n }')
  for init in random selfsup; do
    if stage "shift_${init}_seen_$kind"; then
      cell_classifier "shift_${init}_seen_$kind" "$init" "$seen_fraction" "$seen_fraction"
      finish "shift_${init}_seen_$kind"
    fi
    for name in $names; do
      if stage "shift_${init}_no_$name"; then
        cell_classifier "shift_${init}_no_$name" "$init" 1.0 "$seen_fraction" "$flag" "$name"
        finish "shift_${init}_no_$name"
      fi
    done
  done
  for name in $names; do
    awk -F, -v col="$kind" -v name="$name" \
      'NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; print $1; next } $2 == "test" && $c == name { print $1 }' \
      "$DATA_DIR/metadata.csv" > "$OUT_DIR/test_$name.csv"
    echo "== domain shift, test images of $name"
    subs=()
    for init in random selfsup; do
      subs+=(--submission "${init}_seen=$OUT_DIR/submissions/shift_${init}_seen_$kind.csv"
        --submission "${init}_unseen=$OUT_DIR/submissions/shift_${init}_no_$name.csv")
    done
    $PYTHON evaluate.py --truth_dir "$DATA_DIR/truth" --split_csv "$OUT_DIR/test_$name.csv" "${subs[@]}" \
      --json "$OUT_DIR/shift_$name.json" | tail -n 1
    jsons+=("$name=$OUT_DIR/shift_$name.json")
  done
  $PYTHON scripts/domain_shift_table.py --data_dir "$DATA_DIR" --column "$kind" "${jsons[@]}" \
    | tee "$OUT_DIR/domain_shift_$kind.md"
}
domain_shift cell_line --exclude_cell_lines "$CELL_LINES" line "$SHIFT_LINES"
domain_shift batch --exclude_batches "$BATCHES" batch "$SHIFT_BATCHES"
