"""Every number belongs to its model: the grid with overrides after a full run (issue 23, item 0).

A project copy (synthetic archive, two models) is evaluated and committed (`dvc repro evaluate`: its
metrics/test.json holds the test accuracies of those weights), then `linclass grid --jobs 2 train.epochs=2
preprocess.max_train=300` (what `make grid-parallel JOBS=2 OVERRIDES=...` runs) queues the grid on DVC's real
queue. Its points run only train@<model>, so their commits carry the committed metrics/test.json of other
weights: their rows must show their own validation accuracy and no test accuracy, and say why; the grid-all
experiment that follows evaluates the same weights, and its table shows their test accuracy.

Release-only (`make test-release`): `make test` covers the same rules in a cheaper form, tests/test_sweep.py
(a table from `dvc exp show` JSON whose test accuracy belongs to other weights) and tests/test_parallel.py (the
grid on DVC's real queue).
"""
from __future__ import annotations

import json

import pytest
from conftest import BIN, SMALL, make_project, shrink_conf

from linclass.orchestration.sweep import comparison_rows, experiment_rows, held_by

pytestmark = [pytest.mark.slow, pytest.mark.release]
GRID = ["svm-l2", "softmax-l2"]
OVERRIDES = ("train.epochs=2", "preprocess.max_train=300")


@pytest.fixture(scope="module")
def after_run(tmp_path_factory, synthetic_archive):
    """(project, the committed metrics/test.json, the grid's output, `dvc exp show --json`)."""
    path, md5 = synthetic_archive
    project = make_project(tmp_path_factory.mktemp("grid-after-run") / "project")
    shrink_conf(project, (f"data.url={path.as_uri()}", f"data.md5={md5}", *SMALL,
                          "grid.losses=[svm,softmax]", "grid.regularizers=[l2]"))
    project.dvc("repro", "evaluate")
    project.git_commit("the full run: models and their test accuracy")
    committed = json.loads((project.path / "metrics/test.json").read_text())
    try:
        done = project.run(str(BIN / "python"), "-m", "linclass.cli", "grid", "--jobs", "2", *OVERRIDES, timeout=900)
    finally:
        project.dvc("queue", "stop", "--kill", check=False)
    show = json.loads(project.dvc("exp", "show", "--json").stdout)
    return project, committed, done.stdout, show


def test_the_grid_points_show_their_validation_accuracy_and_no_stale_test_accuracy(after_run):
    project, committed, out, show = after_run
    rows = {row["model"]: row for row in experiment_rows(show, "grid-")}
    assert sorted(rows) == sorted(GRID)
    for row in rows.values():
        assert row["epochs"] == 2 and 0 <= row["val_accuracy_low"] <= row["val_accuracy"] <= row["val_accuracy_high"]
        assert row["test_accuracy"] is None, row   # its commit's test.json was measured on the full run's weights
    # the printed table: no test accuracy beside the new models (the committed one belongs to other weights)
    table = out[out.index("experiments grid-*"):out.index("in the MLflow UI")]
    for name in GRID:
        line = next(line for line in table.splitlines() if line.lstrip().startswith(f"grid-{name}"))
        assert line.rstrip().endswith(" -"), line
    # no best of the points: the grid's best comes after grid-all, of every model (its features models too)
    assert "best on validation" not in table and "keep it" not in table, table
    assert "not evaluated with these weights" in table


def test_grid_all_evaluates_the_same_weights_and_shows_their_test_accuracy(after_run):
    project, committed, out, show = after_run
    rows = {row["model"]: row for row in experiment_rows(show, "grid-")}
    evaluated = {row["combination"]: row for row in held_by(comparison_rows(show), "grid-all")}
    assert sorted(evaluated) == sorted(GRID)
    for name in GRID:
        # the grid point's model, restored from the run-cache: the same validation accuracy, now with its test one
        assert evaluated[name]["val_accuracy"] == rows[name]["val_accuracy"]
        assert evaluated[name]["test_accuracy"] is not None
        low, high = evaluated[name]["test_accuracy_low"], evaluated[name]["test_accuracy_high"]
        assert low <= evaluated[name]["test_accuracy"] <= high
    final = out[out.index("the grid, evaluated (grid-all)"):]
    for name in GRID:
        line = next(line for line in final.splitlines() if "grid-all" in line and name in line)
        assert f"{evaluated[name]['test_accuracy']:.4f} [{evaluated[name]['test_accuracy_low']:.4f}," in line, line


def test_no_revision_pairs_a_validation_accuracy_with_another_models_test_accuracy(after_run):
    """Over every revision `linclass compare` shows (the workspace, the full run, the grid points, grid-all):
    a test accuracy only where metrics/test.json was measured on the weights metrics/train/ describes."""
    project, committed, out, show = after_run
    rows = comparison_rows(show)
    assert {row["revision"] for row in rows} >= {"workspace", "grid-all", *(f"grid-{name}" for name in GRID)}
    by_revision = {}   # labelled as comparison_rows labels them
    for baseline in show:
        label = "workspace" if baseline.get("rev") == "workspace" else (baseline.get("name") or baseline["rev"][:7])
        by_revision[label] = baseline.get("data") or {}
        for experiment in baseline.get("experiments") or []:
            revs = experiment.get("revs") or [{}]
            by_revision[experiment.get("name") or revs[0].get("rev", "")[:7]] = revs[0].get("data") or {}
    for row in rows:
        metrics = by_revision[row["revision"]].get("metrics") or {}
        trained = metrics[f"metrics/train/{row['combination']}.json"]["data"]
        tested = ((metrics.get("metrics/test.json") or {}).get("data") or {}).get(row["combination"]) or {}
        if row["test_accuracy"] is not None:
            assert tested["weights_md5"] == trained["weights_md5"], row
        else:
            assert tested.get("weights_md5") != trained["weights_md5"], row
    workspace = [row for row in rows if row["revision"] == "workspace"]
    assert all(row["test_accuracy"] == committed[row["combination"]]["test_accuracy"] for row in workspace)
