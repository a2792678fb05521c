# chexflow: make demo | make test | make lint | make bench
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Pinned so pip takes the builds that lie on this machine's disk; override on GPU hosts.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
export MLFLOW_DISABLE_TELEMETRY=true
export DO_NOT_TRACK=1
export PREFECT_SERVER_ANALYTICS_ENABLED=false

.PHONY: install demo demo-quick test test-fast lint format bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e '.[dev,postgres,auth]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/chexflow demo

demo-quick: install
	$(VENV)/bin/chexflow demo --quick

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install
	$(PY) -m bench.run_all

clean:
	rm -rf .chexflow .pytest_cache
