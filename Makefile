# Every target sets itself up on a fresh machine: a virtual env in .venv, torch first
# (the CPU build where no GPU is visible, so no multi-GB CUDA download), then the project
# with its test tools and the robotics tasks (gymnasium-robotics, mujoco 3.11.0).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
CORES ?= 2

# Without nvidia-smi, take the CPU wheel: a wheel pip already finds offline (a local
# wheel directory) first, else PyTorch's CPU index. With a GPU, PyPI's default (CUDA) wheel.
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo yes)
ifeq ($(HAS_GPU),yes)
INSTALL_TORCH = $(BIN)/pip install --quiet "torch==$(TORCH_VERSION)"
else
INSTALL_TORCH = ($(BIN)/pip install --quiet --no-index --no-deps "torch==$(TORCH_VERSION)" 2>/dev/null \
	 || $(BIN)/pip install --quiet --no-deps "torch==$(TORCH_VERSION)" \
	    --extra-index-url https://download.pytorch.org/whl/cpu) \
	&& $(BIN)/pip install --quiet "torch==$(TORCH_VERSION)"
endif

.PHONY: setup run figures test lint clean-results

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(INSTALL_TORCH)
	$(BIN)/pip install --quiet -e ".[dev,robotics]"
	touch $@

setup: $(BIN)/.installed

# The workflow's rules call `reengage` and `python`: the venv goes first on PATH.
run: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --cores $(CORES)
	@echo "report: results/report.md   figures: results/figures/   tables: results/tables/"

# Redraw a results folder's figures from its tables alone (no training logs needed):
#   make figures RESULTS=results/reference/default
RESULTS ?= results
CONFIG ?= config/default.yaml
figures: setup
	$(BIN)/python -m reengage.analysis.redraw $(RESULTS) --config $(CONFIG)

test: setup
	$(BIN)/ruff check .
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check .

clean-results:
	rm -rf results/runs results/tables results/figures results/report.md
