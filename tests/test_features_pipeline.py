"""The features axis of the grid through real DVC and MLflow on the small synthetic archive: the stage
features@hog_hist, the stage train_features@hog_hist (every loss x regularizer on the features, side by side in
forked processes) and evaluate with both inputs."""
from __future__ import annotations

import json
import re
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import BIN, SMALL, make_project, warm_stages

pytestmark = pytest.mark.slow

PIXELS = ["svm-l2", "softmax-l2"]
FEATURES = ["svm-l2-hog_hist", "softmax-l2-hog_hist"]
OVERRIDES = ("grid.losses=[svm,softmax]", "grid.regularizers=[l2]", "grid.features=[hog_hist]")


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, archive_server):
    """The project after `dvc repro evaluate`, its stages started from a warm interpreter (conftest.warm_stages;
    the fresh process per stage is under test in tests/test_pipeline.py and tests/test_docs.py)."""
    url, md5 = archive_server
    small = [o for o in SMALL if not o.startswith("grid.features=")]
    project = make_project(tmp_path_factory.mktemp("features") / "project",
                           (f"data.url={url}", f"data.md5={md5}", *small, *OVERRIDES))
    with warm_stages(project):
        yield project, project.dvc("repro", "evaluate").stdout, [f"data.url={url}", f"data.md5={md5}", *small]


def test_the_features_stage_writes_standardized_features_of_every_split(evaluated):
    project, out, _ = evaluated
    assert ran_stages(out) == {"download", "preprocess", "features@hog_hist", "evaluate",
                               "train_features@hog_hist", *(f"train@{n}" for n in PIXELS)}, out[-2000:]
    folder = project.path / "data/features/hog_hist"
    layout = json.loads((folder / "layout.json").read_text())
    assert layout["dim"] == 738 and layout["parts"] == {"hue": [0, 10], "value": [10, 18], "hog8": [18, 666],
                                                        "hog16": [666, 738]}
    sizes = {"train": 500, "val": 100, "test": 200}   # 600 training images, 100 of them for validation
    for split, n in sizes.items():
        X = np.load(folder / f"X_{split}.npy")
        assert X.dtype == np.float32 and X.shape == (n, 738) and np.isfinite(X).all()
    X_train = np.load(folder / "X_train.npy")
    varying = np.load(folder / "std.npy") != 1   # a constant column (std 0 -> 1) stays at 0
    np.testing.assert_allclose(X_train.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(X_train.std(axis=0)[varying], 1, rtol=1e-3)
    assert varying.sum() > 700


def test_feature_models_are_models_like_any_other(evaluated):
    project, _, _ = evaluated
    metrics = json.loads((project.path / "metrics/test.json").read_text())
    assert sorted(metrics) == sorted(PIXELS + FEATURES)
    table = pd.read_csv(project.path / "reports/comparison.csv")
    assert dict(zip(table["model"], table["features"])) == {**dict.fromkeys(PIXELS, "pixels"),
                                                            **dict.fromkeys(FEATURES, "hog_hist")}
    params = yaml.safe_load((project.path / "params.yaml").read_text())
    strength = dict(zip(table["model"], table["strength"]))
    assert strength["svm-l2-hog_hist"] == params["features"]["strength"]["l2"]
    assert strength["svm-l2"] == params["regularizer"]["l2"]["strength"]
    for name in FEATURES:   # the synthetic classes differ in colour and shape: the features see them
        assert metrics[name]["test_accuracy"] > 0.5, (name, metrics[name])
    per_class = json.loads((project.path / "metrics/per_class.json").read_text())
    assert set(per_class) == set(PIXELS + FEATURES)


def test_mlflow_runs_carry_the_features_and_the_feature_weights(evaluated):
    from mlflow.tracking import MlflowClient

    project, _, _ = evaluated
    client = MlflowClient(project.tracking_uri)
    experiment = client.get_experiment_by_name("linclass-cifar10")
    runs = {r.data.tags["model"]: r for r in client.search_runs([experiment.experiment_id], max_results=100)}
    assert sorted(runs) == sorted(PIXELS + FEATURES)
    params = yaml.safe_load((project.path / "params.yaml").read_text())
    for name, run in runs.items():
        kind = "hog_hist" if name in FEATURES else "pixels"
        assert run.info.status == "FINISHED"
        assert run.data.tags["features"] == kind and run.data.params["features"] == kind
        top = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"templates_grid.png", "loss_curves.png", "confusion_matrix.png", "training"} <= top, top
        if kind == "hog_hist":
            loss = name.split("-")[0]
            assert run.data.tags["dvc_stage"] == "train_features@hog_hist"
            assert float(run.data.params["learning_rate"]) == params["features"]["learning_rate"][loss]
            assert run.data.tags["features_settings"] == \
                "hue_bins=10 value_bins=8 orientations=18 signed=true cells=[8, 16]"
            assert set(run.data.params) == set(runs[name.removesuffix("-hog_hist")].data.params)   # the same names
            assert "plots" not in top   # no template images: the weights are not an image
            assert "on the hog_hist features" in run.data.tags["mlflow.note.content"]
        else:
            assert "features_settings" not in run.data.tags
        assert "model_id" in run.data.tags   # an MLflow Model that takes raw images
    versions = client.search_model_versions("name = 'linclass-cifar10'")
    assert sorted(v.tags["model"] for v in versions) == sorted(PIXELS + FEATURES)   # models like any other
    assert {v.tags["model"]: v.tags["features"] for v in versions} == {
        **dict.fromkeys(PIXELS, "pixels"), **dict.fromkeys(FEATURES, "hog_hist")}
    champion = client.get_model_version_by_alias("linclass-cifar10", "champion")
    metrics = json.loads((project.path / "metrics/champion.json").read_text())
    assert champion.tags["model"] == metrics["champion"]   # chosen among all of them


def test_a_registered_features_model_computes_its_features_from_raw_images(evaluated, tmp_path):
    """Loaded where linclass is not installed (its own code/ folder brings linclass.features), the registered
    model gives the pipeline's scores, bit for bit, from the raw test images."""
    from mlflow.tracking import MlflowClient

    from linclass.data.cifar import as_images

    project, _, _ = evaluated
    client = MlflowClient(project.tracking_uri)
    [version] = [v for v in client.search_model_versions("name = 'linclass-cifar10'")
                 if v.tags["model"] == "softmax-l2-hog_hist"]
    images = np.ascontiguousarray(as_images(np.load(project.path / "data/processed/X_test.npy")))
    np.save(tmp_path / "images.npy", images)
    script = f"""
import json, sys
sys.path = [p for p in sys.path if not p.rstrip("/").endswith("src")]   # the project's own linclass
import mlflow, numpy as np
mlflow.set_tracking_uri({project.tracking_uri!r})
model = mlflow.pyfunc.load_model("models:/linclass-cifar10/{version.version}")
images = np.load({str(tmp_path / "images.npy")!r})
np.save({str(tmp_path / "scores.npy")!r}, model.unwrap_python_model().scores(images))
table = model.predict(images)
import linclass
print(json.dumps({{"linclass": linclass.__file__, "classes": table["class"].tolist()}}))
"""
    proc = subprocess.run([str(BIN / "python"), "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env={k: v for k, v in project.env.items() if k != "PYTHONPATH"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "/artifacts/" in out["linclass"] and "/code/linclass/" in out["linclass"], out["linclass"]
    X_test = np.load(project.path / "data/features/hog_hist/X_test.npy")
    W = np.load(project.path / "models/hog_hist/softmax-l2/W.npy")
    b = np.load(project.path / "models/hog_hist/softmax-l2/b.npy")
    assert np.load(tmp_path / "scores.npy").tobytes() == (X_test @ W.T + b).tobytes()
    names = json.loads((project.path / "data/processed/classes.json").read_text())
    assert out["classes"] == [names[i] for i in (X_test @ W.T + b).argmax(axis=1)]


def test_a_features_setting_reruns_the_features_and_their_models_only(evaluated):
    """...and only the settings a features model reads do (not a pixel model's rate or strength)."""
    project, _, base = evaluated
    assert json.loads(project.dvc("status", "--json", "--with-deps", "evaluate").stdout) == {}
    project.compose(*base, *OVERRIDES, "features.orientations=9")
    changed = set(json.loads(project.dvc("status", "--json", "--with-deps", "evaluate").stdout))
    assert changed == {"features@hog_hist", "train_features@hog_hist"}, changed
    project.compose(*base, *OVERRIDES, "features.learning_rate.svm=0.01")
    changed = set(json.loads(project.dvc("status", "--json", "--with-deps", "evaluate").stdout))
    assert changed == {"train_features@hog_hist"}, changed   # the features models train together
    # a pixel model's own rate and strength leave the features models alone; what they read does not
    for pixels_only, stale in ((("loss.svm.learning_rate=0.123", "regularizer.l2.strength=0.0456"), set()),
                               (("loss.svm.delta=2.0",), {"train_features@hog_hist"}),
                               (("regularizer.elasticnet.beta=0.25",), {"train_features@hog_hist"})):
        project.compose(*base, *OVERRIDES, *pixels_only)
        changed = set(json.loads(project.dvc("status", "--json", "--with-deps", "evaluate").stdout))
        assert changed - {f"train@{name}" for name in PIXELS} == stale, (pixels_only, changed)
    project.compose(*base, *OVERRIDES)
    assert json.loads(project.dvc("status", "--json", "--with-deps", "evaluate").stdout) == {}


def test_a_features_stage_outside_the_grid_is_one_line(evaluated):
    project, _, _ = evaluated
    for stage in ("features@sift", ""):
        proc = subprocess.run([str(BIN / "python"), "pipeline/features.py"], cwd=project.path, capture_output=True,
                              text=True, env={**project.env, "PYTHONPATH": "src", "DVC_STAGE": stage})
        assert proc.returncode != 0
        assert f"DVC_STAGE={stage!r} is not a features stage of the grid; allowed: features@hog_hist" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_the_report_sets_pixels_against_features(evaluated):
    project, _, _ = evaluated
    versus = json.loads((project.path / "reports/evaluation/pixels_vs_features.json").read_text())
    metrics = json.loads((project.path / "metrics/test.json").read_text())
    assert versus["pixels"] in PIXELS and versus["features"] in FEATURES and versus["kind"] == "hog_hist"
    assert versus["test"]["champion_accuracy"] == metrics[versus["features"]]["test_accuracy"]
    assert versus["test"]["runner_up_accuracy"] == metrics[versus["pixels"]]["test_accuracy"]
    assert sum(row["images"] for row in versus["per_class"]) == 200
    assert len(versus["twins"]) == 2
    for row in versus["per_class"]:
        for side in ("pixels", "features"):
            assert row[f"{side}_accuracy_low"] <= row[f"{side}_accuracy"] <= row[f"{side}_accuracy_high"]
    assert (project.path / "reports/evaluation/feature_weights.png").stat().st_size > 5000

    from linclass.studies.report import features_blocks

    blocks = features_blocks(project.path / "reports/evaluation")
    text = " ".join(block.get("text", "") for block in blocks)
    test = versus["test"]
    assert f"on the 200 test images: {versus['features']} {test['champion_accuracy']:.4f} against " \
           f"{versus['pixels']} {test['runner_up_accuracy']:.4f}" in text
    assert f"b = {test['b']} images only the features model got right" in text
    table = next(block for block in blocks if block["kind"] == "table")
    assert table["columns"] == ["class", "images", "pixels (95%)", "features (95%)", "difference"]
    assert len(table["rows"]) == 10


def test_the_features_models_of_a_kind_are_one_folder_and_one_metrics_file(evaluated):
    project, _, _ = evaluated
    assert sorted(p.name for p in (project.path / "models/hog_hist").iterdir()) == ["softmax-l2", "svm-l2"]
    summaries = json.loads((project.path / "metrics/train/hog_hist.json").read_text())
    assert sorted(summaries) == sorted(FEATURES)
    for name, summary in summaries.items():
        assert 0 <= summary["val_accuracy_low"] <= summary["val_accuracy"] <= summary["val_accuracy_high"] <= 1
        folder = project.path / "models/hog_hist" / name.removesuffix("-hog_hist")
        assert {p.name for p in folder.iterdir()} == {"W.npy", "b.npy", "history_steps.csv", "history_epochs.csv"}
        assert np.load(folder / "W.npy").shape == (10, 738)


def weights(project) -> dict[str, bytes]:
    return {str(p.relative_to(project.path)): p.read_bytes() for p in sorted(project.path.glob("models/hog_hist/*/*"))
            if p.suffix == ".npy"}


def test_the_features_models_are_the_same_trained_one_after_another(evaluated):
    """Two processes side by side (this machine's cores) or one (taskset to one core): the same bytes."""
    project, _, _ = evaluated
    side_by_side = weights(project)
    proc = subprocess.run(["taskset", "-c", "0", str(BIN / "python"), "pipeline/train.py"], cwd=project.path,
                          capture_output=True, text=True,
                          env={**project.env, "PYTHONPATH": "src", "DVC_STAGE": "train_features@hog_hist"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert weights(project) == side_by_side and len(side_by_side) == 4
    assert json.loads(project.dvc("status", "--json", "train_features@hog_hist").stdout) == {}


def test_a_failing_features_model_stops_the_stage_and_writes_nothing(evaluated):
    from mlflow.tracking import MlflowClient

    project, _, base = evaluated
    before = weights(project)
    project.compose(*base, *OVERRIDES, "features.learning_rate.softmax=1e30")   # softmax diverges at once
    try:
        proc = project.dvc("repro", "train_features@hog_hist", check=False)
    finally:
        project.compose(*base, *OVERRIDES)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "training diverged" in errors[0] and "lower learning_rate" in errors[0], proc.stderr
    assert not (project.path / "models/hog_hist").exists()   # DVC removed the outputs; nothing new was written
    client = MlflowClient(project.tracking_uri)
    experiment = client.get_experiment_by_name("linclass-cifar10")
    runs = client.search_runs([experiment.experiment_id], "tags.features = 'hog_hist'", max_results=100)
    assert {r.info.status for r in runs} <= {"FINISHED", "FAILED", "KILLED"}
    assert "FAILED" in {r.info.status for r in runs if r.data.tags["loss"] == "softmax"}
    project.dvc("checkout", "train_features@hog_hist")
    assert weights(project) == before


def test_a_killed_features_process_fails_the_stage_at_once(evaluated):
    """One of the side-by-side processes killed (SIGKILL: it cannot end its run): the stage stops the other
    one and fails in one line instead of waiting for a result that never comes; nothing is written."""
    import psutil
    from mlflow.tracking import MlflowClient

    project, _, base = evaluated
    before = weights(project)
    project.compose(*base, *OVERRIDES, "train.epochs=3000")   # long enough to be killed while training
    try:
        proc = subprocess.Popen([str(BIN / "python"), "pipeline/train.py"], cwd=project.path, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**project.env, "PYTHONPATH": "src", "DVC_STAGE": "train_features@hog_hist"})
        stage = psutil.Process(proc.pid)
        deadline = time.monotonic() + 120
        while len(stage.children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)   # both are training
        stage.children()[0].kill()
        out, err = proc.communicate(timeout=120)
    finally:
        project.compose(*base, *OVERRIDES)
    assert proc.returncode != 0
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "terminated abruptly" in errors[0], err[-3000:]
    assert weights(project) == before
    project.run(str(BIN / "python"), "-m", "linclass.cli", "reap")   # the killed one's run: its process is gone
    client = MlflowClient(project.tracking_uri)
    experiment = client.get_experiment_by_name("linclass-cifar10")
    runs = client.search_runs([experiment.experiment_id], "tags.features = 'hog_hist'", max_results=200)
    assert "RUNNING" not in {r.info.status for r in runs}


def test_a_sweep_on_the_features_tables_the_features_model(evaluated):
    """`linclass sweep --features hog_hist` through DVC's queue: the point trains that features model at its
    own rate and strength; the table and its CSV show it, with its test accuracy."""
    import pandas as pd

    project, _, base = evaluated
    done = project.run(str(BIN / "python"), "-m", "linclass.cli", "sweep", "--loss", "svm", "--regularizer", "l2",
                       "--learning-rates", "0.03", "--strengths", "1e-2", "--features", "hog_hist", "--jobs", "1",
                       *base)
    assert "best on validation: sweep-svm-l2-hog_hist-lr0.03-s0.01 (svm-l2-hog_hist, learning_rate=0.03, " \
           "strength=0.01)" in done.stdout, done.stdout[-3000:]
    [row] = pd.read_csv(project.path / "sweeps/svm-l2-hog_hist.csv").to_dict("records")
    assert (row["model"], row["learning_rate"], row["strength"]) == ("svm-l2-hog_hist", 0.03, 0.01)
    assert 0 < row["val_accuracy"] <= 1 and 0 < row["test_accuracy"] <= 1
    assert (project.path / "reports/hyperparameter_map/svm-l2-hog_hist.png").exists()
