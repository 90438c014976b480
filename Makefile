# `make test` and `make demo` set everything up on a fresh machine, then do their job.
#   make setup [ACCEL=cpu|cuda12|cuda13|tpu] [PYTHON=python3.12]
# ACCEL picks the JAX build (requirements-<ACCEL>.txt; cpu: requirements.txt). PYTHON
# defaults to the first of python3.11, 3.12, 3.13 (or python3 if it is one of them).
ACCEL ?= cpu
ifeq ($(filter $(ACCEL),cpu cuda12 cuda13 tpu),)
$(error ACCEL=$(ACCEL): expected cpu, cuda12, cuda13 or tpu)
endif
PYTHON ?= $(shell for p in python3.11 python3.12 python3.13 python3; do \
  $$p -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' >/dev/null 2>&1 \
  && { echo $$p; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
REQUIREMENTS := $(if $(filter cpu,$(ACCEL)),requirements.txt,requirements-$(ACCEL).txt)
STAMP := $(VENV)/.installed-$(ACCEL)
TEST_STAMP := $(VENV)/.installed-test
FMNIST_DIR := /usr/share/datasets/fashion-mnist
# Tests and multi-device examples simulate 8 CPU devices.
TEST_ENV := XLA_FLAGS=--xla_force_host_platform_device_count=8 TF_CPP_MIN_LOG_LEVEL=2
# Two pytest workers: one compiles or starts a subprocess while the other computes.
TEST_WORKERS ?= 2
# On a CPU, two simulated devices train the small twins faster than one (two XLA
# threads at work, docs/performance.md); on a GPU host the flag only touches the
# CPU platform.
RUN_ENV := XLA_FLAGS=--xla_force_host_platform_device_count=2

.PHONY: setup fashion-mnist test demo reproduce reproduce-quick clean

setup: $(STAMP) fashion-mnist

$(STAMP): $(REQUIREMENTS) requirements.txt pyproject.toml
	@test -n "$(PYTHON)" || { echo "no Python 3.11-3.13 found: install one, or pass PYTHON=..."; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r $(REQUIREMENTS)
	$(PY) -m pip install --quiet --no-deps -e . --config-settings editable_mode=compat
	touch $(STAMP)

$(TEST_STAMP): requirements-test.txt $(STAMP)
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $(TEST_STAMP)

# Debian's dataset-fashion-mnist: the small real dataset for the demo and the tests.
fashion-mnist:
	@if [ ! -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y --no-install-recommends dataset-fashion-mnist || \
	     (apt-get update && apt-get install -y --no-install-recommends dataset-fashion-mnist)) >/dev/null; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	    sudo apt-get install -y --no-install-recommends dataset-fashion-mnist >/dev/null; \
	  else \
	    echo "note: $(FMNIST_DIR) is missing and apt is not usable; tests that need Fashion-MNIST will fail"; \
	  fi; \
	fi

test: setup $(TEST_STAMP)
	$(TEST_ENV) $(PY) -m pytest -q -n $(TEST_WORKERS) tests

demo: setup
	$(RUN_ENV) $(PY) scripts/demo.py --config configs/demo.py --workdir workdirs/demo

reproduce: setup
	$(RUN_ENV) $(PY) scripts/reproduce.py

reproduce-quick: setup
	$(RUN_ENV) $(PY) scripts/reproduce.py --quick

clean:
	rm -rf $(VENV) .pytest_cache
