# milvus-probe developer commands. `make demo` and `make test` work on a fresh Debian
# machine with python3 (and python3-venv); everything else is installed into .venv.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=
MILVUS_PORT ?= 19530
PROBE_PORT  ?= 9091

.PHONY: help venv test demo proto lint clean

help:
	@echo "make demo   start a local Milvus (milvus-lite) and the probe against it on :9091"
	@echo "make test   run the whole test suite"
	@echo "make proto  regenerate probe/milvus/wire_pb2.py from wire.proto"
	@echo "make lint   ruff and mypy"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,dev]'
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

demo: venv
	MILVUS_PORT=$(MILVUS_PORT) PROBE_PORT=$(PROBE_PORT) $(PY) scripts/demo.py

proto: venv
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. probe/milvus/wire.proto probe/pprof/profile.proto

lint: venv
	$(VENV)/bin/ruff check probe tests scripts
	$(VENV)/bin/mypy probe

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
