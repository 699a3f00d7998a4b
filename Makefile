# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements
# FULL=1 runs the GPU scale measured in README (settings in scripts/full_scale.env): meant for a machine with a
# CUDA GPU.
FULL ?= 0
FULL_ENV := $(if $(filter 1,$(FULL)),set -a && . scripts/full_scale.env && set +a &&)

.PHONY: install run test lint format clean mutation

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

run: install
	$(FULL_ENV) PYTHON=$(PY) bash scripts/run_pipeline.sh

test: install
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# Mutation testing (cosmic-ray) of the modules whose math the fast tests pin: one session per module, each with
# its own fast test files. It mutates a scratch copy ($(MUTATION_DIR)), never this tree; a few minutes per module
# on 2 cores. Pick modules with MUTATION_TARGETS='src/x.py=tests/test_a.py,tests/test_b.py ...'.
MUTATION_DIR ?= /tmp/hpa-mutation-$(USER)
MUTATION_TARGETS ?= \
	src/scoring/cell_scores.py=tests/test_cell_scores.py \
	src/models/losses.py=tests/test_losses.py \
	src/metrics/ceiling.py=$(MUTATION_METRIC_TESTS) \
	src/cam/map_source.py=tests/test_map_source.py \
	src/cam/classifier_source.py=tests/test_map_source.py \
	src/cam/segm_source.py=tests/test_map_source.py \
	src/metrics/cell_ap.py=$(MUTATION_METRIC_TESTS)
# the metric's tests without the CLI subprocess and the two-process run (they add seconds per mutant, no kills)
MUTATION_METRIC_TESTS := tests/test_metrics.py,--deselect,tests/test_metrics.py::test_evaluate_cli_writes_json,--deselect,tests/test_metrics.py::test_two_workers_give_the_same_result
# Operators left out: type errors numpy raises at once (arithmetic <-> shifts, bitwise, power, modulo), identity
# and membership comparisons, and the variable/exception/decorator rewrites.
MUTATION_EXCLUDE := "core/ReplaceBinaryOperator_.*_(FloorDiv|Mod|Pow|LShift|RShift|BitXor)$$", \
	"core/ReplaceBinaryOperator_(FloorDiv|Mod|Pow|LShift|RShift|BitXor)_", \
	"core/ReplaceBinaryOperator_(Add|Sub|Mul|Div)_Bit(Or|And)$$", "core/ReplaceBinaryOperator_Bit(Or|And)_(Add|Sub|Mul|Div)$$", \
	"core/ReplaceComparisonOperator_.*_(Is|IsNot|In|NotIn)$$", "core/ReplaceComparisonOperator_(Is|IsNot|In|NotIn)_", \
	"core/(ExceptionReplacer|VariableInserter|VariableReplacer|RemoveDecorator)"

mutation: install
	rm -rf $(MUTATION_DIR) && mkdir -p $(MUTATION_DIR) && cp -r src tests pyproject.toml $(MUTATION_DIR)/
	@set -e; cd $(MUTATION_DIR); for target in $(MUTATION_TARGETS); do \
		module=$${target%%=*}; tests=$$(echo $${target#*=} | tr , ' '); name=$$(basename $$module .py); \
		printf '%s\n' '[cosmic-ray]' "module-path = \"$$module\"" 'timeout = 120.0' 'excluded-modules = []' \
			"test-command = \"$(abspath $(PY)) -m pytest -x -q -p no:cacheprovider $$tests\"" \
			'[cosmic-ray.distributor]' 'name = "local"' '[cosmic-ray.filters.operators-filter]' \
			'exclude-operators = [$(MUTATION_EXCLUDE)]' > $$name.toml; \
		$(abspath $(VENV))/bin/cosmic-ray init $$name.toml $$name.sqlite; \
		$(abspath $(VENV))/bin/cr-filter-operators $$name.sqlite $$name.toml; \
		$(abspath $(VENV))/bin/cosmic-ray exec $$name.toml $$name.sqlite; \
		$(abspath $(VENV))/bin/cr-report --surviving-only --show-diff $$name.sqlite > $$name.survivors.txt; \
		echo "$$module: $$(tail -n 3 $$name.survivors.txt | tr '\n' ' ')"; \
	done; echo "surviving mutants with their diffs: $(MUTATION_DIR)/*.survivors.txt"

clean:
	rm -rf $(VENV) data outputs
