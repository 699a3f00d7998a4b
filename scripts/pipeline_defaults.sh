# Every setting of scripts/run_pipeline.sh with its default (the `make run` scale on the synthetic benchmark), in
# one place: run_pipeline.sh sources it, and benchmarks/bench_train_throughput.py reads it (after
# scripts/full_scale.env for the GPU scale) so that its presets are the pipeline's settings. Each value can be set
# from the environment. Sourcing it only assigns variables.
PYTHON=${PYTHON:-.venv/bin/python}
DATA_DIR=${DATA_DIR:-data/synthetic}
SYNTHETIC=${SYNTHETIC:-1}              # 1: (re)build the synthetic benchmark in DATA_DIR first
NUM_TRAIN=${NUM_TRAIN:-400}
NUM_TEST=${NUM_TEST:-100}
IMAGE_SIZE=${IMAGE_SIZE:-512}          # synthetic image side
SEED=${SEED:-0}
OUT_DIR=${OUT_DIR:-outputs/synthetic}
if [ -z "${TIMM:-}" ]; then  # CPU scale: a half-width resnet18 at output stride 16 (twice the CAM resolution),
  TIMM=resnet18                # a light U-Net decoder trained on half-size crops
  TIMM_KWARGS=${TIMM_KWARGS-'{"channels": [32, 64, 128, 256], "output_stride": 16}'}
  DECODER_CHANNELS=${DECODER_CHANNELS:-64,32,16,16,16}
  SEGM_CROP_SIZE=${SEGM_CROP_SIZE:-$((${INPUT_SIZE:-256} / 2))}
fi
TIMM_KWARGS=${TIMM_KWARGS:-'{}'}       # extra timm.create_model arguments (JSON); {} for a backbone named in TIMM
INPUT_SIZE=${INPUT_SIZE:-256}
AUG_MODE=${AUG_MODE:-2}                # flips + rotate90: crops would drop the cells that carry a label
BATCH_SIZE=${BATCH_SIZE:-16}
SEGM_BATCH_SIZE=${SEGM_BATCH_SIZE:-$BATCH_SIZE}
SEGM_CROP_SIZE=${SEGM_CROP_SIZE:-0}    # U-Net trains on random crops of this side (0: whole images)
DECODER_CHANNELS=${DECODER_CHANNELS:-256,128,64,32,16}  # U-Net decoder widths (smp's default)
NUM_WORKERS=${NUM_WORKERS:-2}
EPOCHS0=${EPOCHS0:-20}
EPOCHS1=${EPOCHS1:-8}
EPOCHS_SEGM=${EPOCHS_SEGM:-4}          # the U-Net adds nothing at this scale (README): kept short
OPTIM=${OPTIM:-adam}
LR0=${LR0:-1e-3}
LR1=${LR1:-5e-4}
LR_SEGM=${LR_SEGM:-1e-3}
K_CLUSTER=${K_CLUSTER:-10}
SEGM_THRESH=${SEGM_THRESH:-0.225}
MASK_BACKEND=${MASK_BACKEND:-classical}
MASK_PARAMS=${MASK_PARAMS:-}            # backend parameters as YAML, e.g. "{weights: outputs/cell_segmenter/weights.pt}"
ACCELERATOR=${ACCELERATOR:-auto}
DEVICES=${DEVICES:-auto}
PRECISION=${PRECISION:-32}
EXTRA_TRAIN_ARGS=${EXTRA_TRAIN_ARGS:-}   # e.g. "--use_ext_data --ext_data_csv ../input/publichpa.csv"
STAGE2=${STAGE2:-1}                    # 0: stop after stage 1 (no pseudo labels, U-Net or ensemble rows)
CAM_ROWS=${CAM_ROWS:-"image_prob cam_round0 cam_round1 cam_round1_rate_mean"}  # test rows of the image classifiers
CELL=${CELL:-1}                        # the cell stage (crops, cell classifier, fused rows); 0 leaves it out
CROP_SIZE=${CROP_SIZE:-64}             # cell crops: side (128-256 on a GPU) and masking (zero|channel|none)
CROP_MASK=${CROP_MASK:-zero}
CELL_TIMM=${CELL_TIMM:-cell_cnn}       # full-resolution plain CNN registered with timm (src/models/cell_cnn.py)
CELL_TIMM_KWARGS=${CELL_TIMM_KWARGS:-'{"widths": [16, 32, 64, 128]}'}
CELL_TARGETS=${CELL_TARGETS:-image}    # image | pseudo | mixed (pseudo and mixed need STAGE2=1)
EPOCHS_CELL=${EPOCHS_CELL:-40}     # 30: 0.708, 40: 0.720, 60: 0.734 on validation fold 0 (with the image context)
LR_CELL=${LR_CELL:-2e-3}
CELL_BATCH_SIZE=${CELL_BATCH_SIZE:-64}
CELL_NUM_WORKERS=${CELL_NUM_WORKERS:-0}  # crop loader processes (0 on 2 cores: the crops are cheap to read)
CELL_PARALLEL=${CELL_PARALLEL:-0}      # 1: crops and cell classifier in the background beside the image chain (GPU)
# fusion with round 1 (cell_logit): chosen on the validation fold by scripts/tune_fusion.py when truth exists
# (without truth this default: the image's context helped at every weight on the synthetic fold, 0.64 -> 0.70 here)
CELL_FUSION=${CELL_FUSION:-"{rule: logit_mean, cell_weight: 0.7, negative: dark, cell_pool: max, cell_pool_weight: 0.9}"}
