# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements
# FULL=1 runs the real-scale configuration (resnet50 at 512 px, more epochs): meant for a GPU machine.
FULL ?= 0
ifeq ($(FULL),1)
PIPELINE_ENV := TIMM=resnet50 INPUT_SIZE=512 BATCH_SIZE=32 SEGM_BATCH_SIZE=12 NUM_WORKERS=8 NUM_TRAIN=4000 \
	NUM_TEST=500 EPOCHS0=30 EPOCHS1=15 EPOCHS_SEGM=20 PRECISION=16-mixed OUT_DIR=outputs/synthetic_full \
	DATA_DIR=data/synthetic_full
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
