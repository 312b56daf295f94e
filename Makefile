# linclass: `make repro` runs the whole pipeline, `make test` runs the tests; `make` alone lists the targets.
# Every target that needs Python first creates .venv (Python 3.11) with the pinned dependencies.
# The targets are short aliases of the `linclass` command (.venv/bin/linclass --help).
SHELL := /bin/bash
.DEFAULT_GOAL := help
# .venv's interpreter: the distribution's Python 3.11 where there is one (Debian and Ubuntu build /usr/bin/python3.11
# with PGO and LTO, libpython linked in), else python3 on PATH. A pyenv build (neither; libpython3.11.so) spends
# about 12% more CPU on the pipeline's imports and on the tests (docs/benchmarks.md). PYTHON=... chooses another.
PYTHON ?= $(or $(wildcard /usr/bin/python3.11),python3)
VENV := .venv
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(BIN)):$(PATH)

# Where this machine reads the CIFAR-10 archive from is not a setting: $LINCLASS_DATA_URL (and
# LINCLASS_DATA_MD5), else the git-ignored local.env (the same KEY=value lines), else the official URL.
# Where a copy lies beside the project (../shared/data, the project's own machines), `make repro`,
# `make sweep` and `make grid-parallel` write local.env for it.
LOCAL_CIFAR := $(abspath ../shared/data/cifar-10-python.tar.gz)
LOCAL_CIFAR_MD5 := 2caa7800b270f2536e4e89f2ffa0be3f
DATA_SOURCE := $(if $(LINCLASS_DATA_URL),,$(if $(wildcard $(LOCAL_CIFAR)),local.env))

PORT ?= 5000
JOBS ?= 2
OVERRIDES ?=
SET ?=
LOSS ?= softmax
REG ?= l2
LRS ?= 0.01,0.02,0.05
STRENGTHS ?= 1e-4,1e-3,1e-2
FEATURES ?= pixels
BACKEND ?= local
REMOTE ?=
HOST ?= 127.0.0.1
KEY ?=
LINCLASS := $(BIN)/linclass

TARGETS := help lint lock-check venv venv-team repro exp params settings grid-parallel sweep compare experiments lecture \
	ui server store reap services-up services-down services-status user-add cluster-up cluster-down remote push pull \
	test test-fast test-release bench bench-stage bench-pipeline bench-grid bench-ray docs clean
.PHONY: $(TARGETS)

# A newcomer's slips, each one line before anything runs or installs: a mistyped target (make's own "No rule to
# make target" names no alternative), settings given to a target that does not read them (make repro SET=...
# ran the workspace's settings silently), a lower-case variable, or a setting given as a make variable
# (make exp train.epochs=5). Goals with a / or a . are files (.venv/bin/.cluster, local.env) and pass.
SETTINGS_GOALS := exp grid-parallel sweep
GIVEN_SETTINGS := $(strip $(foreach name,SET OVERRIDES,$(if $(filter command line,$(origin $(name))),$($(name)))))
WORD_GOALS := $(strip $(foreach goal,$(MAKECMDGOALS),$(if $(findstring /,$(goal))$(findstring .,$(goal)),,$(goal))))
UNKNOWN_GOAL := $(firstword $(filter-out $(TARGETS),$(WORD_GOALS)))
# the first goal that reads no settings: a word goal, else a file (local.env), else help (make alone)
READS_NONE := $(firstword $(filter-out $(SETTINGS_GOALS),$(or $(WORD_GOALS),$(MAKECMDGOALS),help)))
DOTTED := $(strip $(foreach name,$(.VARIABLES),$(if $(findstring .,$(name)),$(if $(filter command line,$(origin $(name))),$(name)=$($(name))))))
ifneq ($(UNKNOWN_GOAL),)
$(error error: no target $(UNKNOWN_GOAL)$(shell $(PYTHON) -c 'import difflib, sys; \
	close = difflib.get_close_matches(sys.argv[1], sys.argv[2:], 1); print(f"; did you mean make {close[0]}?" if close else "")' \
	'$(UNKNOWN_GOAL)' $(TARGETS) 2>/dev/null) (make help lists the targets))
else ifneq ($(filter command line,$(origin set) $(origin overrides)),)
$(error error: make's variables are upper case: SET='...' (or OVERRIDES='...'), e.g. make exp SET='train.epochs=5')
else ifneq ($(DOTTED),)
$(error error: $(firstword $(DOTTED)) is a setting, not a make variable: make exp SET='$(DOTTED)')
else ifneq ($(and $(GIVEN_SETTINGS),$(filter settings,$(READS_NONE))),)
$(error error: make settings lists settings and sets none: make settings KEY=$(firstword $(subst =, ,$(firstword \
	$(GIVEN_SETTINGS)))) lists those starting with it; make exp SET='...' runs an experiment)
else ifneq ($(and $(GIVEN_SETTINGS),$(READS_NONE)),)
$(error error: make $(READS_NONE) reads no SET or OVERRIDES \
	(only make exp, grid-parallel and sweep do): make exp SET='$(strip $(SET) $(OVERRIDES))' runs an experiment with them)
else ifneq ($(and $(filter command line,$(origin REMOTE)),$(filter-out remote,$(WORD_GOALS))),)
$(error error: make $(firstword $(filter-out remote,$(WORD_GOALS))) reads no REMOTE: make remote REMOTE=$(REMOTE) \
	sets the DVC remote once, then make push and make pull use it)
else ifneq ($(and $(filter remote,$(MAKECMDGOALS)),$(if $(REMOTE),,none)),)
$(error error: REMOTE is not set: make remote REMOTE=/shared/linclass-dvc (a folder every teammate reaches) or REMOTE=s3://bucket/path)
else ifneq ($(and $(filter user-add,$(MAKECMDGOALS)),$(if $(NAME),,none)),)
$(error error: NAME is not set: make user-add NAME=bob [GRANT=linclass-cifar10=READ])
endif

help: ## this list
	@echo "linclass: linear classifiers on CIFAR-10 with DVC, Hydra and MLflow. Targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  make \1\t\2/' | expand -t 26
	@echo "Settings: make exp SET='train.epochs=5'; every command: .venv/bin/linclass --help"

# uv installs exactly what uv.lock pins (every dependency, with hashes); uv itself comes from PyPI into .tools/
# when it is not on PATH. After editing the dependencies in pyproject.toml: uv lock (CI checks the lock is fresh).
# --compile-bytecode: the modules' .pyc files written once here, as pip does; uv leaves them to the first import,
# and where that cannot write them (PYTHONDONTWRITEBYTECODE, a read-only environment) every stage process
# compiled MLflow, pandas and DVC again: `import mlflow` 10.5 s instead of 3.4 s, measured on a loaded 2 cores.
UV_VERSION := 0.13.9
UV := $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
SYNC = $(UV) sync --frozen --compile-bytecode --python $(PYTHON)

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet uv==$(UV_VERSION)

$(BIN)/.installed: pyproject.toml uv.lock | $(UV)
	$(SYNC) --extra dev --quiet
	touch $@

venv: $(BIN)/.installed ## create .venv with the locked dependencies (uv.lock)

$(BIN)/.cluster: $(BIN)/.installed
	$(SYNC) --inexact --extra dev --extra cluster --quiet
	touch $@

$(BIN)/.team-installed: $(BIN)/.installed
	$(SYNC) --inexact --extra dev --extra team --quiet
	touch $@

venv-team: $(BIN)/.team-installed ## .venv plus the team stack's packages

$(BIN)/.docs: $(BIN)/.installed
	$(SYNC) --inexact --extra dev --extra docs --quiet
	touch $@

# This machine reads the archive from ../shared/data (written once; delete local.env to go online).
local.env:
	@test -f $(LOCAL_CIFAR) || { echo "error: $(LOCAL_CIFAR) does not exist; set LINCLASS_DATA_URL instead" >&2; exit 1; }
	printf 'LINCLASS_DATA_URL=file://%s\nLINCLASS_DATA_MD5=%s\n' $(LOCAL_CIFAR) $(LOCAL_CIFAR_MD5) > $@

repro: venv $(DATA_SOURCE) ## run the whole pipeline (download, preprocess, features, 8 models on pixels + 8 on features, studies, report)
	$(LINCLASS) repro

exp: venv ## one experiment in the workspace: make exp SET='train.epochs=5 regularizer.l2.strength=0.01'
	$(LINCLASS) exp $(SET) $(OVERRIDES)

params: venv ## compose conf/ into params.yaml (after editing conf/ by hand)
	$(LINCLASS) config

settings: venv ## every setting: default, what is allowed, what it means (KEY=train: only those under train)
	$(LINCLASS) settings $(KEY)

grid-parallel: venv $(DATA_SOURCE) $(if $(filter ray,$(BACKEND)),$(BIN)/.cluster) ## the 8 pixel combinations and the features models, JOBS at a time (BACKEND=ray: a Ray cluster)
	$(LINCLASS) grid --jobs $(JOBS) --backend $(BACKEND) $(OVERRIDES) $(SET)

sweep: venv $(DATA_SOURCE) $(if $(filter ray,$(BACKEND)),$(BIN)/.cluster) ## learning rate x strength: make sweep LOSS=softmax REG=l2 LRS=0.01,0.05 STRENGTHS=1e-4,1e-3 (FEATURES=hog_hist)
	$(LINCLASS) sweep --loss '$(LOSS)' --regularizer '$(REG)' --learning-rates '$(LRS)' --strengths '$(STRENGTHS)' \
	  --features '$(FEATURES)' --jobs $(JOBS) --backend $(BACKEND) $(OVERRIDES) $(SET)

compare: venv ## every trained model: settings that differ, validation and test accuracy
	$(LINCLASS) compare

experiments: venv ## each commit and experiment: its champion, its accuracies, the settings that differ
	$(LINCLASS) experiments

lecture: venv ## the lecture's worked examples computed (scores, SVM and softmax losses, W against 2W)
	$(LINCLASS) lecture

ui: venv ## the MLflow UI on the project's store (prints the link to the runs)
	$(LINCLASS) ui --port $(PORT)

server: venv ## a tracking server that answers its token (it prints the export line for MLflow clients)
	$(LINCLASS) server --host $(HOST) --port $(PORT)

store: venv ## create the MLflow store once (before pipelines share it)
	$(LINCLASS) store

reap: venv ## mark KILLED the MLflow runs whose process is gone
	$(LINCLASS) reap

services-up: venv-team ## the team stack: PostgreSQL, MLflow with logins, a DVC remote
	$(LINCLASS) services up

services-down: venv-team ## stop the team stack (data kept)
	$(LINCLASS) services down

services-status: venv-team ## which parts of the team stack answer
	$(LINCLASS) services status

user-add: venv-team ## a teammate's account: make user-add NAME=bob [GRANT=linclass-cifar10=READ]
	$(LINCLASS) services add-user '$(NAME)' $(if $(GRANT),--grant '$(GRANT)')

cluster-up: $(BIN)/.cluster ## a Ray cluster on this machine (127.0.0.2 and 127.0.0.3)
	$(LINCLASS) cluster up

cluster-down: $(BIN)/.cluster ## stop it
	$(LINCLASS) cluster down

# a folder's path as the kernel reads it (REMOTE=$$PWD/../linclass-dvc: without the ..); URLs as given. A folder is
# shared with its group (DVC writes files 0664, folders 2775): with the user's umask, the folders the first push made
# were theirs alone, and every teammate's push failed with Permission denied.
remote: venv ## the team's DVC remote (commit .dvc/config): make remote REMOTE=/shared/linclass-dvc
	url='$(REMOTE)'; case "$$url" in /*) url=$$(realpath -m -- "$$url");; esac; \
	dvc remote add --default --force team "$$url"; \
	case "$$url" in *://*) dvc remote modify --unset team shared;; *) dvc remote modify team shared group;; esac
	dvc remote modify team verify true  # each file fetched is checked against its md5: one a teammate changed is refused
	dvc remote list

push: venv ## send outputs and the run-cache to the DVC remote
	$(LINCLASS) push

pull: venv ## get them in a fresh clone
	$(LINCLASS) pull

lint: venv lock-check ## ruff (lint) and mypy (types) on the whole tree; uv.lock matches pyproject.toml
	$(BIN)/ruff check .
	$(BIN)/mypy

lock-check: | $(UV)
	$(UV) lock --check

# --no-loadscope-reorder: the modules in tests/conftest.py's order (longest first), not xdist's (most tests first)
test: venv ## every test but the release-only ones (three workers, each module whole on one)
	$(BIN)/python -m pytest -n 3 --dist loadfile --no-loadscope-reorder --durations=15

test-fast: venv ## the tests without the slow end-to-end runs
	$(BIN)/python -m pytest -m "not slow"

test-release: venv ## every test
	$(BIN)/python -m pytest -m ""

bench: venv ## SGD epoch against its floors and scikit-learn
	$(SYNC) --inexact --extra dev --extra bench --quiet
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/bench_sgd.py

bench-stage: venv ## where one train stage's wall time goes
	$(BIN)/python benchmarks/bench_stage.py

bench-pipeline: venv ## the whole pipeline, serial and two at a time
	$(BIN)/python benchmarks/bench_pipeline.py

bench-grid: venv ## the grid with 1 and 2 queue workers
	$(BIN)/python benchmarks/bench_grid.py

bench-ray: $(BIN)/.cluster ## a Ray sweep on 1 node and 2
	$(BIN)/python benchmarks/bench_ray.py

docs: $(BIN)/.docs ## the docs site into site/ (mkdocs build --strict: a broken link fails)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean: ## remove data, models, metrics, reports/predictions and /evaluation, DVC's cache with its run-cache (everything trains again), the local MLflow store
	rm -rf data models reports/predictions reports/evaluation metrics mlartifacts mlflow.db mlflow.db.lock .dvc/cache .dvc/tmp
