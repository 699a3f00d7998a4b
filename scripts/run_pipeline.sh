#!/usr/bin/env bash
# The whole chain, as the 15th-place run.bash but parameterised, resumable and tested:
#   synthetic data (optional) -> SC-CAM round 0 -> extract_feature -> create_pseudo_label -> round 1
#   -> CAM pseudo labels (gen_pseudo) -> create_segm_labels -> segmentation training
#   -> final inference on the test split
#   -> cell stage: single-cell crops -> cell classifier -> fusion with round 1 chosen on the validation fold
#   -> evaluation when per-cell truth exists.
# Every setting is an environment variable (defaults: the `make run` scale on the synthetic benchmark):
#   DATA_DIR=../input/hpa-single-cell-image-classification SYNTHETIC=0 OUT_DIR=runs/real TIMM=resnet50 \
#   INPUT_SIZE=512 EPOCHS0=5 EPOCHS1=5 EPOCHS_SEGM=5 ACCELERATOR=gpu PRECISION=16-mixed bash scripts/run_pipeline.sh
# A stage that finished is skipped on a re-run (markers in $OUT_DIR/.done); delete the marker to redo it.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/pipeline_defaults.sh        # every setting and its default, in one place
. scripts/last_ckpt.sh                # last_ckpt RUN_DIR
MASK_PARAMS_ARGS=()
[ -n "$MASK_PARAMS" ] && MASK_PARAMS_ARGS=(--mask_params "$MASK_PARAMS")

# settings checked before any work
if [ "$CELL_PARALLEL" = 1 ] && [ "$CELL_TARGETS" != image ]; then
  echo "CELL_PARALLEL=1 needs CELL_TARGETS=image: $CELL_TARGETS targets come from round 1's pseudo labels" >&2; exit 2
fi
for name in $CAM_ROWS; do
  case $name in image_prob | cam_round0 | cam_round1 | cam_round1_rate_mean) ;;
    *) echo "CAM_ROWS: unknown row '$name' (image_prob cam_round0 cam_round1 cam_round1_rate_mean)" >&2; exit 2 ;;
  esac
done
if [ "$CELL" != 1 ] && [ "$STAGE2" != 1 ] && [[ " $CAM_ROWS " != *" cam_round1 "* ]]; then
  echo "CAM_ROWS must hold cam_round1: with CELL=0 STAGE2=0 it is the submission" >&2; exit 2
fi

DONE="$OUT_DIR/.done"
mkdir -p "$DONE"
stage() { [ -f "$DONE/$1" ] && { echo "== $1: done earlier, skipped"; return 1; }; echo "== $1"; STAGE_START=$SECONDS; return 0; }
finish() { touch "$DONE/$1"; echo "== $1: finished in $((SECONDS - STAGE_START)) s"; }
train() {  # train ROOT_DIR EPOCHS LR [args...]
  local root=$1 epochs=$2 lr=$3; shift 3
  $PYTHON run_classification.py --data_dir "$DATA_DIR" --timm_model_name "$TIMM" --timm_kwargs "$TIMM_KWARGS" \
    --input_size "$INPUT_SIZE" --aug_mode "$AUG_MODE" --batch_size "$BATCH_SIZE" --num_workers "$NUM_WORKERS" \
    --max_epochs "$epochs" --optim_name "$OPTIM" --lr "$lr" \
    --accelerator "$ACCELERATOR" --devices "$DEVICES" --precision "$PRECISION" --seed "$SEED" \
    --default_root_dir "$root" $EXTRA_TRAIN_ARGS "$@"
}
infer() {  # infer YAML SUB_PATH [overrides...]
  local yaml=$1 sub=$2; shift 2
  $PYTHON run_cam_infer.py --yaml_path "$yaml" --sub_path "$sub" --data_dir "$DATA_DIR" \
    --mask_backend "$MASK_BACKEND" "${MASK_PARAMS_ARGS[@]}" --num_workers "$NUM_WORKERS" "$@"
}

if [ "$SYNTHETIC" = 1 ]; then  # a no-op when DATA_DIR already holds this exact benchmark
  echo "== synthetic"
  $PYTHON make_synthetic_data.py --out "$DATA_DIR" --num_train "$NUM_TRAIN" --num_test "$NUM_TEST" \
    --size "$IMAGE_SIZE" --seed "$SEED"
fi

TRUTH_ARGS=()
[ -d "$DATA_DIR/truth" ] && TRUTH_ARGS=(--segm_truth_dir "$DATA_DIR/truth")
CROPS="$OUT_DIR/crops_$CROP_SIZE"
cell_stage() {  # crops of every cell, then the cell classifier: needs masks, not the image classifiers
  if stage crops; then
    for split in train test; do
      $PYTHON extract_cell_crops.py --data_dir "$DATA_DIR" --split "$split" --mask_backend "$MASK_BACKEND" \
        "${MASK_PARAMS_ARGS[@]}" \
        --mask_dir "$DATA_DIR/masks/${split}_$MASK_BACKEND" --crop_dir "$CROPS" --crop_size "$CROP_SIZE" \
        --crop_mask "$CROP_MASK" --num_workers "$NUM_WORKERS"
    done
    finish crops
  fi
  if stage cell_train; then
    PSEUDO_ARGS=()
    [ "$CELL_TARGETS" != image ] && PSEUDO_ARGS=(--pseudo_csv "$OUT_DIR/segm/pseudo_label.csv")
    $PYTHON run_classification.py --data_dir "$DATA_DIR" --cell_crop_dir "$CROPS" --cell_targets "$CELL_TARGETS" \
      "${PSEUDO_ARGS[@]}" --timm_model_name "$CELL_TIMM" --timm_kwargs "$CELL_TIMM_KWARGS" \
      --batch_size "$CELL_BATCH_SIZE" --num_workers "$CELL_NUM_WORKERS" --max_epochs "$EPOCHS_CELL" --optim_name adam --lr "$LR_CELL" \
      --loss bce --accelerator "$ACCELERATOR" --devices "$DEVICES" --precision "$PRECISION" --seed "$SEED" \
      --default_root_dir "$OUT_DIR/cell_train" "${TRUTH_ARGS[@]}"
    finish cell_train
  fi
}
if [ "$CELL" = 1 ] && [ "$CELL_PARALLEL" = 1 ]; then
  echo "== cell stage in the background: $OUT_DIR/cell_stage.log"
  cell_stage > "$OUT_DIR/cell_stage.log" 2>&1 &
  CELL_PID=$!
fi

if stage round0; then
  train "$OUT_DIR/round0" "$EPOCHS0" "$LR0" --round_nb 0
  finish round0
fi
ROUND0=$(last_ckpt "$OUT_DIR/round0")

if stage sub_labels; then
  $PYTHON extract_feature.py --weights "$ROUND0" --save_folder "$OUT_DIR/sccam" --num_workers "$NUM_WORKERS"
  $PYTHON create_pseudo_label.py --save_folder "$OUT_DIR/sccam" --for_round_nb 1 --k_cluster "$K_CLUSTER" --is_scale_feature
  finish sub_labels
fi

if stage round1; then
  train "$OUT_DIR/round1" "$EPOCHS1" "$LR1" --round_nb 1 \
    --sub_label_dir "$OUT_DIR/sccam" --ckpt_path "$ROUND0"
  finish round1
fi
ROUND1=$(last_ckpt "$OUT_DIR/round1")

if [ "$STAGE2" = 1 ] && stage pseudo_labels; then
  infer src/config/generate_pseudo_label.yaml "$OUT_DIR/segm/pseudo_label.csv" \
    --mask_dir "$DATA_DIR/masks/train_$MASK_BACKEND" --ckpt_paths "[[both, 1.0, $ROUND1]]"
  $PYTHON create_segm_labels.py --save_folder "$OUT_DIR/segm" --sub_csv "$OUT_DIR/segm/pseudo_label.csv"
  finish pseudo_labels
fi

if [ "$STAGE2" = 1 ] && stage segmentation; then
  train "$OUT_DIR/segm_train" "$EPOCHS_SEGM" "$LR_SEGM" --segm_label_dir "$OUT_DIR/segm" \
    --segm_thresh "$SEGM_THRESH" --batch_size "$SEGM_BATCH_SIZE" --crop_size "$SEGM_CROP_SIZE" \
    --decoder_channels "$DECODER_CHANNELS" "${TRUTH_ARGS[@]}"
  finish segmentation
fi
SEGM=$([ "$STAGE2" = 1 ] && last_ckpt "$OUT_DIR/segm_train" || echo none)

# Final inference: each stage alone, then the ensemble (round 1 on both, segmentation on CAMs).
# Cells are scored from the signed logit maps (cell_logit); cam_round1_rate_mean is the 15th place's scoring.
TEST_MASKS="$DATA_DIR/masks/test_$MASK_BACKEND"
declare -A RUNS=(
  [image_prob]="[[both, 1.0, $ROUND1]]|image_prob"
  [cam_round0]="[[both, 1.0, $ROUND0]]|cell_logit"
  [cam_round1]="[[both, 1.0, $ROUND1]]|cell_logit"
  [cam_round1_rate_mean]="[[both, 1.0, $ROUND1]]|cam_rate_mean"
  [segmentation]="[[pred, 1.0, $ROUND1], [cam, 1.0, $SEGM]]|cell_logit"
  [ensemble]="[[both, 1.0, $ROUND0], [both, 1.0, $ROUND1], [cam, 2.0, $SEGM]]|cell_logit"
)
read -r -a NAMES <<< "$CAM_ROWS"
[ "$STAGE2" = 1 ] && NAMES+=(segmentation ensemble)
for name in "${NAMES[@]}"; do
  IFS='|' read -r ckpts conf <<< "${RUNS[$name]}"
  if stage "infer_$name"; then
    infer src/config/kaggle_submission.yaml "$OUT_DIR/submissions/$name.csv" --mask_dir "$TEST_MASKS" \
      --ckpt_paths "$ckpts" --conf_how "$conf"
    finish "infer_$name"
  fi
done
FINAL=$([ "$STAGE2" = 1 ] && echo ensemble || echo cam_round1)

# Cell stage: every cell cut out, a classifier trained on the crops, fused with round 1 (cell_logit).
TRUTH_MASK_ARGS=(--mask_backend precomputed --mask_dir "$DATA_DIR/masks/test_truth"
  --mask_params "{cell_dir: $DATA_DIR/truth/cell_masks, nuclei_dir: $DATA_DIR/truth/nuclei_masks}")
if [ "$CELL" = 1 ]; then
  if [ "$CELL_PARALLEL" = 1 ]; then
    wait "$CELL_PID" || { echo "cell stage failed: see $OUT_DIR/cell_stage.log"; exit 1; }
  else
    cell_stage
  fi
  CELL_CKPT=$(last_ckpt "$OUT_DIR/cell_train")
  CELL_PATHS="[[both, 1.0, $ROUND1], [cell, 1.0, $CELL_CKPT]]"
  BEST_FUSION=$CELL_FUSION
  if [ -d "$DATA_DIR/truth" ]; then  # choose the fusion on the validation fold, never on the test split
    TUNE="$OUT_DIR/tune_fusion"
    if stage tune_fusion; then
      VAL_ARGS=(--split train --fold 0 --mask_dir "$DATA_DIR/masks/train_$MASK_BACKEND")
      infer src/config/kaggle_submission.yaml "$TUNE/image_part.csv" "${VAL_ARGS[@]}" \
        --ckpt_paths "[[both, 1.0, $ROUND1]]" --conf_how cell_logit
      infer src/config/kaggle_submission.yaml "$TUNE/cell_alone.csv" "${VAL_ARGS[@]}" \
        --ckpt_paths "$CELL_PATHS" --conf_how image_prob --fusion "{cell_weight: 1.0}"
      $PYTHON scripts/tune_fusion.py --image_sub "$TUNE/image_part.csv" --cell_sub "$TUNE/cell_alone.csv" \
        --truth_dir "$DATA_DIR/truth" --out "$TUNE/best_fusion.yaml"
      finish tune_fusion
    fi
    BEST_FUSION=$(cat "$TUNE/best_fusion.yaml")
  fi
  declare -A CELL_ROWS=(
    [cell_alone]="image_prob|{cell_weight: 1.0}"
    [cell_fused_cam_round1]="cell_logit|$BEST_FUSION"
  )
  for name in cell_alone cell_fused_cam_round1; do
    if stage "infer_$name"; then
      IFS='|' read -r conf fusion <<< "${CELL_ROWS[$name]}"
      infer src/config/kaggle_submission.yaml "$OUT_DIR/submissions/$name.csv" --mask_dir "$TEST_MASKS" \
        --ckpt_paths "$CELL_PATHS" --conf_how "$conf" --fusion "$fusion"
      finish "infer_$name"
    fi
    NAMES+=("$name")
  done
  if [ -d "$DATA_DIR/truth/cell_masks" ] && stage infer_cell_fused_truth_masks; then
    infer src/config/kaggle_submission.yaml "$OUT_DIR/submissions/cell_fused_truth_masks.csv" \
      "${TRUTH_MASK_ARGS[@]}" --ckpt_paths "$CELL_PATHS" --conf_how cell_logit --fusion "$BEST_FUSION"
    finish infer_cell_fused_truth_masks
  fi
  [ -d "$DATA_DIR/truth/cell_masks" ] && NAMES+=(cell_fused_truth_masks)
fi
[ "$CELL" = 1 ] && FINAL=cell_fused_cam_round1  # the strongest path: cell classifier fused with round 1
cp "$OUT_DIR/submissions/$FINAL.csv" "$OUT_DIR/submission.csv"
# With per-cell truth: the round-1 CAM row again on the true masks, to show what the cell masks cost.
if [ -d "$DATA_DIR/truth/cell_masks" ]; then
  if stage infer_cam_round1_truth_masks; then
    infer src/config/kaggle_submission.yaml "$OUT_DIR/submissions/cam_round1_truth_masks.csv" \
      --mask_backend precomputed --mask_dir "$DATA_DIR/masks/test_truth" --ckpt_paths "${RUNS[cam_round1]%|*}" \
      --conf_how "${RUNS[cam_round1]#*|}" \
      --mask_params "{cell_dir: $DATA_DIR/truth/cell_masks, nuclei_dir: $DATA_DIR/truth/nuclei_masks}"
    finish infer_cam_round1_truth_masks
  fi
  NAMES+=(cam_round1_truth_masks)
fi

if [ -d "$DATA_DIR/truth" ]; then
  $PYTHON evaluate.py --truth_dir "$DATA_DIR/truth" --split_csv "$DATA_DIR/sample_submission.csv" --floor \
    --json "$OUT_DIR/evaluation.json" \
    $(for name in "${NAMES[@]}"; do
        echo "--submission $name=$OUT_DIR/submissions/$name.csv"; done)
fi
echo "submission:   $OUT_DIR/submission.csv"
echo "checkpoints:  $ROUND0, $ROUND1$([ "$STAGE2" = 1 ] && echo ", $SEGM")$([ "$CELL" = 1 ] && echo ", $CELL_CKPT")"
echo "tensorboard:  .venv/bin/tensorboard --logdir $OUT_DIR"
echo "elapsed:      $SECONDS s (this run)"
