# linclass: `make repro` runs the whole pipeline, `make test` runs the tests.
# Both create .venv (Python 3.11) and install the pinned dependencies first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(BIN)):$(PATH)

# A mirror or a local copy of the archive: make repro CIFAR_URL=file:///abs/path.tar.gz CIFAR_MD5=<its md5>
CIFAR_URL ?=
CIFAR_MD5 ?=
# The copy beside this project on machines without internet (see README).
LOCAL_CIFAR := $(abspath ../shared/data/cifar-10-python.tar.gz)
LOCAL_CIFAR_MD5 := 2caa7800b270f2536e4e89f2ffa0be3f
PORT ?= 5000

.PHONY: venv repro repro-local test test-fast params ui server bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

repro: venv
ifeq ($(CIFAR_URL),)
	dvc repro
else
	dvc exp run -S 'data.url=$(CIFAR_URL)' -S 'data.md5=$(CIFAR_MD5)'
endif
	dvc metrics show

# The whole pipeline on the CIFAR-10 copy in ../shared/data (no internet needed).
repro-local: venv
	$(MAKE) repro CIFAR_URL=file://$(LOCAL_CIFAR) CIFAR_MD5=$(LOCAL_CIFAR_MD5)

test: venv
	$(BIN)/python -m pytest

test-fast: venv
	$(BIN)/python -m pytest -m "not slow"

# Recompose params.yaml from conf/ (DVC does this itself on `dvc exp run`).
params: venv
	$(BIN)/python -m linclass.config

# The MLflow UI on the project's own store.
ui: venv
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port $(PORT) --workers 1

# A team tracking server: sqlite backend + served artifact store under mlflow-server/.
# Point the pipeline at it: export MLFLOW_TRACKING_URI=http://<host>:$(PORT)
server: venv
	mkdir -p mlflow-server/artifacts
	$(BIN)/mlflow server --backend-store-uri sqlite:///$(CURDIR)/mlflow-server/mlflow.db \
	  --artifacts-destination $(CURDIR)/mlflow-server/artifacts --serve-artifacts \
	  --host 127.0.0.1 --port $(PORT) --workers 1

bench: venv
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/bench_sgd.py

clean:
	rm -rf data models reports/predictions metrics mlartifacts mlflow.db .dvc/cache .dvc/tmp
