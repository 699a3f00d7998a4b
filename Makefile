# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements
DATA_DIR ?= data/synthetic
NUM_TRAIN ?= 400
NUM_TEST ?= 100
SIZE ?= 512
SEED ?= 0

.PHONY: install run test lint format clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) make_synthetic_data.py --out $(DATA_DIR) --num_train $(NUM_TRAIN) --num_test $(NUM_TEST) --size $(SIZE) --seed $(SEED)
	$(PY) evaluate.py --truth_dir $(DATA_DIR)/truth --floor --split_csv $(DATA_DIR)/sample_submission.csv

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
