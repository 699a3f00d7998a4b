# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements
# FULL=1 runs the GPU scale measured in README (2000 train images, full-width resnet18 at output stride 16,
# 512 px, mixed precision): meant for a machine with a CUDA GPU.
FULL ?= 0
ifeq ($(FULL),1)
PIPELINE_ENV := TIMM=resnet18 TIMM_KWARGS='{"output_stride": 16}' INPUT_SIZE=512 BATCH_SIZE=32 NUM_WORKERS=8 \
	NUM_TRAIN=2000 NUM_TEST=100 EPOCHS0=30 EPOCHS1=10 EPOCHS_SEGM=16 ACCELERATOR=gpu PRECISION=16-mixed \
	OUT_DIR=outputs/synthetic_full DATA_DIR=data/synthetic_full
endif

.PHONY: install run test lint format clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PIPELINE_ENV) PYTHON=$(PY) bash scripts/run_pipeline.sh

test: install
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) data outputs
