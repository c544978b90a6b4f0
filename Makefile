# Quick start (a fresh machine, CPU or GPU):  make demo   |   make test
# The venv is created on first use and refreshed when pyproject.toml or constraints.txt changes. Everything
# installs at the exact tested versions of constraints.txt; `make test-latest` tries the newest releases.
PYTHON ?= python3
VENV ?= .venv
PY = $(VENV)/bin/python
PIP = $(PY) -m pip
# `none`: resolve the newest releases (test-latest)
CONSTRAINTS ?= constraints.txt
PIN = $(if $(filter none,$(CONSTRAINTS)),,-c $(CONSTRAINTS))
# torch: with an NVIDIA GPU, pip's default index (a CUDA build). Without one, the CPU build: first from
# wherever pip's own configuration already provides it (find-links, a mirror: seconds, offline), else from
# PyTorch's CPU index (about 200 MB, where PyPI's Linux wheel pulls the multi-GB CUDA stack). torch's own
# dependencies then come with the package install below, from pip's usual index.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
EXTRAS ?= dev
# -qq: pip's errors only (its warnings about this machine's index configuration would drown the demo's output)
PIPQ ?= -qq

.PHONY: demo test test-all test-latest install torch lock clean

$(VENV)/.installed: pyproject.toml $(filter-out none,$(CONSTRAINTS))
	@echo "installing into $(VENV): torch, then glue-lora[$(EXTRAS)] $(if $(PIN),at the tested versions ($(CONSTRAINTS)),at the newest versions)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install $(PIPQ) --upgrade pip
	@$(MAKE) --no-print-directory torch VENV=$(VENV) CONSTRAINTS=$(CONSTRAINTS)
	@$(PIP) install $(PIPQ) $(PIN) -e ".[$(EXTRAS)]"
	@touch $@

install: $(VENV)/.installed

torch:
ifeq ($(HAS_GPU),yes)
	@echo "torch: the CUDA build from pip's index"
	@$(PIP) install $(PIPQ) --no-deps $(PIN) torch
else
	@$(PIP) install $(PIPQ) --no-deps --no-index $(PIN) torch 2>/dev/null && echo "torch: the CPU build pip's configuration provides" \
		|| { echo "torch: the CPU build from $(TORCH_CPU_INDEX)"; \
		     $(PIP) install $(PIPQ) --no-deps $(PIN) torch --index-url $(TORCH_CPU_INDEX); }
endif

demo: $(VENV)/.installed
	@$(PY) run_glue.py configs/demo.yaml resume=true   # a finished demo reports its result instead of refusing

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-all: $(VENV)/.installed
	$(PY) -m pytest -q -m ""

# The default suite against the newest releases pip can reach, in a fresh .venv-latest: run it where the
# package index is reachable, to meet a breaking release before users do.
test-latest:
	rm -rf .venv-latest
	$(MAKE) --no-print-directory test VENV=.venv-latest CONSTRAINTS=none

# Rewrite constraints.txt from .venv (after the suite passed on an upgraded set of packages).
lock: $(VENV)/.installed
	$(PY) tools/write_constraints.py

clean:
	rm -rf .venv .venv-latest runs build
