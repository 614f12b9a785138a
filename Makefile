# thermotrain — the two commands of the README are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: setup run test test-slow lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch is pinned exactly so pip never resolves a (multi-GB) CUDA build.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	# --resume: a second `make run` finishes or re-reports the same run instead of failing
	$(VENV)/bin/thermotrain run notebook-4turn --out runs/notebook-4turn --resume

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/step_overhead.py
	$(PY) benchmarks/step_vs_baseline.py
	$(PY) benchmarks/ensemble_throughput.py
	$(PY) benchmarks/fig15_sweep.py
	$(PY) benchmarks/landscape_speed.py
	$(PY) benchmarks/temperature_hooks.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
