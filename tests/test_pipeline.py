"""The real pipeline (`dvc repro`) on a small archive in the official layout, served over HTTP."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import yaml
from conftest import SMALL, make_project, warm_stages

pytestmark = pytest.mark.slow

GRID = [f"{loss}-{reg}" for loss in ("svm", "softmax") for reg in ("none", "l1", "l2", "elasticnet")]


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def mlflow_runs(project, experiment_name="linclass-cifar10"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(project.tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    assert experiment is not None, f"the experiment {experiment_name} was not created"
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory, archive_server):
    """One `dvc repro` of a project copy, shared by the tests of this module: (project, its output). Its stages
    start from a warm interpreter (conftest.warm_stages)."""

    url, md5 = archive_server
    project = make_project(tmp_path_factory.mktemp("pipeline") / "project",
                           (f"data.url={url}", f"data.md5={md5}", *SMALL))
    with warm_stages(project):
        proc = project.dvc("repro")
        yield project, proc.stdout + proc.stderr


def test_repro_runs_every_stage(reproduced):
    project, first = reproduced
    expected = {"download", "preprocess", "evaluate", *(f"train@{name}" for name in GRID),
                "templates", "weight_scaling", "loss_study", "hard_cases", "regularization_path",
                "hyperparameter_map", "report"}
    assert ran_stages(first) == expected, first[-2000:]
    assert json.loads(project.dvc("status", "--json").stdout) == {}
    # MLflow's six lines a logged model (uv project detected, uv.lock copied, no pip...) are not shown, nor its two
    # of the new store's tables in the first training stage ("Creating initial MLflow database tables...")
    assert "mlflow.utils" not in first and "mlflow.pyfunc" not in first, first[-3000:]
    assert "mlflow.store" not in first and "database tables" not in first, first[-3000:]

    metrics = json.loads((project.path / "metrics/test.json").read_text())
    assert sorted(metrics) == sorted(GRID)
    for name, values in metrics.items():
        assert values["test_accuracy"] > 0.5, f"{name} did not learn the synthetic classes: {values}"
    shown = project.dvc("metrics", "show").stdout
    for name in GRID:
        assert f"{name}.test_accuracy" in shown


def test_mlflow_holds_one_finished_run_per_combination(reproduced):
    project, _ = reproduced
    client, runs = mlflow_runs(project)
    by_name = {}
    for run in runs:  # training runs only: named <model>-<params hash>
        by_name.setdefault(run.data.tags["model"], []).append(run)
    for name in GRID:
        assert len(by_name.get(name, [])) == 1, f"expected one run named {name}, got {len(by_name.get(name, []))}"
        run = by_name[name][0]
        assert run.info.status == "FINISHED"
        loss, reg = name.split("-")
        assert run.data.tags["loss"] == loss and run.data.tags["regularizer"] == reg
        assert run.data.tags["dvc_stage"] == f"train@{name}"
        assert re.fullmatch(r"[0-9a-f]{40}", run.data.tags["git_commit"])
        assert run.data.tags["data_md5"] == yaml.safe_load((project.path / "params.yaml").read_text())["data"]["md5"]
        assert (
            run.data.params["epochs"] == "3" and run.data.params["strength"] and run.data.params["regularizer"] == reg
        )
        # histories: one value per SGD step (500 train images / 50 a batch * 3 epochs) and per epoch
        for key, length in (("data_loss", 30), ("reg_loss", 30), ("total_loss", 30),
                            ("train_accuracy", 3), ("val_accuracy", 3)):
            assert len(client.get_metric_history(run.info.run_id, key)) == length, key
        assert 0 <= run.data.metrics["test_accuracy"] <= 1
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots/templates")}
        assert len(artifacts) == 10 and all(p.endswith(".png") for p in artifacts), artifacts
        top = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"training", "plots", "evaluation"} <= top, top
        inputs = run.inputs.dataset_inputs
        assert inputs and inputs[0].dataset.name == "cifar10"
    _, study_runs = mlflow_runs(project, "linclass-cifar10-studies")
    by_name = {}
    for run in study_runs:
        by_name.setdefault(run.info.run_name, []).append(run)
    for study in ("study-templates", "study-weight-scaling", "study-loss-behaviour", "study-hard-cases",
                  "study-regularization-path", "study-hyperparameter-map", "report"):
        assert [r.info.status for r in by_name.get(study, [])] == ["FINISHED"], study


def test_study_outputs(reproduced):
    project, _ = reproduced
    table = pd.read_csv(project.path / "reports/weight_scaling.csv")
    assert {"model", "scale", "accuracy", "hinge_loss", "softmax_loss", "l1_penalty", "l2_penalty",
            "elasticnet_penalty"} <= set(table.columns)
    assert set(table["model"]) == {*GRID, "zero-hinge-20"}
    zero = table[table["model"] == "zero-hinge-20"]
    assert (zero[zero["scale"] >= 1]["hinge_loss"] == 0).all()
    for name in ("templates/templates.png", "templates/weight_histograms.png", "scaling/hinge_loss.png",
                 "scaling/softmax_loss.png", "hard_cases/decision_regions.png", "report.md", "report.html"):
        assert (project.path / "reports" / name).stat().st_size > 1000, name
    path = pd.read_csv(project.path / "reports/regularization_path/path.csv")
    assert len(path) == 2 * 3 * 2 and set(path["regularizer"]) == {"l1", "l2", "elasticnet"}   # SMALL's strengths
    for name in ("regularization_path/curves.png", "regularization_path/templates.png",
                 "hyperparameter_map/svm-l2.png", "hyperparameter_map/softmax-l2.png"):
        assert (project.path / "reports" / name).stat().st_size > 5000, name
    report = (project.path / "reports/report.md").read_text()
    assert "The regularization path" in report and "The hyperparameter map" in report
    hard = pd.read_csv(project.path / "reports/hard_cases.csv")
    assert (hard[hard["dataset"] == "separable"]["accuracy"] >= 0.97).all()


def test_an_experiment_of_the_workspace_s_own_settings_runs_and_records_nothing(reproduced, archive_server):
    """DVC ran nothing for it and listed it as one more experiment, the same as the workspace."""
    import subprocess

    from conftest import BIN, SMALL, layered

    project, _ = reproduced
    url, md5 = archive_server
    params = (project.path / "params.yaml").read_bytes()
    same = layered(f"data.url={url}", f"data.md5={md5}", *SMALL)
    proc = subprocess.run([str(BIN / "linclass"), "exp", *same], cwd=project.path, env=project.env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.startswith("nothing to run: data.url="), proc.stdout + proc.stderr
    assert proc.stdout.rstrip().endswith("no experiment recorded") and proc.stderr == "", proc.stdout + proc.stderr
    assert project.dvc("exp", "list", "--all-commits").stdout.strip() == ""
    assert (project.path / "params.yaml").read_bytes() == params
    assert not (project.path / ".dvc" / "tmp" / "linclass-warm.log").exists()   # not even a warm interpreter


def test_second_repro_runs_nothing_and_a_change_reruns_only_its_stages(reproduced):
    project, _ = reproduced
    with warm_stages(project):   # what reruns starts warm, as in the fixture
        again = project.dvc("repro")
        assert ran_stages(again.stdout) == set(), again.stdout
        # DVC lists a folder's outputs in its .gitignore in the order the stages finished (which parallel runs
        # and interruptions change): that order is no input of evaluate, which reads the folder
        gitignore = project.path / "metrics/train/.gitignore"
        lines = gitignore.read_text().splitlines()
        assert len(lines) == len(GRID), lines
        gitignore.write_text("\n".join(reversed(lines)) + "\n")
        assert json.loads(project.dvc("status", "--json").stdout) == {}

        project.compose(*project_overrides(project), "regularizer.l1.strength=0.0005")
        changed = set(json.loads(project.dvc("status", "--json").stdout))
        assert changed == {"train@svm-l1", "train@softmax-l1"}, changed  # the only stages whose own inputs changed
        third = project.dvc("repro")
        # the two L1 models, and what reads the models; not the data, the other models or the 2-D cases
        assert ran_stages(third.stdout) == {"train@svm-l1", "train@softmax-l1", "evaluate", "templates",
                                            "weight_scaling", "loss_study", "report"}, third.stdout[-2000:]
        # it said "8 versions this run": 6 of them are the earlier runs' versions
        assert "8 versions this run (2 new: the others were registered before)" in third.stdout, \
            third.stdout[-3000:]
        assert json.loads(project.dvc("status", "--json").stdout) == {}

        # one loss's learning rate: that loss's models and the path (which trains every loss), nothing else
        project.compose(*project_overrides(project), "regularizer.l1.strength=0.0005",
                        "loss.svm.learning_rate=0.02")
        changed = set(json.loads(project.dvc("status", "--json").stdout))
        assert changed == {*(f"train@svm-{reg}" for reg in ("none", "l1", "l2", "elasticnet")), "loss_study",
                           "regularization_path"}, changed


def project_overrides(project) -> list[str]:
    """The overrides the project copy was composed with (url, md5 and the shrinking ones)."""
    params = yaml.safe_load((project.path / "params.yaml").read_text())
    return [f"data.url={params['data']['url']}", f"data.md5={params['data']['md5']}", *SMALL]



def test_a_champion_trained_again_is_not_its_own_runner_up(reproduced):
    """The same model and settings trained again (dvc repro -f) is the same weights in a new registered version:
    it was the champion's runner-up, and the paired test said "within noise" of a model against itself."""
    from mlflow.tracking import MlflowClient

    project, _ = reproduced
    project.compose(*project_overrides(project), "regularizer.l1.strength=0.0005")   # as the test before ran it
    assert json.loads(project.dvc("status", "--json").stdout) == {}
    champion = json.loads((project.path / "metrics/champion.json").read_text())["champion"]
    with warm_stages(project):
        again = project.dvc("repro", "-f", "--single-item", f"train@{champion}", "evaluate")
    assert "versions this run (1 new: the others were registered before)" in again.stdout, again.stdout[-3000:]
    client = MlflowClient(project.tracking_uri)
    top = client.get_model_version_by_alias("linclass-cifar10", "champion")
    twins = [v for v in client.search_model_versions("name = 'linclass-cifar10'")
             if (v.tags.get("model"), v.tags.get("params_hash")) == (champion, top.tags["params_hash"])]
    assert top.tags["model"] == champion and len(twins) == 2, [v.version for v in twins]
    rival = client.get_model_version("linclass-cifar10", top.tags["runner_up_version"])
    assert (rival.tags["model"], rival.tags["params_hash"]) != (champion, top.tags["params_hash"]), rival.tags
