"""The real pipeline (`dvc repro`) on a small archive in the official layout, served over HTTP."""
from __future__ import annotations

import json
import re

import pytest
import yaml

pytestmark = pytest.mark.slow

GRID = [f"{loss}-{reg}" for loss in ("svm", "softmax") for reg in ("none", "l1", "l2", "elasticnet")]


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def mlflow_runs(project):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(project.tracking_uri)
    experiment = client.get_experiment_by_name("linclass-cifar10")
    assert experiment is not None, "the experiment was not created"
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


def test_repro_runs_everything_then_nothing_then_only_what_changed(small_project):
    project = small_project
    first = project.dvc("repro")
    expected = {"download", "preprocess", "evaluate", *(f"train@{name}" for name in GRID)}
    assert expected <= ran_stages(first.stdout), first.stdout[-2000:]
    assert "up to date" in project.dvc("status").stdout.lower() or project.dvc("status", "--json").stdout.strip() == "{}"

    metrics = json.loads((project.path / "metrics/test.json").read_text())
    assert sorted(metrics) == sorted(GRID)
    for name, values in metrics.items():
        assert values["test_accuracy"] > 0.5, f"{name} did not learn the synthetic classes: {values}"
    shown = project.dvc("metrics", "show").stdout
    for name in GRID:
        assert f"{name}.test_accuracy" in shown

    again = project.dvc("repro")
    assert ran_stages(again.stdout) == set(), again.stdout

    project.compose(*project_overrides(project), "regularizer.l1.strength=0.0005")
    status = project.dvc("status", "--json").stdout
    changed = set(json.loads(status))
    assert {"train@svm-l1", "train@softmax-l1"} <= changed
    assert not changed & {"download", "preprocess", "train@svm-l2", "train@softmax-none",
                          "train@svm-elasticnet"}, changed
    third = project.dvc("repro")
    reran = ran_stages(third.stdout)
    assert {"train@svm-l1", "train@softmax-l1", "evaluate"} <= reran
    assert not reran & {"download", "preprocess", *(f"train@{n}" for n in GRID if not n.endswith("-l1"))}, reran


def project_overrides(project) -> list[str]:
    """The overrides the project copy was composed with (url, md5 and the shrinking ones)."""
    params = yaml.safe_load((project.path / "params.yaml").read_text())
    from conftest import SMALL

    return [f"data.url={params['data']['url']}", f"data.md5={params['data']['md5']}", *SMALL]


def test_mlflow_holds_one_finished_run_per_combination(small_project):
    project = small_project
    project.dvc("repro")
    client, runs = mlflow_runs(project)
    by_name = {}
    for run in runs:
        by_name.setdefault(run.info.run_name, []).append(run)
    for name in GRID:
        assert len(by_name.get(name, [])) == 1, f"expected one run named {name}, got {len(by_name.get(name, []))}"
        run = by_name[name][0]
        assert run.info.status == "FINISHED"
        loss, reg = name.split("-")
        assert run.data.tags["loss"] == loss and run.data.tags["regularizer"] == reg
        assert run.data.tags["dvc_stage"] == f"train@{name}"
        assert re.fullmatch(r"[0-9a-f]{40}", run.data.tags["git_commit"])
        assert run.data.tags["data_md5"] == yaml.safe_load((project.path / "params.yaml").read_text())["data"]["md5"]
        assert run.data.params["train.epochs"] == "3" and run.data.params[f"regularizer.{reg}.strength"]
        # histories: one value per SGD step (500 train images / 50 a batch * 3 epochs) and per epoch
        for key, length in (("data_loss", 30), ("reg_loss", 30), ("total_loss", 30),
                            ("train_accuracy", 3), ("val_accuracy", 3)):
            assert len(client.get_metric_history(run.info.run_id, key)) == length, key
        assert 0 <= run.data.metrics["test_accuracy"] <= 1
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots/templates")}
        assert len(artifacts) == 10 and all(p.endswith(".png") for p in artifacts), artifacts
        top = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"model", "plots", "evaluation"} <= top, top
        inputs = run.inputs.dataset_inputs
        assert inputs and inputs[0].dataset.name == "cifar10"
