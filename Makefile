# Quick start: `make repro` (install + run the pipeline), `make test` (install + tests).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ltcl-installed
export DVC_NO_ANALYTICS := 1
export PYTHONUNBUFFERED := 1
# Stage commands call `python`: make it the venv's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install repro test bench compare gpu-check clean-venv

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Reinstall only when the package metadata changes (the package itself is installed editable).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

repro: install
	$(BIN)/dvc repro
	@echo
	@echo "Report: $(CURDIR)/report/index.html  (Markdown: report/report.md)"

test: install
	$(BIN)/python -m pytest

# Benchmarks of issue 6 (throughput, hardware efficiency, OOD sampling, dvc overhead), on every
# core: prints a table with targets and PASS/MISS, writes metrics/bench.json. `make bench BENCH_ARGS=--scale`
# adds the 1M-image pool benchmark (writes and deletes ~3 GB in /tmp).
BENCH_ARGS ?=
bench: install
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

# Comparison tables of the DVC experiments (queue them with `ltcl queue table2`, run with
# `dvc exp run --run-all`): terminal + report/compare/compare.{md,html}.
compare: install
	$(BIN)/ltcl compare

# The GPU check (README: GPU check): the device tests, the tiny pipeline of three methods, training
# throughput and a 300K-pool OOD update on the GPU, every figure in gpu_check.json (exit 1 if a step
# failed). On a CPU: `make gpu-check GPU_CHECK_ARGS="--smoke --device cpu"`.
GPU_CHECK_ARGS ?=
gpu-check: install
	$(BIN)/python scripts/gpu_check.py --out gpu_check.json $(GPU_CHECK_ARGS)

clean-venv:
	rm -rf $(VENV)
