"""The parallel grid (`make grid-parallel`: python -m linclass.orchestration.sweep grid, then dvc repro) on real DVC
queue workers.

One module fixture runs the grid once: 2 queued DVC experiments (the copy's conf/ declares svm and softmax
with L2), 2 at a time, with tiny training, all logging to the project's own sqlite store from
DVC's temporary copies under .dvc/tmp/exps/.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from conftest import BIN, SMALL, make_project, shrink_conf, warm_stages

from linclass.orchestration.sweep import experiment_rows, experiment_states

EXPERIMENT = "linclass-cifar10"
GRID = [f"{loss}-{reg}" for loss in ("svm", "softmax") for reg in ("l2",)]   # two: as many as the workers
GRID_CONF = ("grid.losses=[svm,softmax]", "grid.regularizers=[l2]")
TINY = ("train.epochs=1",)


def overrides_for(path: Path, md5: str) -> list[str]:
    shrink = [o for o in SMALL if o.split("=")[0] not in {t.split("=")[0] for t in TINY}]
    return [f"data.url={path.as_uri()}", f"data.md5={md5}", *shrink, *TINY]


@pytest.fixture(scope="module")
def grid(tmp_path_factory, synthetic_archive):
    """A project after `python -m linclass.orchestration.sweep grid --jobs 2 ...`, and that command's output."""
    path, md5 = synthetic_archive
    project = make_project(tmp_path_factory.mktemp("parallel") / "project", overrides_for(path, md5))
    shrink_conf(project, (*overrides_for(path, md5), *GRID_CONF))   # the grid comes from conf/
    try:
        # the timeout bounds the grid; a DVC process left holding its output (which subprocess would still wait
        # for after the timeout) is what test_no_queue_worker_outlives_the_grid looks for
        done = project.run(str(BIN / "python"), "-m", "linclass.cli", "grid", "--jobs", "2",
                           *overrides_for(path, md5), timeout=420)
        project.grid_output = done.stdout
        # what `dvc exp show --json` says of the grid's experiments, asked once (1-2 s of CPU a call): the tests
        # below change the workspace only, not the experiments
        project.shown = json.loads(project.dvc("exp", "show", "--json").stdout)
        yield project
    finally:
        project.dvc("queue", "stop", "--kill", check=False)


def store_runs(project):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(project.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


@pytest.mark.slow
def test_grid_runs_two_at_a_time_and_every_run_lands_in_mlflow(grid):
    project = grid
    states = experiment_states(project.shown)
    assert {name: states.get(f"grid-{name}") for name in GRID} == {name: "success" for name in GRID}
    assert not project.run("git", "status", "--porcelain", "params.yaml").stdout, "params.yaml changed"
    client, runs = store_runs(project)
    assert sorted(run.data.tags["model"] for run in runs) == sorted(GRID)
    # two workers: never more than two training runs at once (whether two overlap depends on how short
    # they are next to DVC's bookkeeping, so that is not asserted)
    events = sorted([(r.info.start_time, 1) for r in runs] + [(r.info.end_time, -1) for r in runs])
    running = [sum(step for _, step in events[:i + 1]) for i in range(len(events))]
    assert 1 <= max(running) <= 2, running
    for run in runs:
        name = run.data.tags["model"]
        assert run.info.status == "FINISHED", name
        assert run.data.tags["dvc_exp_name"] == f"grid-{name}"
        # logged from .dvc/tmp/exps/<tmp>/, but into the project's own store and artifact folder
        assert run.data.tags["project_root"] == str(project.path.resolve())
        assert run.info.artifact_uri.startswith((project.path / "mlartifacts").resolve().as_uri())
        assert len(client.list_artifacts(run.info.run_id, "plots/templates")) == 10
        assert run.data.params["epochs"] == "1" and run.data.params["loss"] == name.split("-")[0]
    assert not list((project.path / ".dvc/tmp").rglob("mlflow.db")), "a store was created inside a DVC temp copy"
    # no "best" among the pixel points: it left the features models out; the table of every model comes last
    points = project.grid_output.split("the grid, evaluated")[0]
    assert "experiments grid-*" in points and "best on validation" not in points and "keep it" not in points


def dvc_processes_in(project: Path) -> list[str]:
    """Command lines of live dvc processes working in `project` (or in its DVC temp copies)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = Path(os.readlink(proc / "cwd"))
        except (OSError, ValueError):
            continue
        if "dvc" in cmdline and (cwd == project or project in cwd.parents):
            found.append(cmdline)
    return found


@pytest.mark.slow
def test_no_queue_worker_outlives_the_grid(grid):
    deadline = time.monotonic() + 15   # `dvc queue stop` asks; the worker takes a moment to go
    while dvc_processes_in(grid.path.resolve()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not dvc_processes_in(grid.path.resolve())


@pytest.mark.slow
def test_each_train_stage_ran_with_one_blas_thread(grid):
    for name in GRID:
        log = grid.dvc("queue", "logs", f"grid-{name}").stdout
        # the command line carries no params (no shell injection); train.py sets the BLAS threads from
        # params.yaml before numpy loads (tests/test_injection.py checks the thread count OpenBLAS reports)
        assert f"Running stage 'train@{name}'" in log and "> PYTHONPATH=src pipeline/python pipeline/train.py" in log


@pytest.mark.slow
def test_exp_show_lists_every_combination_with_its_validation_accuracy(grid):
    rows = experiment_rows(grid.shown, "grid-")
    assert sorted(row["model"] for row in rows) == sorted(GRID)
    assert all(0 <= row["val_accuracy"] <= 1 and row["epochs"] == 1 for row in rows)
    assert [row["val_accuracy"] for row in rows] == sorted((row["val_accuracy"] for row in rows), reverse=True)
    for name in GRID:
        assert f"grid-{name}" in grid.grid_output   # the printed table


@pytest.mark.slow
def test_workspace_repro_takes_the_grid_from_the_run_cache(grid):
    """What `make grid-parallel` does next: no train stage runs again, evaluation sees every model."""
    with warm_stages(grid):
        out = grid.dvc("repro", "evaluate").stdout
    assert not re.findall(r"Running stage 'train@", out), out[-2000:]
    assert all(f"Stage 'train@{name}' is cached" in out for name in GRID), out[-2000:]
    assert sorted(json.loads((grid.path / "metrics/test.json").read_text())) == sorted(GRID)
    _, runs = store_runs(grid)
    assert len(runs) == len(GRID) and all("test_accuracy" in run.data.metrics for run in runs)


def test_project_root_leads_back_from_a_dvc_temp_copy(tmp_path, monkeypatch):
    from linclass.tracking.runs import context_tags, project_root

    for name in ("DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(name, raising=False)
    copy = tmp_path / ".dvc" / "tmp" / "exps" / "tmpk3j2h1"
    copy.mkdir(parents=True)
    assert project_root(copy) == project_root(tmp_path) == tmp_path.resolve()
    monkeypatch.chdir(copy)
    assert project_root() == tmp_path.resolve()
    assert "dvc_exp_name" not in context_tags()
    # what DVC sets for every stage of a queued experiment wins
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("DVC_EXP_NAME", "grid-svm-l2")
    assert project_root() == (tmp_path / "elsewhere").resolve()
    assert context_tags()["project_root"] == str((tmp_path / "elsewhere").resolve())
    assert context_tags()["dvc_exp_name"] == "grid-svm-l2"


@pytest.mark.slow
def test_the_queue_s_stages_start_warm_and_train_what_a_fresh_stage_trains(grid):
    """`linclass grid` serves the stages of DVC's temporary copies from one warm interpreter (the queue's train
    stages, then grid-all's): none declined, and a train stage run fresh in the workspace writes the same weights
    and metrics as the warm one of its experiment. (Last in the module: its run is one more in the store.)"""
    log = (grid.path / ".dvc" / "tmp" / "linclass-warm.log").read_text()
    assert log.count("exit 0: pipeline/train.py") == len(GRID), log
    assert "exit 0: pipeline/report.py" in log and "declined" not in log, log
    warm = {experiment["name"]: experiment["revs"][0]["data"]["metrics"] for baseline in grid.shown
            for experiment in baseline.get("experiments") or []}
    name = GRID[0]
    grid.dvc("repro", "preprocess")   # the data in the workspace (xdist may run this module's tests on two workers)
    grid.dvc("repro", "--single-item", "--force", f"train@{name}")   # no warm interpreter in project.env: fresh
    fresh = json.loads((grid.path / "metrics" / "train" / f"{name}.json").read_text())
    assert fresh == warm[f"grid-{name}"][f"metrics/train/{name}.json"]["data"]
    assert fresh["weights_md5"]
