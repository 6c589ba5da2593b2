# Convenience targets; CI runs `bash .ci/run`.
VENV ?= .venv
PY = $(VENV)/bin/python

.PHONY: install test test-gpu lint bench demo

install:            ## editable install with the test extras into $(VENV)
	python3 -m venv $(VENV) && $(PY) -m pip install -e ".[test]"

test:               ## the README's test command
	$(PY) -m pytest -q

test-gpu:           ## only the CUDA checks (on a machine with a GPU)
	$(PY) -m pytest -q -m gpu

lint:               ## the gates .ci/run enforces: ruff (zero findings) and mypy on src/ (zero errors)
	$(PY) -m ruff check src tests benchmarks && $(VENV)/bin/mypy

bench:              ## CPU throughput benchmark (results: benchmarks/results/throughput-cpu.md)
	$(PY) benchmarks/throughput.py

demo:               ## the embedded default: digits-LT, CC-SAM, about a minute on a CPU
	$(VENV)/bin/ccsam train
