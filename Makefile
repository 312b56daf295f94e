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
# LOCAL=1: use that local copy (make grid-parallel LOCAL=1, make sweep LOCAL=1, make repro LOCAL=1).
ifeq ($(LOCAL),1)
CIFAR_URL := file://$(LOCAL_CIFAR)
CIFAR_MD5 := $(LOCAL_CIFAR_MD5)
endif
# Experiments run at once by grid-parallel and sweep (each train stage uses train.blas_threads BLAS threads).
JOBS ?= 2
# Extra Hydra overrides for grid-parallel and sweep, e.g. OVERRIDES='train.epochs=5 preprocess.max_train=10000'
OVERRIDES ?=
DATA_OVERRIDES = $(if $(CIFAR_URL),data.url=$(CIFAR_URL) data.md5=$(CIFAR_MD5))
# The sweep: one combination, learning rate x regularization strength.
LOSS ?= softmax
REG ?= l2
LRS ?= 0.01,0.02,0.05
STRENGTHS ?= 1e-4,1e-3,1e-2
# The DVC remote that `make remote` configures: a shared directory, or s3://, ssh://, gs://... (those need
# the matching plugin, e.g. pip install dvc-s3). The default, ./dvc-remote (git-ignored), is for trying it out.
REMOTE ?= $(CURDIR)/dvc-remote

.PHONY: venv repro repro-local test test-fast test-release params ui server bench bench-stage bench-pipeline bench-grid clean grid-parallel sweep remote push pull

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
	dvc metrics show metrics/test.json
	column -s, -t reports/comparison.csv

# The whole pipeline on the CIFAR-10 copy in ../shared/data (no internet needed).
repro-local: venv
	$(MAKE) repro CIFAR_URL=file://$(LOCAL_CIFAR) CIFAR_MD5=$(LOCAL_CIFAR_MD5)

test: venv
	$(BIN)/python -m pytest

test-fast: venv
	$(BIN)/python -m pytest -m "not slow"

# Every test, also those marked release (deselected by `make test`).
test-release: venv
	$(BIN)/python -m pytest -m ""

# Recompose params.yaml from conf/ (DVC does this itself on `dvc exp run`).
params: venv
	$(BIN)/python -m linclass.plumbing.config

# The MLflow UI on the project's own store.
ui: venv
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port $(PORT) --workers 1

# A team tracking server: a database backend + an artifact store that the server serves (clients
# upload and download artifacts through it). Point the pipeline at it:
#   export MLFLOW_TRACKING_URI=http://<host>:$(PORT)
# HOST=0.0.0.0 lets other machines of the LAN in; SERVER_DB may be any SQLAlchemy URL
# (postgresql://...), SERVER_ARTIFACTS a shared folder or s3://... (with its plugin installed).
# (MLflow's GenAI job runner is switched off: linclass does not use it, and it starts 7 more processes.)
HOST ?= 127.0.0.1
SERVER_DB ?= sqlite:///$(CURDIR)/mlflow-server/mlflow.db
SERVER_ARTIFACTS ?= $(CURDIR)/mlflow-server/artifacts
server: venv
	mkdir -p mlflow-server/artifacts
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --backend-store-uri $(SERVER_DB) \
	  --artifacts-destination $(SERVER_ARTIFACTS) --serve-artifacts \
	  --host $(HOST) --port $(PORT) --workers 1

# The 8 loss x regularizer combinations as DVC experiments, JOBS at a time (dvc exp run --queue +
# dvc queue start -j JOBS), all logged to the project's MLflow store; then `dvc repro` assembles the
# whole pipeline in the workspace: every train stage comes from DVC's run-cache, only evaluation and
# the studies run. Compare with `dvc exp show` or in the MLflow UI.
grid-parallel: venv
	$(BIN)/python -m linclass.plumbing.sweep grid --jobs $(JOBS) $(DATA_OVERRIDES) $(OVERRIDES)
	dvc repro
	column -s, -t reports/comparison.csv

# Learning rate x regularization strength of one combination, JOBS at a time, selected on the
# validation split: make sweep LOSS=softmax REG=l2 LRS=0.01,0.02,0.05 STRENGTHS=1e-4,1e-3,1e-2
sweep: venv
	$(BIN)/python -m linclass.plumbing.sweep sweep --loss $(LOSS) --regularizer $(REG) --learning-rates $(LRS) \
	  --strengths $(STRENGTHS) --jobs $(JOBS) $(DATA_OVERRIDES) $(OVERRIDES)

# The team's DVC remote (written to .dvc/config: commit it). make remote REMOTE=/shared/linclass-dvc
remote: venv
	dvc remote add --default --force team $(REMOTE)
	dvc remote list

# Send every cached output to the remote / get them back (a fresh clone: git clone, then make pull).
push: venv
	dvc push

pull: venv
	dvc pull
	dvc status

bench: venv
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/bench_sgd.py

# Where the wall time of one train stage goes (real data if ../shared is there); goal wall / SGD <= 1.5x.
bench-stage: venv
	$(BIN)/python benchmarks/bench_stage.py

# The whole pipeline, serial (dvc exp run) and train stages two at a time (grid-parallel); goal <= 150 s.
bench-pipeline: venv
	$(BIN)/python benchmarks/bench_pipeline.py

# Wall time of the 8-combination grid with 1 and 2 queue workers (real data if ../shared is there; minutes).
bench-grid: venv
	$(BIN)/python benchmarks/bench_grid.py

clean:
	rm -rf data models reports/predictions metrics mlartifacts mlflow.db .dvc/cache .dvc/tmp
