# linclass: `make repro` runs the whole pipeline, `make test` runs the tests.
# Both create .venv (Python 3.11) and install the pinned dependencies first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(BIN)):$(PATH)

# Where this machine reads the CIFAR-10 archive from is not a parameter: $LINCLASS_DATA_URL (and
# LINCLASS_DATA_MD5), else the git-ignored local.env (the same KEY=value lines), else the official URL
# in params.yaml. On machines with the copy beside the project (../shared/data), `make local-data`
# writes local.env for it, and `make repro` / `make sweep` / `make grid-parallel` do so by themselves.
LOCAL_CIFAR := $(abspath ../shared/data/cifar-10-python.tar.gz)
LOCAL_CIFAR_MD5 := 2caa7800b270f2536e4e89f2ffa0be3f
DATA_SOURCE := $(if $(LINCLASS_DATA_URL),,$(if $(wildcard $(LOCAL_CIFAR)),local.env))
PORT ?= 5000
# Experiments run at once by grid-parallel and sweep (each train stage uses train.blas_threads BLAS threads).
JOBS ?= 2
# Extra Hydra overrides for grid-parallel and sweep, e.g. OVERRIDES='train.epochs=5 preprocess.max_train=10000'
OVERRIDES ?=
# The sweep: one combination, learning rate x regularization strength.
LOSS ?= softmax
REG ?= l2
LRS ?= 0.01,0.02,0.05
STRENGTHS ?= 1e-4,1e-3,1e-2
# The DVC remote that `make remote` configures: a shared directory, or s3://, ssh://, gs://... (those need
# the matching plugin, e.g. pip install dvc-s3). The default, ./dvc-remote (git-ignored), is for trying it out.
REMOTE ?= $(CURDIR)/dvc-remote

# One pipeline at a time in this workspace: a second `make repro` / `make exp` / `make params` refuses at
# once, before touching params.yaml (run experiments side by side with the queue: grid-parallel, sweep).
ONE_AT_A_TIME = $(BIN)/python -m linclass.orchestration.workspace

# Where grid-parallel and sweep run: the local DVC queue (default), or BACKEND=ray: a Ray cluster
# (RAY_ADDRESS=<head>:<port>, default the one of `make cluster-up`; needs MLFLOW_TRACKING_URI=http://...,
# a default DVC remote and HEAD pushed to the git remote origin: see README).
BACKEND ?= local
ifeq ($(BACKEND),ray)
SWEEP_CLI = $(BIN)/python -m linclass.orchestration.ray_backend
SWEEP_JOBS =
else
SWEEP_CLI = $(BIN)/python -m linclass.orchestration.sweep
SWEEP_JOBS = --jobs $(JOBS)
endif

.PHONY: exp reap venv venv-team services-up services-down services-status user-add repro local-data compare experiments test test-fast test-release params ui server bench bench-stage bench-pipeline bench-grid bench-ray clean grid-parallel sweep remote push pull cluster-up cluster-down

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

# Ray for BACKEND=ray and the local cluster (the `cluster` extra).
$(BIN)/.cluster: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,cluster]'
	touch $@

# The team stack's packages (MLflow basic auth, PostgreSQL driver, DVC on S3, a local S3 for tests).
$(BIN)/.team-installed: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,team]'
	touch $@

venv-team: $(BIN)/.team-installed

repro: venv $(DATA_SOURCE)
	$(ONE_AT_A_TIME) dvc repro
	dvc metrics show metrics/test.json
	column -s, -t reports/comparison.csv

# This machine reads the archive from ../shared/data (written once; delete local.env to go online).
local.env:
	@test -f $(LOCAL_CIFAR) || { echo "error: $(LOCAL_CIFAR) does not exist; set LINCLASS_DATA_URL instead (README: Where the data comes from)" >&2; exit 1; }
	printf 'LINCLASS_DATA_URL=file://%s\nLINCLASS_DATA_MD5=%s\n' $(LOCAL_CIFAR) $(LOCAL_CIFAR_MD5) > $@

local-data: local.env
	cat local.env

# Two pytest workers, each test module whole on one of them (its module-scoped servers and projects are
# made once), the longest modules first (tests/conftest.py: LONGEST_FIRST).
test: venv
	$(BIN)/python -m pytest -n 2 --dist loadfile

test-fast: venv
	$(BIN)/python -m pytest -m "not slow"

# Every test, also those marked release (deselected by `make test`).
test-release: venv
	$(BIN)/python -m pytest -m ""

# An experiment in the workspace: make exp SET='train.epochs=30 regularizer.l2.strength=0.01'
SET ?=
exp: venv
	$(ONE_AT_A_TIME) dvc exp run $(foreach s,$(SET),-S '$(s)')

# Mark KILLED the MLflow runs of this machine whose process is gone (every stage also does it at its start).
reap: venv
	$(BIN)/python -m linclass.plumbing.tracking reap

# Recompose params.yaml from conf/ (DVC does this itself on `dvc exp run`).
params: venv
	$(ONE_AT_A_TIME) $(BIN)/python -m linclass.plumbing.config

# Every MLflow server of the project runs the app `linclass` (linclass/orchestration/guard.py): routes that
# would run commands on this host or change the server's configuration (MLflow's AI assistant, jobs, the AI
# gateway, webhooks...) are refused, artifacts stay under the server's root, malformed requests get a 400.
# Uvicorn does not trust X-Forwarded-For (any local user could send one).
MLFLOW_APP := --app-name linclass --uvicorn-opts --no-proxy-headers

# The MLflow UI on the project's own store.
ui: venv
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port $(PORT) --workers 1 $(MLFLOW_APP)

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
	  --host $(HOST) --port $(PORT) --workers 1 $(MLFLOW_APP)

# The team stack in .services/ (git-ignored): PostgreSQL, the MLflow server with basic auth on it (app
# linclass-team), a DVC remote folder; as root they run as the unprivileged account linclass-stack. Settings
# are environment variables, e.g. make services-up LINCLASS_HOST=0.0.0.0 LINCLASS_MLFLOW_PORT=5000 (see
# docs/team.md and linclass/orchestration/services.py). services-up starts whichever part is down;
# services-status exits non-zero unless every part answers (a real query on the database).
services-up: venv-team
	$(BIN)/python -m linclass.orchestration.services up

services-down: venv-team
	$(BIN)/python -m linclass.orchestration.services down

services-status: venv-team
	$(BIN)/python -m linclass.orchestration.services status

# A teammate's account: make user-add NAME=bob [GRANT=linclass-cifar10=READ]; hand them .services/users/bob.env.
# The DVC remote is theirs once their login is in the team's group: usermod -aG linclass-team bob (docs/team.md).
user-add: venv-team
	$(BIN)/python -m linclass.orchestration.services add-user $(NAME) $(if $(GRANT),--grant $(GRANT))

# The loss x regularizer combinations of conf/ (grid.losses x grid.regularizers) as DVC experiments,
# JOBS at a time (dvc exp run --queue per point, then dvc exp run --run-all -j JOBS), all logged to the
# project's MLflow store; then the whole pipeline is assembled from DVC's run-cache (no training
# again; evaluation and the studies run): `dvc repro`, or with OVERRIDES the experiment grid-all
# (`dvc exp apply grid-all` brings it into the workspace). params.yaml stays as committed.
grid-parallel: venv $(DATA_SOURCE) $(if $(filter ray,$(BACKEND)),$(BIN)/.cluster)
	$(ONE_AT_A_TIME) $(SWEEP_CLI) grid $(SWEEP_JOBS) $(OVERRIDES)
ifeq ($(strip $(OVERRIDES)),)
	$(ONE_AT_A_TIME) dvc repro
	column -s, -t reports/comparison.csv
else
	dvc exp run --temp -n grid-all $(foreach o,$(OVERRIDES),-S '$(o)')
endif

# Learning rate x regularization strength of one combination, JOBS at a time, selected on the
# validation split: make sweep LOSS=softmax REG=l2 LRS=0.01,0.02,0.05 STRENGTHS=1e-4,1e-3,1e-2
# Its table goes to sweeps/<LOSS>-<REG>.csv; the heat map to reports/hyperparameter_map/<LOSS>-<REG>.png.
sweep: venv $(DATA_SOURCE) $(if $(filter ray,$(BACKEND)),$(BIN)/.cluster)
	$(ONE_AT_A_TIME) $(SWEEP_CLI) sweep --loss $(LOSS) --regularizer $(REG) --learning-rates $(LRS) \
	  --strengths $(STRENGTHS) $(SWEEP_JOBS) $(OVERRIDES)
	$(ONE_AT_A_TIME) dvc repro hyperparameter_map

# dvc exp show with the columns people compare: the settings of the grid and the sweeps, validation
# and test accuracy; --only-changed keeps those that differ between the rows shown.
EXP_COLUMNS ?= Experiment|Created|.*\.test_accuracy|.*:val_accuracy|grid\..*|train\.(epochs|batch_size|learning_rate)|loss\..*|regularizer\..*
experiments: venv
	dvc exp show --no-pager --only-changed --drop '.*' --keep '$(EXP_COLUMNS)'

# Every trained model of the workspace and of the DVC experiments: combination, the settings that
# differ, validation and test accuracy (from dvc exp show --json).
compare: venv
	$(BIN)/python -m linclass.orchestration.sweep compare

# A Ray cluster on this machine: head 127.0.0.2:6390 and a worker on 127.0.0.3, one CPU each, no dashboard.
cluster-up: $(BIN)/.cluster
	$(BIN)/python -m linclass.orchestration.cluster up

cluster-down: $(BIN)/.cluster
	$(BIN)/python -m linclass.orchestration.cluster down

# The team's DVC remote (written to .dvc/config: commit it). make remote REMOTE=/shared/linclass-dvc
remote: venv
	dvc remote add --default --force team $(REMOTE)
	dvc remote list

# Send every cached output and the run-cache to the remote / get them back (a fresh clone: git clone,
# then make pull). The remote is checked first: unreachable is one line, and nothing moves.
push: venv
	$(BIN)/python -m linclass.orchestration.remote push

pull: venv
	$(BIN)/python -m linclass.orchestration.remote pull

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

# Ray sweep throughput on 1 node vs 2, and the per-point overhead (clone + pull + push) against training.
bench-ray: $(BIN)/.cluster
	$(BIN)/python benchmarks/bench_ray.py

clean:
	rm -rf data models reports/predictions reports/evaluation metrics mlartifacts mlflow.db mlflow.db.lock .dvc/cache .dvc/tmp
