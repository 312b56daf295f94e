"""What a training run logs to MLflow, and where: its own settings as params, curves at chart
resolution, experiments in the classic ML view, study runs apart (a real sqlite store in a temp dir)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import ROOT
from mlflow.tracking import MlflowClient

import linclass.plumbing.progress as progress
from linclass.settings import validate
from linclass.tracking import records, runs, ui

GRID = [(loss, reg) for loss in ("svm", "squared_svm", "softmax") for reg in ("none", "l1", "l2", "elasticnet")]
SGD_KEYS = {"learning_rate", "lr_decay", "epochs", "batch_size", "init_scale", "seed"}


@pytest.fixture(scope="module")
def params():
    return validate(yaml.safe_load((ROOT / "params.yaml").read_text()))


def test_curve_points_keep_short_curves_and_average_long_ones():
    short = np.linspace(3.0, 1.0, 30)
    steps, values = records.curve_points(short)
    assert steps.tolist() == list(range(1, 31)) and values.tolist() == short.tolist()

    long = np.random.default_rng(0).random(4900)  # 20 epochs x 245 steps: the real run
    steps, values = records.curve_points(long)
    assert len(values) <= records.MAX_CURVE_POINTS and len(values) == 980
    assert steps[0] == 5 and steps[-1] == 4900
    assert values[0] == pytest.approx(long[:5].mean()) and values[-1] == pytest.approx(long[-5:].mean())

    ragged = np.arange(1, 1003, dtype=float)  # 1002 values: windows of 2, the last one full too
    steps, values = records.curve_points(ragged)
    assert len(values) == 501 and steps[-1] == 1002 and values[-1] == pytest.approx(1001.5)
    odd = np.arange(1, 2003, dtype=float)  # 2002 values: windows of 3, and a last one of 1 value
    steps, values = records.curve_points(odd)
    assert len(values) == 668 and steps[-1] == 2002 and values[-1] == 2002.0


def test_training_params_are_the_runs_own_settings(params):
    keys, flats = {}, {}
    for loss, reg in GRID:
        flat = records.training_params(params, loss, reg)
        assert flat["loss"] == loss and flat["regularizer"] == reg
        assert flat["strength"] == getattr(params.regularizer, reg).strength
        assert ("strength_beta" in flat) == (reg == "elasticnet")
        assert ("svm_delta" in flat) == (loss != "softmax")
        assert SGD_KEYS <= set(flat) and flat["data_md5"] == params.data.md5
        assert not any("." in key for key in flat), flat  # plain names, no config paths
        keys[loss, reg] = set(flat) - {"strength_beta", "svm_delta"}
        flats[loss, reg] = flat
    assert len({frozenset(k) for k in keys.values()}) == 1, "every combination must log the same names"
    # MLflow's Compare page draws its parallel coordinates on the first 3 params (by name) that differ between
    # the runs, a run lacking one left out: those 3 are params every run has
    names = set().union(*flats.values())
    differ = sorted(n for n in names if len({str(f.get(n)) for f in flats.values()}) > 1)
    assert differ[:3] == ["learning_rate", "loss", "regularizer"], differ
    assert all(name > "strength" for name in names - set.intersection(*map(set, flats.values())))  # even when
    # the losses share one learning rate, the three are params of every run


def test_params_hash_tells_settings_apart(params):
    a = records.training_params(params, "svm", "l2")
    assert records.params_hash(a) == records.params_hash(dict(reversed(list(a.items()))))
    assert records.params_hash(a) != records.params_hash({**a, "learning_rate": 0.01})
    assert len(records.params_hash(a)) == 8


def test_experiments_open_in_the_ml_view_and_studies_are_apart(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(store)
    old = client.create_experiment("made-before", artifact_location=(tmp_path / "a").as_uri())
    runs.setup("made-before", store, root=tmp_path)  # an experiment of an older store gets the tag
    new = runs.setup("fresh", store, root=tmp_path)
    for experiment_id in (old, new):
        assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"

    ui.set_runs_view(new)  # the runs table's shared view: accuracies and settings as columns
    view = json.loads(client.get_experiment(new).tags["mlflow.sharedViewState.linclass"])
    assert {"metrics.`val_accuracy`", "metrics.`test_accuracy`", "params.`learning_rate`"} <= set(
        view["selectedColumns"]
    )
    assert ui.ui_url(new).endswith(
        f"/#/experiments/{new}/runs?viewStateShareKey=linclass&workflowType=machine_learning"
    )

    from linclass.settings import Tracking

    with runs.study_run(Tracking(experiment="fresh", uri=store), "study-x", "stage_x", "What x measures.") as run_id:
        pass
    assert client.get_run(run_id).data.tags["mlflow.note.content"] == "What x measures."   # the UI's description
    studies = client.get_experiment_by_name("fresh-studies")
    assert studies is not None and studies.tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_run(run_id).info.experiment_id == studies.experiment_id
    assert client.search_runs([new]) == []  # nothing but training runs in the training experiment


@pytest.mark.parametrize("env, shown", [({}, True), ({"CI": "true"}, False), ({"CI": "0"}, True),
                                        ({"LINCLASS_QUIET": "1"}, False)])
def test_progress_is_quiet_under_ci(monkeypatch, capsys, env, shown):
    for name in ("CI", "LINCLASS_QUIET"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    progress.say("epoch 1/3")
    assert (capsys.readouterr().out == "epoch 1/3\n") == shown


def test_a_second_store_in_one_process_is_the_one_asked_for(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first, second = (f"sqlite:///{tmp_path / name / 'mlflow.db'}" for name in ("a", "b"))
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    runs.setup("one", first, root=tmp_path / "a")
    runs.setup("two", second, root=tmp_path / "b")
    assert "MLFLOW_TRACKING_URI" not in __import__("os").environ
    assert MlflowClient(second).get_experiment_by_name("two") is not None
    assert MlflowClient(first).get_experiment_by_name("two") is None


def test_the_champion_alias_and_its_tags_are_written_only_where_they_change(tmp_path):
    from linclass.tracking import registry

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model("m")
    for _ in range(2):
        client.create_model_version("m", source=(tmp_path / "model").as_uri())
    writes = []

    class Counted:   # the real client; its writes to the registry counted
        def __getattr__(self, name):
            method = getattr(client, name)
            if name.startswith(("set_", "delete_")):
                return lambda *args: writes.append((name, args[-2] if name.endswith("_tag") else args[-1])) \
                    or method(*args)
            return method

    selection = {"runner_up": "svm-l2", "val_verdict": "within noise"}
    registry.set_champion(Counted(), "m", "1", selection)
    assert str(client.get_model_version_by_alias("m", registry.CHAMPION).version) == "1"
    assert selection.items() <= client.get_model_version("m", "1").tags.items()
    writes.clear()
    registry.set_champion(Counted(), "m", "1", selection)   # the same champion, the same runner-up: no request
    assert writes == []
    registry.set_champion(Counted(), "m", "1", {**selection, "val_verdict": "better"})
    assert writes == [("set_model_version_tag", "val_verdict")]
    registry.set_champion(Counted(), "m", "1", {"runner_up": "none"})   # no runner-up now: its verdict goes
    assert client.get_model_version("m", "1").tags.items() >= {"runner_up": "none"}.items()
    assert "val_verdict" not in client.get_model_version("m", "1").tags
    registry.set_champion(Counted(), "m", "1", selection)
    registry.set_champion(Counted(), "m", "2", {"runner_up": "softmax-l2"})   # a new champion
    assert str(client.get_model_version_by_alias("m", registry.CHAMPION).version) == "2"
    assert client.get_model_version("m", "2").tags["runner_up"] == "softmax-l2"
    assert not {"runner_up", "val_verdict"} & set(client.get_model_version("m", "1").tags)   # the former's are gone


def test_ui_compares_the_workspaces_models_not_an_experiment_run_after_them(tmp_path):
    """`make exp`, then back (git checkout params.yaml && make repro restores the models from DVC's cache and logs
    no run): the experiment's runs are the newest, but `linclass ui`'s Compare link must show the models the
    workspace holds (metrics/test.json names their weights)."""
    from urllib.parse import unquote

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("linclass-cifar10", artifact_location=(tmp_path / "a").as_uri())

    def run(model, md5, val):
        made = client.create_run(experiment, tags={"model": model, "weights_md5": md5})
        for key, value in (("val_accuracy", val), ("test_accuracy", val - 0.01)):
            client.log_metric(made.info.run_id, key, value)
        client.set_terminated(made.info.run_id)
        return made.info.run_id

    baseline = {model: run(model, f"{model}-baseline", val) for model, val in (("svm-l2", 0.41), ("softmax-l2", 0.42))}
    experiment_runs = [run(model, f"{model}-exp", 0.37) for model in ("svm-l2", "softmax-l2")]   # newer
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "test.json").write_text(json.dumps(
        {model: {"val_accuracy": 0.4, "weights_md5": f"{model}-baseline"} for model in baseline}))

    lines = ui.links(client, experiment, "2", "http://127.0.0.1:5000", root=tmp_path)
    [compare] = [line for line in lines if "(Compare)" in line]
    assert compare.startswith("the workspace's 2 models side by side (Compare): "), compare
    shown = json.loads(unquote(compare.split("runs=", 1)[1].split("&", 1)[0]))
    assert shown == [baseline["softmax-l2"], baseline["svm-l2"]]   # best on validation first

    # no metrics/test.json yet (before evaluate): the newest runs, as before
    (tmp_path / "metrics" / "test.json").unlink()
    [compare] = [line for line in ui.links(client, experiment, "2", "http://127.0.0.1:5000", root=tmp_path)
                 if "(Compare)" in line]
    assert compare.startswith("the latest 2 models side by side"), compare
    assert sorted(json.loads(unquote(compare.split("runs=", 1)[1].split("&", 1)[0]))) == sorted(experiment_runs)


def test_mlflow_experiment_name_wins_over_the_committed_setting(tmp_path, monkeypatch):
    """A teammate's own experiment comes from their shell (MLflow's MLFLOW_EXPERIMENT_NAME), never from the
    params.yaml they commit: set there, it travelled through git and sent everyone's runs to their experiment."""
    from linclass.settings import ConfigError, Tracking

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    committed = Tracking(experiment="linclass-cifar10", uri=store)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    assert committed.experiment_name() == "linclass-cifar10"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "linclass-bob")
    assert committed.experiment_name() == "linclass-bob"
    with runs.study_run(committed, "study-x", "stage_x", "What x measures.") as run_id:
        pass
    client = MlflowClient(store)
    assert client.get_experiment(client.get_run(run_id).info.experiment_id).name == "linclass-bob-studies"
    assert "'linclass-bob'" in runs.prepare_store(committed)
    assert {e.name for e in client.search_experiments()} == {"Default", "linclass-bob", "linclass-bob-studies"}
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "")   # empty: unset, as for MLFLOW_TRACKING_URI
    assert committed.experiment_name() == "linclass-cifar10"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "  ")
    with pytest.raises(ConfigError, match=r"^MLFLOW_EXPERIMENT_NAME='  ' is blank: name an experiment, or unset it$"):
        committed.experiment_name()
