"""The parallel grid (`make grid-parallel`: python -m linclass.plumbing.sweep grid, then dvc repro) on real DVC
queue workers, and the sweep's experiment points.

One module fixture runs the grid once: 8 queued DVC experiments, 2 at a time, with tiny training,
all logging to the project's own sqlite store from DVC's temporary copies under .dvc/tmp/exps/.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import BIN, ROOT, SMALL, make_project

from linclass.plumbing.config import compose, validate
from linclass.plumbing.sweep import experiment_rows, grid_points, parse_floats, sweep_points

EXPERIMENT = "linclass-cifar10"
GRID = [f"{loss}-{reg}" for loss in ("svm", "softmax") for reg in ("none", "l1", "l2", "elasticnet")]
TINY = ("train.epochs=1",)


def overrides_for(path: Path, md5: str) -> list[str]:
    shrink = [o for o in SMALL if o.split("=")[0] not in {t.split("=")[0] for t in TINY}]
    return [f"data.url={path.as_uri()}", f"data.md5={md5}", *shrink, *TINY]


@pytest.fixture(scope="module")
def grid(tmp_path_factory, synthetic_archive):
    """A project after `python -m linclass.plumbing.sweep grid --jobs 2 ...`, and that command's output."""
    path, md5 = synthetic_archive
    project = make_project(tmp_path_factory.mktemp("parallel") / "project")
    try:
        done = project.run(str(BIN / "python"), "-m", "linclass.plumbing.sweep", "grid", "--jobs", "2", "--timeout", "600",
                           *overrides_for(path, md5))
        project.grid_output = done.stdout
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
    assert "at most 2 ran at once" in project.grid_output, project.grid_output[-2000:]
    status = project.dvc("queue", "status").stdout
    for name in GRID:
        assert re.search(rf"grid-{name}\s.*Success", status), status
    client, runs = store_runs(project)
    assert sorted(run.info.run_name for run in runs) == sorted(GRID)
    for run in runs:
        name = run.info.run_name
        assert run.info.status == "FINISHED", name
        assert run.data.tags["dvc_exp_name"] == f"grid-{name}"
        # logged from .dvc/tmp/exps/<tmp>/, but into the project's own store and artifact folder
        assert run.data.tags["project_root"] == str(project.path.resolve())
        assert run.info.artifact_uri.startswith((project.path / "mlartifacts").resolve().as_uri())
        assert len(client.list_artifacts(run.info.run_id, "plots/templates")) == 10
        assert run.data.params["train.epochs"] == "1" and run.data.params["grid.losses"] == f"['{name.split('-')[0]}']"
    assert not list((project.path / ".dvc/tmp").rglob("mlflow.db")), "a store was created inside a DVC temp copy"


@pytest.mark.slow
def test_each_train_stage_ran_with_one_blas_thread(grid):
    for name in ("svm-l2", "softmax-none"):
        log = grid.dvc("queue", "logs", f"grid-{name}").stdout
        loss, reg = name.split("-")
        assert (f"OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 PYTHONPATH=src python pipeline/train.py "
                f"--loss {loss} --regularizer {reg}") in log


@pytest.mark.slow
def test_exp_show_lists_every_combination_with_its_validation_accuracy(grid):
    rows = experiment_rows(json.loads(grid.dvc("exp", "show", "--json").stdout), "grid-")
    assert sorted(row["model"] for row in rows) == sorted(GRID)
    assert all(0 <= row["val_accuracy"] <= 1 and row["epochs"] == 1 for row in rows)
    assert [row["val_accuracy"] for row in rows] == sorted((row["val_accuracy"] for row in rows), reverse=True)
    for name in GRID:
        assert f"grid-{name}" in grid.grid_output   # the printed table


@pytest.mark.slow
def test_workspace_repro_takes_the_grid_from_the_run_cache(grid):
    """What `make grid-parallel` does next: no train stage runs again, evaluation sees all 8 models."""
    out = grid.dvc("repro", "evaluate").stdout
    assert not re.findall(r"Running stage 'train@", out), out[-2000:]
    assert all(f"Stage 'train@{name}' is cached" in out for name in GRID), out[-2000:]
    assert sorted(json.loads((grid.path / "metrics/test.json").read_text())) == sorted(GRID)
    _, runs = store_runs(grid)
    assert len(runs) == 8 and all("test_accuracy" in run.data.metrics for run in runs)


# ---- the sweep's points (no DVC run) ----

def test_sweep_points_compose_into_valid_params():
    points = sweep_points("softmax", "l2", [0.01, 0.05], [1e-4, 1e-3, 1e-2])
    assert len(points) == 6 and len({p.name for p in points}) == 6
    assert all(p.target == "evaluate" for p in points)
    reference = compose(ROOT / "conf")
    for point in (points[0], points[-1]):
        params = validate(compose(ROOT / "conf", point.overrides), reference)
        assert params["grid"] == {"losses": ["softmax"], "regularizers": ["l2"]}
    assert compose(ROOT / "conf", points[-1].overrides)["loss"]["softmax"]["learning_rate"] == 0.05
    assert compose(ROOT / "conf", points[-1].overrides)["regularizer"]["l2"]["strength"] == 1e-2
    assert points[-1].name == "sweep-softmax-l2-lr0.05-s0.01"


def test_grid_points_cover_the_grid_once():
    points = grid_points()
    assert [p.name for p in points] == [f"grid-{name}" for name in GRID]
    assert [p.target for p in points] == [f"train@{name}" for name in GRID]
    for point in points:
        loss, reg = point.name.split("-")[1:]
        assert compose(ROOT / "conf", point.overrides)["grid"] == {"losses": [loss], "regularizers": [reg]}


@pytest.mark.parametrize("text, message", [("0.01,abc", "'abc' is not a number"), ("0.01,0", "'0' is not > 0"),
                                           ("-1e-3", "'-1e-3' is not > 0"), ("", "'' is not a number")])
def test_parse_floats_names_the_bad_value(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_floats(text, "--learning-rates")


def test_parse_floats_reads_comma_separated_numbers():
    assert parse_floats("0.01, 2e-2,1", "x") == [0.01, 0.02, 1.0]


def test_project_root_leads_back_from_a_dvc_temp_copy(tmp_path, monkeypatch):
    from linclass.plumbing.tracking import context_tags, project_root

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
