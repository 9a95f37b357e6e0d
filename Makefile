# Two commands do all set-up on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

.PHONY: help install serve test check docs lint bench reproduce

# every `## target: what it does` line of this file, one a target
help:
	@sed -n 's/^## \([a-z-]*\): /\1\t/p' $(firstword $(MAKEFILE_LIST)) | expand -t 12

## help: list the targets with one line each
## install: create .venv and install the project with its dev tools (again when pyproject.toml changes)
install: $(STAMP)

## serve: start the service on HOST:PORT (127.0.0.1:8000), fetching missing weights in the background
# listens at once; missing backbone weights (what the mode needs) download in the background, /readyz shows progress
serve: $(STAMP)
	$(VENV)/bin/python -m service --fetch-weights --host $(HOST) --port $(PORT)

## test: lint, the docs site and the whole suite, then the latency measurement alone
# lint, the docs site (warnings are errors), the suite with the soak on both cores (a test file stays on one worker,
# so its servers start once; one torch thread per process, as two workers share two cores), then the latency
# measurement alone, with nothing competing for the CPU
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir $$(mktemp -d)
	OMP_NUM_THREADS=1 $(VENV)/bin/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m "not alone" --durations=15
	$(VENV)/bin/python -m pytest -q -m alone --durations=3 tests/e2e/test_health_under_load.py

## check: the fast tests only (no server processes, no load runs)
# the inner loop: the fast tests only (no server processes, no load runs)
check: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n 2 -m "not e2e and not soak"

## docs: build the documentation site (warnings are errors)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

## bench: run every section of the benchmark (BENCH_ARGS=--quick for a short run)
# numbers, not tests: every section of `python -m bench` (edge random-init in-process, tiny services); BENCH_ARGS=--quick
bench: $(STAMP)
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

## reproduce: the paper's table (internet + GPU; ARGS=--dry-run prints the plan first)
# the paper's table: weights, MVTec AD + VisA, heads trained both ways, 1/2/4-shot x 3 seeds (internet + GPU;
# `make reproduce ARGS=--dry-run` prints the plan, disk and time first)
REPRODUCE_CONFIG ?= paper
reproduce: $(STAMP)
	$(VENV)/bin/python -m model.training.reproduce --config $(REPRODUCE_CONFIG) $(ARGS)

## lint: ruff check and ruff format --check
lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
