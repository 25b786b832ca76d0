# Gradschool: two commands set everything up.
#   make lab    creates .venv if needed, then opens JupyterLab on curriculum/
#   make test   creates .venv if needed, then runs the whole test suite
# The environment is rebuilt only when requirements.txt or pyproject.toml change.

PYTHON ?= $(shell command -v python3.11 || command -v python3 || command -v python)
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
READY  := $(VENV)/.ready
# nbgrader starts `alembic` by name: the environment's own bin/ must be on PATH.
export PATH := $(BIN):$(PATH)
export MPLBACKEND ?= Agg
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)
JOBS ?= auto
NBGRADER_SERVER_EXTENSIONS := $(addprefix nbgrader.server_extensions.,formgrader validate_assignment assignment_list course_list)

.PHONY: lab test test-fast release export check-release grade bench gpu-smoke lint env clean-env help

help:
	@echo "make lab         open JupyterLab on curriculum/ (creates the environment first)"
	@echo "make test        run the whole suite (creates the environment first)"
	@echo "make test-fast   everything except executing notebooks"
	@echo "make release     regenerate curriculum/ (and gradschool/engine/) from solutions/"
	@echo "make export      regenerate gradschool/engine/ from solutions/02_engine/"
	@echo "make grade A=01_numpy S=path/to/submissions OUT=out/01_numpy"
	@echo "make bench       time and memory of every solution notebook"
	@echo "make gpu-smoke   one training step per stack on the GPU against the CPU (skips without one)"
	@echo "make lint        ruff"

env: $(READY)

$(READY): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed; install it, or run make PYTHON=/path/to/python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/jupyter server extension enable --sys-prefix $(NBGRADER_SERVER_EXTENSIONS) >/dev/null 2>&1
	$(BIN)/jupyter labextension enable @jupyter/nbgrader >/dev/null
	@touch $@

lab: $(READY)
	$(BIN)/jupyter lab --ServerApp.root_dir=curriculum $(ROOT_FLAG)

test: $(READY)
	$(BIN)/python -m pytest -n $(JOBS) --dist loadscope

test-fast: $(READY)
	$(BIN)/python -m pytest -n $(JOBS) --dist loadscope -m "not notebooks"

release: $(READY)
	$(BIN)/python -m autograder release

export: $(READY)
	$(BIN)/python -m autograder export

check-release: $(READY)
	$(BIN)/python -m autograder release --check

grade: $(READY)
	@test -n "$(A)" -a -n "$(S)" || { echo "usage: make grade A=<assignment> S=<submissions> [OUT=out/<assignment>]"; exit 2; }
	$(BIN)/python -m autograder grade $(A) $(S) --out $(or $(OUT),out/$(A))

bench: $(READY)
	$(BIN)/python -m bench

gpu-smoke: $(READY)
	$(BIN)/python -m bench gpu

lint: $(READY)
	$(BIN)/ruff check .

clean-env:
	rm -rf $(VENV)
