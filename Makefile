# `make test` and `make demo` set everything up on a fresh machine, then do their job.
#   make setup [ACCEL=cpu|cuda12|cuda13|tpu] [PYTHON=python3.12] [LOCKED=1]
# ACCEL picks the JAX build (requirements-<ACCEL>.txt; cpu: requirements.txt). The venv's
# Python: scripts/make_venv.sh (PYTHON, else the first 3.12, 3.13 or 3.11 found, else
# Python 3.12 from uv). LOCKED=1 installs the exact transitive versions and hashes of the
# matching .lock file instead (`make lock` rewrites the locks; needs network and uv).
ACCEL ?= cpu
ifeq ($(filter $(ACCEL),cpu cuda12 cuda13 tpu),)
$(error ACCEL=$(ACCEL): expected cpu, cuda12, cuda13 or tpu)
endif
VENV := .venv
PY := $(VENV)/bin/python
REQUIREMENTS := $(if $(filter cpu,$(ACCEL)),requirements.txt,requirements-$(ACCEL).txt)
LOCK = $(REQUIREMENTS:.txt=.lock)
INSTALL_FROM := $(if $(LOCKED),--require-hashes -r $(LOCK),-r $(REQUIREMENTS))
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

.PHONY: setup fashion-mnist test demo reproduce reproduce-quick check-requirements lock clean

setup: $(STAMP) fashion-mnist

$(STAMP): $(REQUIREMENTS) requirements.txt pyproject.toml
	test -x $(PY) || PYTHON=$(PYTHON) scripts/make_venv.sh $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(INSTALL_FROM)
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
	$(TEST_ENV) $(PY) -m pytest -q -n $(TEST_WORKERS) --durations=15 tests

demo: setup
	$(RUN_ENV) $(PY) scripts/demo.py --config configs/demo.py --workdir workdirs/demo

reproduce: setup
	$(RUN_ENV) $(PY) scripts/reproduce.py

reproduce-quick: setup
	$(RUN_ENV) $(PY) scripts/reproduce.py --quick

# Whether every requirement file installs from wheels on Linux x86_64 / aarch64 and macOS
# arm64, Python 3.11-3.13 (asks PyPI; CI runs it), and rewriting the locks from them.
check-requirements: $(TEST_STAMP)
	$(PY) scripts/check_requirements.py

lock: $(TEST_STAMP)
	$(PY) scripts/check_requirements.py --write_locks

clean:
	rm -rf $(VENV) .pytest_cache
