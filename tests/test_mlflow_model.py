"""The pipeline's MLflow side, end to end on a small archive (`dvc repro evaluate`, 2 combinations):
each training run has its own settings as params, a handful of clean metrics and an MLflow Model;
the registry's `champion` is the best on validation and predicts raw images with the reported accuracy."""
from __future__ import annotations

import json
import re
import tempfile

import numpy as np
import pytest
import yaml
from conftest import SMALL, env_for_pipeline, make_project, warm_stages

from linclass.core.stats import wilson_interval

NAMES = ["svm-l2", "softmax-l2"]
EXPERIMENT = "linclass-cifar10"
METRICS = {"data_loss", "reg_loss", "total_loss", "train_accuracy", "val_accuracy", "initial_loss", "test_accuracy",
           "val_accuracy_low", "val_accuracy_high", "test_accuracy_low", "test_accuracy_high"}


def raw_images(rows: np.ndarray) -> np.ndarray:
    """CIFAR rows (N, 3072) uint8 (R, G, B planes) -> images (N, 32, 32, 3)."""
    return rows.reshape(len(rows), 3, 32, 32).transpose(0, 2, 3, 1)


def test_the_model_computes_the_pipelines_scores_bit_for_bit(tmp_path):
    """log_classifier -> load_model: the preprocessing and the scores are the library's, exactly."""
    import warnings

    import mlflow

    from linclass.core.model import class_scores
    from linclass.core.pixels import Pixels
    from linclass.data.preprocess import mean_image
    from linclass.tracking import registry as mlflow_model
    from linclass.tracking import runs

    rng = np.random.default_rng(0)
    rows = rng.integers(0, 256, size=(40, 3072), dtype=np.uint8)
    W, b = (rng.standard_normal((3, 3072)) * 1e-3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    mean, names = mean_image(rows), ["cat", "dog", "ship"]
    experiment_id = runs.setup("model-unit", f"sqlite:///{tmp_path / 'mlflow.db'}", root=tmp_path)
    uris = {}
    for loss in ("svm", "softmax"):
        with runs.tracked_run(experiment_id, loss):
            uris[loss] = mlflow_model.log_classifier(W, b, names, loss, example=raw_images(rows[:2]),
                                                     mean_image=mean, scale=255.0).model_uri
    expected = class_scores(Pixels(rows, mean, 255.0), W, b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loading says nothing
        svm = mlflow.pyfunc.load_model(uris["svm"])
    table = svm.predict(raw_images(rows))
    assert table[names].to_numpy().tobytes() == expected.tobytes()
    assert table["class"].tolist() == [names[i] for i in expected.argmax(axis=1)]
    probabilities = mlflow.pyfunc.load_model(uris["softmax"]).predict(raw_images(rows))[names].to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-6)
    assert (probabilities.argmax(axis=1) == expected.argmax(axis=1)).all()
    with pytest.raises(Exception, match="uint8|dtype|type"):
        svm.predict(raw_images(rows).astype(np.float32))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, archive_server):
    url, md5 = archive_server
    env = {k: v for k, v in env_for_pipeline().items() if k not in ("CI", "LINCLASS_QUIET")}
    project = make_project(tmp_path_factory.mktemp("mlflow") / "project",
                           (f"data.url={url}", f"data.md5={md5}", *SMALL,
                            "grid.losses=[svm,softmax]", "grid.regularizers=[l2]"), env=env)
    with warm_stages(project):   # its stages started by a warm interpreter
        out = project.dvc("repro", "evaluate").stdout
    from mlflow.tracking import MlflowClient

    return project, out, MlflowClient(project.tracking_uri)


def training_runs(client):
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return experiment, client.search_runs([experiment.experiment_id], max_results=100)


@pytest.mark.slow
def test_training_runs_carry_their_own_settings_and_clean_metrics(evaluated):
    from linclass.settings import validate
    from linclass.tracking import records

    project, out, client = evaluated
    experiment, runs = training_runs(client)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert sorted(r.data.tags["model"] for r in runs) == sorted(NAMES)
    params = yaml.safe_load((project.path / "params.yaml").read_text())
    for run in runs:
        name, p = run.data.tags["model"], run.data.params
        assert re.fullmatch(rf"{name}-[0-9a-f]{{6}}", run.info.run_name), run.info.run_name
        assert run.info.run_name[-6:] == run.data.tags["params_hash"][:6]
        assert p["loss"] == name.split("-")[0] and p["regularizer"] == "l2"
        assert float(p["strength"]) == params["regularizer"]["l2"]["strength"]
        assert p["epochs"] == "3" and p["batch_size"] == "50" and float(p["learning_rate"]) == 0.01
        assert ("svm_delta" in p) == (name.startswith("svm")) and "strength_beta" not in p
        # nothing else
        assert set(p) == set(records.training_params(validate(params), name.split("-")[0], "l2")), sorted(p)
        assert set(run.data.metrics) == METRICS, sorted(run.data.metrics)
        assert len(client.get_metric_history(run.info.run_id, "total_loss")) == 30  # 500 images / 50 x 3
        top = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"training", "plots", "evaluation"} <= top, top
    # progress: one line per epoch while training
    assert re.search(r"train@svm-l2 epoch 3/3: loss [0-9.]+ train [0-9.]+ val [0-9.]+ \([0-9.]+ s\)", out), out[-2000:]
    assert "preprocess: X_train" in out


@pytest.mark.slow
def test_each_run_logs_a_model_with_signature_and_example(evaluated, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))   # get_model_info leaves its download there
    import mlflow

    from linclass.tracking.runs import point_mlflow_at

    _, _, client = evaluated
    _, runs = training_runs(client)
    point_mlflow_at(client.tracking_uri)  # not mlflow.set_tracking_uri: it exports the URI
    for run in runs:
        info = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model")
        assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 32, 32, 3)
        assert info.signature.inputs.to_dict()[0]["tensor-spec"]["dtype"] == "uint8"
        assert [c["name"] for c in info.signature.outputs.to_dict()][0] == "class"
        assert info.saved_input_example_info is not None


@pytest.mark.slow
def test_champion_is_best_on_validation_and_predicts_with_the_reported_accuracy(evaluated, synthetic_archive):
    import mlflow

    from linclass.data.cifar import load_cifar10
    from linclass.tracking.runs import point_mlflow_at

    project, _, client = evaluated
    metrics = json.loads((project.path / "metrics/test.json").read_text())
    versions = client.search_model_versions(f"name = '{EXPERIMENT}'")
    assert sorted(v.tags["model"] for v in versions) == sorted(NAMES)
    champion = client.get_model_version_by_alias(EXPERIMENT, "champion")
    best = max(NAMES, key=lambda n: (metrics[n]["val_accuracy"], -NAMES.index(n)))
    assert champion.tags["model"] == best
    assert json.loads((project.path / "reports/evaluation/best.json").read_text())["model"] == best

    point_mlflow_at(client.tracking_uri)  # not mlflow.set_tracking_uri: it exports the URI
    model = mlflow.pyfunc.load_model(f"models:/{EXPERIMENT}@champion")
    data = load_cifar10(synthetic_archive[0])
    predicted = model.predict(raw_images(data.x_test))
    accuracy = float(np.mean(predicted["class"].to_numpy() == np.asarray(data.class_names)[data.y_test]))
    assert accuracy == metrics[best]["test_accuracy"]
    # stored at full precision (the report rounds once): a bound rounded to 6 decimals first could show
    # 0.6050 where the exact 0.60505030 shows 0.6051
    correct = int(np.sum(predicted["class"].to_numpy() == np.asarray(data.class_names)[data.y_test]))
    exact = wilson_interval(correct, len(data.y_test))
    assert (metrics[best]["test_accuracy_low"], metrics[best]["test_accuracy_high"]) == exact
    assert accuracy == client.get_run(champion.run_id).data.metrics["test_accuracy"]
    scores = predicted[data.class_names].to_numpy()
    if best.startswith("softmax"):  # probabilities; an SVM returns raw scores
        assert np.allclose(scores.sum(axis=1), 1, atol=1e-5) and (scores >= 0).all()


@pytest.mark.slow
def test_evaluation_files_for_the_report(evaluated):
    project, _, _ = evaluated
    for name in ("best.json", "confusion_matrix.png", "confusion_matrix.csv", "loss_curves.png"):
        assert (project.path / "reports/evaluation" / name).stat().st_size > 50, name
