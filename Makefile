# The course's commands. `make run` and `make test` set everything up on a fresh machine.
#   make run   [DATA_DIR=folder]   all notebooks, headless, full parameters, into runs/<time>/
#   make test  [DATA_DIR=folder]   the test suite (quick notebook runs, nbval, unit tests)
#   make check                      fast static checks: notebook pairs, code style
#   make lab                        JupyterLab on the notebooks
#   make bench [DATA_DIR=folder]   fast training path against the plain torchvision pipeline
#   make sync [FROM=py|ipynb]       make each notebook pair agree from its side edited since HEAD
#   make store RUN=runs/<time>      keep a run's executed notebooks (outputs) in notebooks/

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA_DIR ?= $(MNIST_DATA_DIR)
# A relative DATA_DIR is taken from here, the repository root: nbval and papermill start the
# kernels in notebooks/, where the same relative path would point elsewhere. (Not $(abspath):
# it would split a folder name with spaces.)
DATA_IS_ABSOLUTE := $(filter /% ~%,$(firstword $(DATA_DIR)))
DATA_PATH := $(if $(strip $(DATA_DIR)),$(if $(DATA_IS_ABSOLUTE),$(DATA_DIR),$(CURDIR)/$(DATA_DIR)))
ifneq ($(DATA_PATH),)
export MNIST_DATA_DIR := $(DATA_PATH)
endif

.PHONY: venv run test check lab bench sync store clean-venv

venv: $(STAMP)

# The environment is made from requirements.txt when missing or older than it.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m utils.course run --data-dir "$(DATA_PATH)"

test: $(STAMP)
	$(PY) -m pytest

check: $(STAMP)
	$(PY) -m utils.pairs notebooks
	$(PY) -m ruff check utils tests notebooks conftest.py

# Jupyter refuses to start as root unless told; containers often run as root.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks

bench: $(STAMP)
	$(PY) -m utils.benchmark --data-dir "$(DATA_PATH)" --full

sync: $(STAMP)
	$(PY) -m utils.pairs --sync $(if $(FROM),--from $(FROM)) notebooks

store: $(STAMP)
	test -n "$(RUN)" || { echo "usage: make store RUN=runs/<time>"; exit 2; }
	$(PY) -m utils.course store "$(RUN)"
	$(MAKE) sync

clean-venv:
	rm -rf $(VENV)
