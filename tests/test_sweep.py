"""linclass.orchestration.sweep: the grid from conf/, sweeps in DVC's own syntax, the validation-selected table.

The slow test runs a real two-point sweep through DVC's queue (`dvc exp run --queue -S 'a=x,y'`,
`dvc exp run --run-all -j 2`) in a project copy and checks that the workspace's params.yaml is untouched.
"""
from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from conftest import BIN, ROOT, SMALL, make_project, shrink_conf, warm_stages

from linclass.config import compose
from linclass.orchestration.sweep import (
    experiment_rows,
    experiment_states,
    grid_points,
    queue_workers,
    stop_leftover_workers,
    sweep_points,
)

GRID = [f"{loss}-{reg}" for loss in ("svm", "softmax") for reg in ("none", "l1", "l2", "elasticnet")]


def test_grid_points_come_from_conf(tmp_path):
    points = grid_points(conf_dir=ROOT / "conf")
    assert [p.name for p in points] == [f"grid-{name}" for name in GRID] + ["grid-features-hog_hist"]
    assert [p.target for p in points] == [f"train@{name}" for name in GRID] + ["train_features@hog_hist"]
    for point in points[:-1]:
        loss, reg = point.name.split("-")[1:]
        grid = compose(ROOT / "conf", point.overrides)["grid"]
        assert (grid["losses"], grid["regularizers"]) == ([loss], [reg])   # the features axis stays as in conf/
    grid = compose(ROOT / "conf", points[-1].overrides)["grid"]   # the features point: every combination
    assert (grid["losses"], grid["regularizers"], grid["features"]) == (
        ["svm", "softmax"], ["none", "l1", "l2", "elasticnet"], ["hog_hist"])
    # pixels only (an override of the shared ones): no features point
    assert [p.name for p in grid_points(conf_dir=ROOT / "conf", overrides=["grid.features=[]"])] == \
        [f"grid-{name}" for name in GRID]
    # a conf/ with another grid gives other points
    import shutil
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    text = (conf / "config.yaml").read_text().replace("losses: [svm, softmax]", "losses: [squared_svm]")
    (conf / "config.yaml").write_text(text)
    assert [p.name for p in grid_points(conf_dir=conf)] == [f"grid-squared_svm-{r}" for r in
                                                           ("none", "l1", "l2", "elasticnet")] + \
        ["grid-features-hog_hist"]
    assert compose(conf, grid_points(conf_dir=conf)[-1].overrides)["grid"]["losses"] == ["squared_svm"]


def test_a_queue_worker_left_behind_in_this_repository_is_stopped(tmp_path):
    """A process that looks like DVC's worker (`dvc exp queue-worker <node>`), working in tmp_path: stopped;
    the same command working elsewhere is not this repository's and stays."""
    import subprocess
    import sys

    fake = tmp_path / "bin" / "dvc"
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(120)\n")
    fake.chmod(0o755)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ours = subprocess.Popen([str(fake), "exp", "queue-worker", "dvc-exp-abc123-1@localhost"], cwd=tmp_path)
    other = subprocess.Popen([str(fake), "exp", "queue-worker", "dvc-exp-def456-1@localhost"], cwd=elsewhere)
    try:
        deadline = time.monotonic() + 10
        while ours.pid not in queue_workers(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert queue_workers(tmp_path) == [ours.pid]
        assert stop_leftover_workers(tmp_path) == [ours.pid]
        ours.wait(timeout=10)   # ended (psutil may have collected its status already)
        assert queue_workers(tmp_path) == [] and other.poll() is None
    finally:
        for proc in (ours, other):
            proc.kill()
            proc.wait()


def test_dvc_expands_the_sweep_into_the_points_in_their_order():
    """The points are what DVC's own Hydra sweep (`dvc exp run -S 'a=x,y'`) would make of the same grid."""
    from dvc.utils.hydra import get_hydra_sweeps  # what `dvc exp run --queue -S 'a=x,y'` calls

    lrs, strengths = [0.01, 0.05], [1e-4, 1e-3, 1e-2]
    sweep = ["grid.losses=[softmax]", "grid.regularizers=[l2]", "grid.features=[]",
             f"loss.softmax.learning_rate={','.join(map(repr, lrs))}",
             f"regularizer.l2.strength={','.join(map(repr, strengths))}"]
    expanded = get_hydra_sweeps({"params.yaml": sweep})
    points = sweep_points("softmax", "l2", lrs, strengths)
    assert len(expanded) == len(points) == 6 and len({p.name for p in points}) == 6
    for sweep, point in zip(expanded, points):
        ours = compose(ROOT / "conf", point.overrides)   # checked while composed
        assert compose(ROOT / "conf", sweep["params.yaml"]) == ours
        assert (ours["grid"]["losses"], ours["grid"]["regularizers"], ours["grid"]["features"]) == (
            ["softmax"], ["l2"], [])   # a pixel sweep trains and evaluates the pixel model alone
    assert compose(ROOT / "conf", points[-1].overrides)["regularizer"]["l2"]["strength"] == 1e-2
    assert points[-1].name == "sweep-softmax-l2-lr0.05-s0.01" and points[-1].target == "evaluate"


def test_a_sweep_on_features_sets_the_features_own_rate_and_strength():
    points = sweep_points("svm", "l2", "0.01,0.03", "1e-3", features="hog_hist")
    assert [p.name for p in points] == ["sweep-svm-l2-hog_hist-lr0.01-s0.001", "sweep-svm-l2-hog_hist-lr0.03-s0.001"]
    ours = compose(ROOT / "conf", points[1].overrides)
    assert (ours["grid"]["losses"], ours["grid"]["regularizers"], ours["grid"]["features"]) == (
        ["svm"], ["l2"], ["hog_hist"])
    assert (ours["features"]["learning_rate"]["svm"], ours["features"]["strength"]["l2"]) == (0.03, 1e-3)
    assert ours["loss"]["svm"]["learning_rate"] == compose(ROOT / "conf")["loss"]["svm"]["learning_rate"]
    assert points[1].target == "evaluate"
    with pytest.raises(ValueError, match=r"^unknown input --features 'sift'; allowed: pixels, hog_hist$"):
        sweep_points("svm", "l2", "0.01", "1e-3", features="sift")
    # its table: the features model's rows, its own rate and strength
    point = _experiment("sweep-svm-l2-hog_hist-lr0.03-s0.001", None, 0.01, 0.3, 0.4)
    show = [{"rev": "a" * 40, "experiments": [point]}]
    data = show[0]["experiments"][0]["revs"][0]["data"]
    data["params"]["params.yaml"]["data"]["features"] = {"learning_rate": {"softmax": 0.3}, "strength": {"l2": 1e-2}}
    data["metrics"]["metrics/train/hog_hist.json"] = {"data": {"softmax-l2-hog_hist": {
        "val_accuracy": 0.61, "val_accuracy_low": 0.6, "val_accuracy_high": 0.62, "weights_md5": "ff"}}}
    [row] = experiment_rows(show, "sweep-", features="hog_hist")
    assert (row["model"], row["learning_rate"], row["strength"], row["val_accuracy"]) == (
        "softmax-l2-hog_hist", 0.3, 1e-2, 0.61)
    assert row["test_accuracy"] is None   # metrics/test.json has no entry for these weights
    [pixels] = experiment_rows(show, "sweep-")
    assert (pixels["model"], pixels["learning_rate"], pixels["val_accuracy"]) == ("softmax-l2", 0.01, 0.3)


@pytest.mark.parametrize("loss, reg, lrs, strengths, features, message", [
    ("softmax", "l2", "0.01", [], "pixels", "--strengths (STRENGTHS of make sweep): no values given"),
    ("softmax", "l2", "0.01,abc", "1e-3", "pixels", "--learning-rates (LRS of make sweep): 'abc' is not a number"),
    ("softmax", "l2", "", "1e-3", "pixels", "'' is not a number"),
    ("softmax", "l2", "0.01,0", "1e-3", "pixels",
     "--learning-rates (LRS of make sweep): loss.softmax.learning_rate=0.0 is out of range: allowed a number > 0"),
    ("svm", "l1", "0.01", "-1e-3", "pixels", "regularizer.l1.strength=-0.001 is out of range: allowed a number >= 0"),
    ("svm", "none", "0.01", "0,1e-3", "pixels", "regularizer.none.strength=0.001 is out of range"),
    ("svm", "none", "-0.01", "0", "hog_hist", "features.learning_rate.svm=-0.01 is out of range"),
    ("svm", "none", "0.01", "1e-3", "hog_hist", "features.strength.none=0.001 is out of range"),
])
def test_sweep_values_are_checked_as_the_settings_they_become(loss, reg, lrs, strengths, features, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        sweep_points(loss, reg, lrs, strengths, features=features)


def test_sweep_values_read_comma_separated_numbers_and_a_strength_may_be_zero():
    points = sweep_points("svm", "none", "0.01, 2e-2,1", "0")
    assert [p.overrides[3:] for p in points] == [(f"loss.svm.learning_rate={lr!r}", "regularizer.none.strength=0.0")
                                                 for lr in (0.01, 0.02, 1.0)]
    assert compose(ROOT / "conf", points[0].overrides)["regularizer"]["none"]["strength"] == 0.0
    [point] = sweep_points("svm", "none", "0.03", "0", features="hog_hist")
    assert compose(ROOT / "conf", point.overrides)["features"]["strength"]["none"] == 0.0


def test_the_command_to_keep_a_point_is_the_one_that_works_from_a_fresh_shell(tmp_path, monkeypatch):
    from linclass.orchestration.sweep import shown_dvc

    monkeypatch.chdir(ROOT)   # the project, with the .venv this test runs in
    assert shown_dvc() == ".venv/bin/dvc" and (ROOT / shown_dvc()).exists()
    monkeypatch.chdir(tmp_path)   # elsewhere: the dvc on PATH
    assert shown_dvc() == "dvc"


def _experiment(name, state, lr, val, test, trained_md5="aa", tested_md5="aa"):
    params = {"grid": {"losses": ["softmax"], "regularizers": ["l2"]}, "train": {"epochs": 1},
              "loss": {"softmax": {"learning_rate": lr}}, "regularizer": {"l2": {"strength": 1e-3}},
              "preprocess": {"val_size": 100}}
    metrics = {"metrics/train/softmax-l2.json": {"data": {"train_accuracy": 0.5, "val_accuracy": val,
                                                          "val_accuracy_low": val - 0.1, "val_accuracy_high": val + 0.1,
                                                          "weights_md5": trained_md5}},
               "metrics/test.json": {"data": {"softmax-l2": {"test_accuracy": test, "test_accuracy_low": test - 0.01,
                                                             "test_accuracy_high": test + 0.01,
                                                             "weights_md5": tested_md5}}}}
    return {"name": name, "executor": {"state": state} if state else None,
            "revs": [{"rev": "0" * 40, "data": {"params": {"params.yaml": {"data": params}}, "metrics": metrics}}]}


def test_table_and_states_come_from_exp_show_json():
    show = [{"rev": "workspace", "experiments": None},
            {"rev": "a" * 40, "experiments": [_experiment("sweep-softmax-l2-1", None, 0.01, 0.30, 0.9),
                                              _experiment("sweep-softmax-l2-2", "running", 0.05, 0.35, 0.1),
                                              _experiment("other-1", "failed", 0.05, 0.99, 0.9)]}]
    assert experiment_states(show) == {"sweep-softmax-l2-1": "success", "sweep-softmax-l2-2": "running",
                                       "other-1": "failed"}
    rows = experiment_rows(show, "sweep-softmax-l2-")
    # selected on validation: the test accuracy never decides
    assert [(r["experiment"], r["learning_rate"], r["val_accuracy"]) for r in rows] == [
        ("sweep-softmax-l2-2", 0.05, 0.35), ("sweep-softmax-l2-1", 0.01, 0.30)]
    assert rows[0]["val_accuracy_low"] == pytest.approx(0.25) and rows[0]["test_accuracy_high"] == pytest.approx(0.11)


def test_a_test_accuracy_is_shown_only_beside_the_weights_it_was_measured_on(capsys):
    """A grid point runs only train@<model>: its commit carries the baseline's metrics/test.json, measured on
    other weights (another md5): its row has no test accuracy, and the table says why."""
    from linclass.orchestration.sweep import comparison_rows, print_comparison, print_table

    show = [{"rev": "a" * 40, "experiments": [
        _experiment("grid-softmax-l2", None, 0.01, 0.30, 0.41, trained_md5="new", tested_md5="old"),
        _experiment("sweep-softmax-l2-1", None, 0.05, 0.25, 0.26, trained_md5="same", tested_md5="same"),
        _experiment("older-1", None, 0.05, 0.20, 0.21, trained_md5="x", tested_md5=None)]}]
    rows = experiment_rows(show, "")
    assert [(r["experiment"], r["test_accuracy"], r["test_accuracy_low"]) for r in rows] == [
        ("grid-softmax-l2", None, None), ("sweep-softmax-l2-1", 0.26, pytest.approx(0.25)), ("older-1", None, None)]
    print_table(rows, "")
    out = capsys.readouterr().out
    assert "best on validation: grid-softmax-l2 (softmax-l2, learning_rate=0.01, strength=0.001): val 0.3000 " \
           "[0.2000, 0.4000], test not evaluated in this experiment" in out
    assert "0.41" not in out and "not evaluated with these weights" in out
    assert "0.2600 [0.2500, 0.2700]" in out   # the one measured on its own weights, with its interval
    assert "0.5000" in out and " 0.5 " not in out   # the train accuracy with four decimals, as the others
    compared = [r for r in comparison_rows(show) if r["revision"] == "grid-softmax-l2"]
    assert compared[0]["val_accuracy"] == 0.30 and compared[0]["test_accuracy"] is None
    print_comparison(compared)
    assert "0.41" not in capsys.readouterr().out


def test_the_comparison_has_the_features_models_with_their_own_rate_and_strength(capsys):
    from linclass.orchestration.sweep import comparison_rows, print_comparison

    params = {"grid": {"losses": ["softmax"], "regularizers": ["l2"], "features": ["hog_hist"]},
              "train": {"epochs": 40, "blas_threads": 1}, "loss": {"softmax": {"learning_rate": 0.05}},
              "regularizer": {"l2": {"strength": 1e-3}}, "preprocess": {"val_size": 5000},
              "features": {"learning_rate": {"softmax": 0.3}, "strength": {"l2": 1e-2}}}
    trained = {"val_accuracy": 0.61, "val_accuracy_low": 0.60, "val_accuracy_high": 0.62, "weights_md5": "f"}
    metrics = {"metrics/train/softmax-l2.json": {"data": {**trained, "val_accuracy": 0.41, "weights_md5": "p"}},
               "metrics/train/hog_hist.json": {"data": {"softmax-l2-hog_hist": trained}},
               "metrics/test.json": {"data": {"softmax-l2-hog_hist": {"test_accuracy": 0.6, "weights_md5": "f",
                                                                      "test_accuracy_low": 0.59,
                                                                      "test_accuracy_high": 0.61}}}}
    show = [{"rev": "workspace", "data": {"params": {"params.yaml": {"data": params}}, "metrics": metrics}}]
    rows = {row["combination"]: row for row in comparison_rows(show)}
    assert sorted(rows) == ["softmax-l2", "softmax-l2-hog_hist"]
    assert (rows["softmax-l2"]["features"], rows["softmax-l2"]["learning_rate"], rows["softmax-l2"]["strength"]) == \
        ("pixels", 0.05, 1e-3)
    features = rows["softmax-l2-hog_hist"]
    assert (features["features"], features["learning_rate"], features["strength"]) == ("hog_hist", 0.3, 1e-2)
    assert (features["val_accuracy"], features["test_accuracy"]) == (0.61, 0.6)
    assert rows["softmax-l2"]["test_accuracy"] is None   # no test entry for these weights
    print_comparison(list(rows.values()))
    out = capsys.readouterr().out
    assert out.index("softmax-l2-hog_hist") < out.index("softmax-l2 ")   # best on validation first
    assert "0.6000 [0.5900, 0.6100]" in out and "hog_hist" in out


@pytest.mark.slow
def test_a_sweep_runs_through_dvcs_queue_and_leaves_params_yaml_as_committed(tmp_path, synthetic_archive):
    path, md5 = synthetic_archive
    project = make_project(tmp_path / "project")
    shrink_conf(project, (*SMALL, "train.epochs=1", "grid.losses=[softmax]", "grid.regularizers=[l2]",
                          "grid.features=[]", "studies.regularization_path.losses=[softmax]",
                          "studies.regularization_path.regularizers=[l2]",
                          "studies.regularization_path.strengths=[0.001,0.1]"))
    (project.path / "local.env").write_text(f"LINCLASS_DATA_URL={path.as_uri()}\nLINCLASS_DATA_MD5={md5}\n")
    with warm_stages(project):   # the workspace's own pipeline and report (set-up only: warm), committed
        project.dvc("repro")
    project.git_commit("results")
    committed = (project.path / "params.yaml").read_text()
    try:
        done = project.run(str(BIN / "python"), "-m", "linclass.cli", "sweep", "--loss", "softmax",
                           "--regularizer", "l2", "--learning-rates", "0.01,0.05", "--strengths", "1e-3",
                           "--jobs", "2", "train.batch_size=25")
    finally:
        project.dvc("queue", "stop", "--kill", check=False)
    assert (project.path / "params.yaml").read_text() == committed
    show = json.loads(project.dvc("exp", "show", "--json").stdout)
    assert {k: v for k, v in experiment_states(show).items()} == {"sweep-softmax-l2-lr0.01-s0.001": "success",
                                                                  "sweep-softmax-l2-lr0.05-s0.001": "success"}
    rows = experiment_rows(show, "sweep-softmax-l2-")
    assert sorted(r["learning_rate"] for r in rows) == [0.01, 0.05]
    assert all(r["test_accuracy"] is not None and r["epochs"] == 1 for r in rows)
    best = rows[0]["experiment"]
    assert f"keep it: dvc exp apply {best}" in done.stdout, done.stdout[-2000:]
    # the data stages ran once, in the workspace; the experiments restored them from the run-cache
    assert (project.path / "data/processed/X_train.npy").exists()
    # the sweep's table is in the heat map and the report: the workspace's pipeline is up to date
    assert json.loads(project.dvc("status", "--json").stdout) == {}


@pytest.mark.slow
def test_a_commit_made_while_the_queue_runs_does_not_fail_its_finished_experiments(tmp_path, synthetic_archive):
    # `dvc exp show` lists the experiments of HEAD only: a commit made meanwhile (a long grid, work going on)
    # made the sweep report its finished experiments as failed, and exit 1.
    path, md5 = synthetic_archive
    project = make_project(tmp_path / "project")
    shrink_conf(project, (*SMALL, "train.epochs=1", "grid.losses=[softmax]", "grid.regularizers=[l2]",
                          "grid.features=[]"))
    (project.path / "local.env").write_text(f"LINCLASS_DATA_URL={path.as_uri()}\nLINCLASS_DATA_MD5={md5}\n")
    baseline = project.run("git", "rev-parse", "--short", "HEAD").stdout.strip()
    sweep = subprocess.Popen([str(BIN / "python"), "-m", "linclass.cli", "sweep", "--loss", "softmax",
                              "--regularizer", "l2", "--learning-rates", "0.01", "--strengths", "1e-3", "--jobs", "1"],
                             cwd=project.path, env=project.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        lines = []
        for line in sweep.stdout:   # the experiment is queued on the baseline: now a commit moves HEAD
            lines.append(line)
            if line.startswith("1 experiments, 1 at a time"):
                project.run("git", "commit", "-q", "--allow-empty", "-m", "meanwhile")
                break
        rest, errors = sweep.communicate(timeout=600)
    finally:
        project.dvc("queue", "stop", "--kill", check=False)
    assert sweep.returncode == 0, "".join(lines) + rest + errors
    states = experiment_states(json.loads(project.dvc("exp", "show", "--json", "--rev", baseline).stdout))
    assert states == {"sweep-softmax-l2-lr0.01-s0.001": "success"}
    assert f"1 on commit {baseline}" in rest, rest   # the table says where they are
    assert project.run("git", "log", "-1", "--format=%s").stdout.strip() == "meanwhile", "the commit was lost"


def test_a_setting_a_model_does_not_have_is_a_dash_not_nan(capsys):
    """make grid-parallel's last table: svm models have a delta, softmax ones none; that cell read 'NaN'."""
    from linclass.orchestration.sweep import print_comparison

    accuracies = {"val_accuracy": 0.4, "val_accuracy_low": 0.39, "val_accuracy_high": 0.41, "test_accuracy": 0.4,
                  "test_accuracy_low": 0.39, "test_accuracy_high": 0.41}
    print_comparison([{"revision": "grid-all", "combination": "svm-l2", "delta": 1.0, "learning_rate": 0.005,
                       **accuracies},
                      {"revision": "grid-all", "combination": "softmax-l2", "learning_rate": 0.05,
                       **accuracies, "val_accuracy": 0.41}])
    out = capsys.readouterr().out
    assert "NaN" not in out and "nan" not in out, out
    softmax = next(line for line in out.splitlines() if "softmax-l2" in line)
    assert softmax.split()[:4] == ["grid-all", "softmax-l2", "-", "0.05"], softmax


def test_experiments_of_another_commit_are_not_called_unfinished(tmp_path, monkeypatch, capsys):
    """After `make sweep`, committing its table (as docs/parallel.md advises) moves HEAD: `linclass table`
    said 'none finished' of the four finished points, which DVC lists only for their own commit."""
    from linclass.orchestration.sweep import elsewhere, print_table

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()

    monkeypatch.chdir(tmp_path)
    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "sweep ran here")
    first = git("rev-parse", "HEAD")
    for name in ("sweep-softmax-l2-lr0.01-s0.001", "sweep-softmax-l2-lr0.05-s0.001", "grid-svm-l2"):
        git("update-ref", f"refs/exps/{first[:2]}/{first[2:]}/{name}", first)
    assert elsewhere("sweep-softmax-l2-") == ""   # on HEAD: DVC's table has them
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "the sweep's table")
    print_table([], "sweep-softmax-l2-")
    out = capsys.readouterr().out.strip()
    assert out.startswith("experiments sweep-softmax-l2-*: none finished on this commit; "
                          f"2 on commit {first[:7]} "), out
    assert f"exp show --rev {first[:7]}" in out
    print_table([], "other-")
    assert capsys.readouterr().out.strip() == "experiments other-*: none finished"


def test_weights_that_several_revisions_hold_are_one_row_naming_them_all():
    """After `make exp`, the workspace holds the experiment's weights, and the experiment holds its baseline's for
    every model it did not retrain: each trained model is listed once."""
    from linclass.orchestration.sweep import comparison_rows, held_by

    def revision(rev, strength, md5s, tested_md5s):
        params = {"grid": {"losses": ["softmax"], "regularizers": ["none", "l2"]}, "train": {"epochs": 40},
                  "loss": {"softmax": {"learning_rate": 0.05}}, "regularizer": {"l2": {"strength": strength}}}
        metrics = {f"metrics/train/softmax-{reg}.json": {"data": {"val_accuracy": 0.4, "weights_md5": md5s[reg]}}
                   for reg in ("none", "l2")}
        metrics["metrics/test.json"] = {"data": {f"softmax-{reg}": {"test_accuracy": 0.39, "weights_md5": md5}
                                                 for reg, md5 in tested_md5s.items()}}
        return {"rev": rev, "name": rev, "data": {"params": {"params.yaml": {"data": params}}, "metrics": metrics}}

    base = revision("main", 1e-3, {"none": "n", "l2": "a"}, {"none": "n", "l2": "a"})
    grid_point = revision("grid-l2", 1e-2, {"none": "n", "l2": "b"}, {"none": "n", "l2": "a"})   # test.json: main's
    exp = revision("exp-1", 1e-2, {"none": "n", "l2": "b"}, {"none": "n", "l2": "b"})
    workspace = {**exp, "rev": "workspace"}
    show = [workspace, {**base, "experiments": [{"name": r["name"], "revs": [r]} for r in (grid_point, exp)]}]
    rows = {(row["combination"], row["strength"]): row for row in comparison_rows(show)}
    assert {key: row["revision"] for key, row in rows.items()} == {
        ("softmax-none", None): "workspace, main, grid-l2, exp-1",
        ("softmax-l2", 1e-2): "workspace, grid-l2, exp-1",   # evaluated in the workspace and exp-1, not in grid-l2
        ("softmax-l2", 1e-3): "main"}
    assert rows[("softmax-l2", 1e-2)]["test_accuracy"] == 0.39
    assert [row["combination"] for row in held_by(list(rows.values()), "grid-l2")] == ["softmax-none", "softmax-l2"]
