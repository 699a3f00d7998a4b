#!/usr/bin/env bash
# The measurements that need a GPU, in one sitting (README "GPU scale"), from the repository root of a CUDA machine
# with the packages of requirements.txt:
#   OUT=outputs/gpu_checks bash scripts/gpu_checks.sh
# Side by side:
#   1. the chain of `make run FULL=1 STAGE2=0` (scripts/full_scale.env): the GPU scale with its cell stage;
#   2. the learned mask backend's U-Net (train_cell_segmenter.py) trained for MASK_MINUTES on the same GPU;
#   3. when time is left (CHECK_SECONDS), the training-throughput benchmark at the FULL preset.
# The chain writes only the CAM rows of CAM_ROWS (image_prob and cam_round1 here; README has the others) and is cut
# GATHER_SECONDS before the end of the sitting, so that what it finished is gathered in $OUT in any case: the logs,
# the U-Net weights, the cell classifier and round 1 without optimiser state (round 1 in float16, split into
# files under 16 MB: scripts/join_checkpoint.py makes one checkpoint of them again) and results.tar.gz
# (evaluation, submissions, the fusion search's validation submissions, TensorBoard events). Every setting of
# full_scale.env can be overridden from the environment (a dry run on a CPU: NUM_TRAIN=40 ACCELERATOR=cpu
# PRECISION=32 ...).
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/last_ckpt.sh

PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-outputs/gpu_checks}
DSB_DIR=${DSB_DIR:-../shared/data/dsb2018_stage1_train_fluo}
MASK_MINUTES=${MASK_MINUTES:-6}
MASK_SYNTH=${MASK_SYNTH:-/tmp/masks_synth_seed0}
MASK_WORKERS=${MASK_WORKERS:-4}
CHECK_SECONDS=${CHECK_SECONDS:-540}     # the whole sitting; each part is cut to what is left of it
THROUGHPUT=${THROUGHPUT:-1}             # 0: no throughput benchmark
GATHER_SECONDS=${GATHER_SECONDS:-30}    # kept at the end of the sitting to gather the results
export CAM_ROWS=${CAM_ROWS:-"image_prob cam_round1"}
set -a
. scripts/full_scale.env
set +a
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
left() { echo $((CHECK_SECONDS - SECONDS)); }
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

(
  $PYTHON make_synthetic_data.py --out "$MASK_SYNTH" --num_train 120 --num_test 1 --size 512 --seed 0 \
    --workers "$MASK_WORKERS" &&
  $PYTHON train_cell_segmenter.py --synthetic_dir "$MASK_SYNTH" --dsb_dir "$DSB_DIR" --steps 1000000 \
    --max_minutes "$MASK_MINUTES" --batch_size 32 --workers "$MASK_WORKERS" --val_every 1000 --no_progress \
    --out "$OUT/cell_segmenter.pt"
) > "$OUT/masks.log" 2>&1 &
MASKS=$!

STAGE2=0 PYTHON=$PYTHON timeout "$(($(left) - GATHER_SECONDS))" bash scripts/run_pipeline.sh 2>&1 |
  tee "$OUT/pipeline.log"
echo "chain: exit ${PIPESTATUS[0]} after $SECONDS s"
wait "$MASKS"
echo "masks: exit $? after $SECONDS s"

if [ "$THROUGHPUT" = 1 ] && [ "$(left)" -gt $((GATHER_SECONDS + 60)) ]; then
  timeout "$(($(left) - GATHER_SECONDS))" $PYTHON benchmarks/bench_train_throughput.py --preset full --stages image,cell \
    --json "$OUT/throughput.json" > "$OUT/throughput.log" 2>&1
  echo "throughput: exit $? after $SECONDS s"
fi

# the classifiers without optimiser state, so that every row can be scored again elsewhere
CELL_CKPT=$(last_ckpt "$OUT_DIR/cell_train" 2> /dev/null)
[ -f "$CELL_CKPT" ] && $PYTHON scripts/join_checkpoint.py --split "$CELL_CKPT" --out "$OUT/cell_classifier.ckpt"
ROUND1_CKPT=$(last_ckpt "$OUT_DIR/round1" 2> /dev/null)
[ -f "$ROUND1_CKPT" ] && $PYTHON scripts/join_checkpoint.py --split "$ROUND1_CKPT" --half --out "$OUT/round1.ckpt"
(cd "$OUT_DIR" 2> /dev/null && tar czf - evaluation.json submissions tune_fusion cell_stage.log \
  $(find . -path '*lightning_logs/version_*' \( -name 'events.out.*' -o -name hparams.yaml \)) 2> /dev/null) \
  > "$OUT/results.tar.gz"
ls -l "$OUT"
