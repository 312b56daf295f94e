"""The release's real end-to-end run: `dvc repro` of the whole pipeline on the real CIFAR-10 archive in
../shared/data (through a file:// URL, the same download code as https), with the default settings.

Release-only (`make test-release`): it is the whole real pipeline (minutes); `make test` runs the same
pipeline on a synthetic archive (test_pipeline.py) and reads the real archive in test_cifar.py."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_CIFAR, SHARED_CIFAR_MD5, make_project

pytestmark = [pytest.mark.slow, pytest.mark.realdata, pytest.mark.release,
              pytest.mark.skipif(not SHARED_CIFAR.exists(),
                                 reason=f"the real CIFAR-10 archive is not at {SHARED_CIFAR}")]

GRID = [f"{loss}-{reg}" for loss in ("svm", "softmax") for reg in ("none", "l1", "l2", "elasticnet")]


@pytest.fixture(scope="module")
def real_project(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("real") / "project",
                           (f"data.url=file://{SHARED_CIFAR}", f"data.md5={SHARED_CIFAR_MD5}"))
    project.dvc("repro", timeout=1800)
    return project


def test_real_accuracy_of_the_l2_models(real_project):
    metrics = json.loads((real_project.path / "metrics/test.json").read_text())
    assert sorted(metrics) == sorted(GRID)
    assert metrics["svm-l2"]["test_accuracy"] >= 0.38, metrics["svm-l2"]
    assert metrics["softmax-l2"]["test_accuracy"] >= 0.38, metrics["softmax-l2"]
    for name in GRID:  # every combination learns far above chance (0.10)
        assert metrics[name]["test_accuracy"] > 0.30, (name, metrics[name])
    shown = real_project.dvc("metrics", "show").stdout
    assert all(f"{name}.test_accuracy" in shown for name in GRID)


def test_real_data_shapes_and_preprocessing(real_project):
    data = real_project.path / "data/processed"
    X_train = np.load(data / "X_train.npy", mmap_mode="r")
    X_val, X_test = np.load(data / "X_val.npy", mmap_mode="r"), np.load(data / "X_test.npy", mmap_mode="r")
    assert X_train.shape == (45_000, 3072) and X_val.shape == (5000, 3072) and X_test.shape == (10_000, 3072)
    assert X_train.dtype == X_val.dtype == X_test.dtype == np.uint8  # the pixels; X = (pixels - mean) / scale
    mean = np.load(data / "mean_image.npy")
    assert np.abs(np.asarray(X_train).mean(axis=0, dtype=np.float64) - mean).max() < 1e-4  # of train only
    assert json.loads((data / "scale.json").read_text()) == {"scale": 255.0}
    assert sum(f.stat().st_size for f in data.iterdir()) <= 200e6  # no float32 copy: 185 MB, was 704 MB


def test_real_initial_loss_is_what_the_lecture_says(real_project):
    initial = pd.read_csv(real_project.path / "reports/initial_loss.csv")
    svm = initial[initial["loss"] == "svm"]["observed"]
    softmax = initial[initial["loss"] == "softmax"]["observed"]
    assert np.allclose(svm, 9.0, rtol=0.01) and np.allclose(softmax, np.log(10), rtol=0.01)


def test_real_weight_scaling_study(real_project):
    table = pd.read_csv(real_project.path / "reports/weight_scaling.csv")
    zero = table[table["model"].str.startswith("zero-hinge")].set_index("scale").sort_index()
    assert (zero.loc[zero.index >= 1, "hinge_loss"] == 0).all()
    assert zero["accuracy"].nunique() == 1 and zero["accuracy"].iloc[0] == 1.0
    assert zero["softmax_loss"].is_monotonic_decreasing
    one = zero.loc[1.0]
    for scale, row in zero.iterrows():
        assert row["l2_penalty"] == pytest.approx(one["l2_penalty"] * scale ** 2, rel=1e-4)
        assert row["l1_penalty"] == pytest.approx(one["l1_penalty"] * scale, rel=1e-4)
    for name in GRID:  # scaling never changes a trained model's accuracy either
        assert table[table["model"] == name]["accuracy"].nunique() == 1


def test_real_report_and_mlflow(real_project):
    from mlflow.tracking import MlflowClient

    report = (real_project.path / "reports/report.md").read_text()
    assert "svm-l2" in report and "templates/templates.png" in report
    assert "http://" not in (real_project.path / "reports/report.html").read_text()
    client = MlflowClient(real_project.tracking_uri)
    experiment = client.get_experiment_by_name("linclass-cifar10")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert set(GRID) <= {r.data.tags["model"] for r in runs if r.info.status == "FINISHED"}
    studies = client.get_experiment_by_name("linclass-cifar10-studies")
    runs = client.search_runs([studies.experiment_id], max_results=1000)
    finished = {r.info.run_name for r in runs if r.info.status == "FINISHED"}
    assert {"study-templates", "study-weight-scaling", "study-loss-behaviour", "study-hard-cases",
            "study-regularization-path", "study-hyperparameter-map", "report"} <= finished
    assert "The regularization path" in report and "The hyperparameter map" in report


def test_real_accuracy_goals_of_the_per_loss_rates(real_project):
    """Each loss at its own rate: the best test accuracy >= 0.41 and every combination within 0.01 of the best
    of its loss (measured with 45,000 training images: softmax 0.4118-0.4138, SVM 0.3944-0.3948)."""
    metrics = json.loads((real_project.path / "metrics/test.json").read_text())
    assert max(m["test_accuracy"] for m in metrics.values()) >= 0.41, metrics
    for loss in ("svm", "softmax"):
        accuracies = [metrics[f"{loss}-{reg}"]["test_accuracy"] for reg in ("none", "l1", "l2", "elasticnet")]
        assert max(accuracies) - min(accuracies) <= 0.01, (loss, accuracies)


def test_real_intervals_and_the_champion_against_the_runner_up(real_project):
    """5,000 validation images: a validation accuracy is known to +-1.4 points (10,000 test images: +-1.0); the
    champion is the best on validation, tested against the runner-up on the same images (measured:
    softmax-elasticnet against softmax-l1, within noise on validation, b=4 c=0, and on test, b=7 c=6)."""
    metrics = json.loads((real_project.path / "metrics/test.json").read_text())
    for name, m in metrics.items():
        assert m["val_accuracy_low"] < m["val_accuracy"] < m["val_accuracy_high"], name
        assert 0.025 < m["val_accuracy_high"] - m["val_accuracy_low"] < 0.028, (name, m)     # +-1.4 points
        assert 0.018 < m["test_accuracy_high"] - m["test_accuracy_low"] < 0.0196, (name, m)  # +-0.97 points
    chosen = json.loads((real_project.path / "metrics/champion.json").read_text())
    ranked = sorted(GRID, key=lambda n: (-metrics[n]["val_accuracy"], GRID.index(n)))
    assert [chosen["champion"], chosen["runner_up"]] == ranked[:2]
    assert chosen["val"]["images"] == 5000 and chosen["test"]["images"] == 10_000
    for split in ("val", "test"):
        r = chosen[split]
        assert r["difference"] == pytest.approx((r["b"] - r["c"]) / r["images"], abs=1e-6)
        assert r["verdict"] == ("within noise" if r["p_value"] > 0.05 else "better" if r["b"] > r["c"] else "worse")
    report = (real_project.path / "reports/report.md").read_text()
    assert f"Is the champion {chosen['champion']} really better than the runner-up {chosen['runner_up']}?" in report


def test_real_regularization_path(real_project):
    """On CIFAR-10 too: R(W) falls along every path, L1 sparsity grows to all-zero, L2 keeps W dense."""
    table = pd.read_csv(real_project.path / "reports/regularization_path/path.csv")
    for (loss, reg), rows in table.groupby(["loss", "regularizer"]):
        rows = rows.sort_values("strength")
        assert (np.diff(rows["penalty"]) <= 0).all(), (loss, reg, list(rows["penalty"]))
        if reg in ("l1", "elasticnet"):
            assert (np.diff(rows["near_zero"]) >= 0).all() and rows["near_zero"].iloc[-1] == 1.0, (loss, reg)
        else:
            assert (rows["near_zero"] < 0.1).all(), (loss, reg)




def test_real_champion_predicts_the_test_images_with_the_reported_accuracy(real_project):
    """models:/linclass-cifar10@champion on the real test images, raw uint8: the accuracy evaluate reported."""
    import mlflow

    from linclass.data.cifar import load_cifar10

    metrics = json.loads((real_project.path / "metrics/test.json").read_text())
    from linclass.tracking import runs

    client = mlflow.MlflowClient(real_project.tracking_uri)
    champion = client.get_model_version_by_alias("linclass-cifar10", "champion")
    name = champion.tags["model"]
    assert name == max(GRID, key=lambda n: (metrics[n]["val_accuracy"], -GRID.index(n)))
    runs.point_mlflow_at(real_project.tracking_uri)  # not mlflow.set_tracking_uri: it exports the URI
    model = mlflow.pyfunc.load_model("models:/linclass-cifar10@champion")
    data = load_cifar10(SHARED_CIFAR)
    images = data.x_test.reshape(len(data.x_test), 3, 32, 32).transpose(0, 2, 3, 1)
    predicted = model.predict(images)["class"].to_numpy()
    accuracy = float(np.mean(predicted == np.asarray(data.class_names)[data.y_test]))
    assert accuracy == metrics[name]["test_accuracy"]
    assert accuracy == client.get_run(champion.run_id).data.metrics["test_accuracy"]
