# Quick start (a fresh machine, offline, CPU):  make demo   |   make test
# The venv is created on first use and refreshed when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# No NVIDIA GPU: pin the CPU torch wheel first (on this kind of machine pip finds it on local disk, in seconds).
# With a GPU, pip resolves torch from pyproject's range to a CUDA build. Override with TORCH_SPEC=...
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "" || echo "torch==2.13.0")

.PHONY: demo test test-all install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH_SPEC),$(PY) -m pip install -q "$(TORCH_SPEC)")
	$(PY) -m pip install -q -e ".[dev,demo]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) run_glue.py configs/demo.yaml resume=true   # a finished demo reports its result instead of refusing

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-all: $(VENV)/.installed
	$(PY) -m pytest -q -m ""

clean:
	rm -rf $(VENV) runs
