# chexflow: make demo | make test | make lint | make bench
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch + torchvision must be a matching pair (timm imports torchvision). The default pair is
# what pip resolves on the project's CI machine (PyPI's x86_64 wheels: a CUDA build, ~5.5 GB with
# its nvidia/ and triton/ libraries). On a host without a GPU that reaches PyTorch's CPU index,
# `make install TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu` installs the CPU build
# (~1 GB); GPU hosts keep the default or name their CUDA index the same way.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
TORCH_INDEX_URL ?=
TORCH_INDEX_ARGS := $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)
export MLFLOW_DISABLE_TELEMETRY=true
export DO_NOT_TRACK=1
export PREFECT_SERVER_ANALYTICS_ENABLED=false

.PHONY: install demo demo-quick test test-fast lint format bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_INDEX_ARGS) $(TORCH_SPEC) || { \
	  echo "make install: pip could not install '$(TORCH_SPEC)'. Pick a torch/torchvision pair this machine can reach: make install TORCH_SPEC='torch==X torchvision==Y' [TORCH_INDEX_URL=...]" >&2; exit 2; }
	$(PY) -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'CUDA build' if torch.version.cuda else 'CPU build')" || { \
	  echo "make install: torch and torchvision do not import together; they must be a matching pair (set TORCH_SPEC)" >&2; exit 2; }
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
