"""How the MLflow UI shows linclass's runs: the experiments' kind, the runs table's columns, the links.

What MLflow 3.17 offers, and what linclass does with it:
- The UI opens an experiment in its GenAI view (traces, judges, prompts) unless the page's address says
  `workflowType=machine_learning`, or the browser remembers the switch at the top of the sidebar (it keeps the
  last choice, per browser). The experiment tag `mlflow.experimentKind` no longer decides in 3.17, but is set
  for the MLflow versions it does. So every link linclass prints carries `workflowType=machine_learning`: the
  training runs, the studies, and the Compare page of the latest models (`links`).
- The runs table opens with no metric and no param as columns unless a view is given: the training experiment
  keeps a shared view (RUNS_VIEW: the accuracies with their 95% intervals and the settings, best on
  validation first), opened by the link's `viewStateShareKey`. The UI drops it when one leaves the page (the
  breadcrumb back shows the user's own view): "Save as my view" in its banner keeps it.
- The AI assistant's panel opens by itself on a fresh browser at localhost / 127.0.0.1 and cannot be hidden by
  the server (no setting in 3.17); every server of the project refuses all the assistant's calls
  (linclass.orchestration.guard), and the panel's close button keeps it closed in that browser.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import mlflow
from mlflow.tracking import MlflowClient

# Older MLflow UIs open an experiment with this tag in the classic machine-learning view (runs, charts, models).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
ML_VIEW = "workflowType=machine_learning"

# The runs table as the training experiment opens with ?viewStateShareKey=linclass (a "shared view" of
# the MLflow UI, kept as an experiment tag): the accuracies with their 95% intervals and the settings that
# differ between runs, best on validation first. Without it the table shows no metric and no param.
RUNS_VIEW_KEY = "linclass"
COLUMNS = ["attributes.`Models`",
           *(f"metrics.`{split}_accuracy{end}`" for split in ("val", "test") for end in ("", "_low", "_high")),
           "metrics.`train_accuracy`",
           *(f"params.`{p}`" for p in ("loss", "regularizer", "strength", "learning_rate", "epochs", "batch_size",
                                       "val_size"))]
# columnOrder: in this order, not the table's default (metrics by name: test_accuracy before val_accuracy)
RUNS_VIEW = {"selectedColumns": COLUMNS, "columnOrder": ["attributes.`Run Name`", *COLUMNS],
             "orderByKey": "metrics.`val_accuracy`", "orderByAsc": False}


def set_runs_view(experiment_id: str) -> None:
    """Store RUNS_VIEW in the training experiment (only if it is not there yet).

    Two stages doing this at once can collide; the view is a convenience, so that costs a warning only.
    """
    client, key, value = MlflowClient(), f"mlflow.sharedViewState.{RUNS_VIEW_KEY}", json.dumps(RUNS_VIEW)
    try:
        if client.get_experiment(experiment_id).tags.get(key) != value:
            client.set_experiment_tag(experiment_id, key, value)
    except mlflow.exceptions.MlflowException as exc:
        print(f"warning: the MLflow runs view was not stored: {str(exc).splitlines()[0]}", file=sys.stderr)


def ui_url(experiment_id: str, base: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI page of the training runs: machine-learning view, RUNS_VIEW's columns."""
    return f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={RUNS_VIEW_KEY}&{ML_VIEW}"


def experiment_url(experiment_id: str, base: str = "http://127.0.0.1:5000") -> str:
    """An experiment's runs in the machine-learning view (e.g. the studies)."""
    return f"{base}/#/experiments/{experiment_id}/runs?{ML_VIEW}"


def compare_url(run_ids: list[str], experiment_id: str, base: str = "http://127.0.0.1:5000") -> str:
    """MLflow's Compare page of these runs: params, metrics, parallel coordinates, the pictures side by side."""
    runs, experiments = quote(json.dumps(run_ids, separators=(",", ":"))), quote(json.dumps([experiment_id]))
    return f"{base}/#/compare-runs?runs={runs}&experiments={experiments}&{ML_VIEW}"


def workspace_weights(root: Path) -> dict[str, str]:
    """model -> weights_md5 of the models in the workspace (metrics/test.json, written by evaluate); {} if none."""
    try:
        tested = json.loads((root / "metrics" / "test.json").read_text())
    except (OSError, ValueError):
        return {}
    return {model: row["weights_md5"] for model, row in tested.items()
            if isinstance(row, dict) and isinstance(row.get("weights_md5"), str)}


def latest_evaluated_runs(client, experiment_id: str, weights: Mapping[str, str] | None = None,
                          limit: int = 1000) -> list[str]:
    """The newest finished run of each model that the evaluate stage gave a test accuracy, best on validation first.

    With `weights` (model -> weights_md5, workspace_weights), only the runs of those models with those weights: an
    experiment run after the workspace's models (make exp, then back with git checkout params.yaml && make repro,
    which restores the models from DVC's cache and logs no run) is newer but not what the workspace holds.
    """
    runs = client.search_runs([experiment_id], "attributes.status = 'FINISHED'", max_results=limit,
                              order_by=["attributes.start_time DESC"])
    newest = {}
    for run in runs:
        model = run.data.tags.get("model")
        if not model or model in newest or "test_accuracy" not in run.data.metrics:
            continue
        if weights and weights.get(model) != run.data.tags.get("weights_md5"):
            continue
        newest[model] = run
    ranked = sorted(newest.values(), key=lambda run: -run.data.metrics.get("val_accuracy", float("-inf")))
    return [run.info.run_id for run in ranked]


def links(client, experiment_id: str, studies_id: str, base: str, root: Path | None = None) -> list[str]:
    """The lines `linclass ui` prints: where to click first. With the project's `root`, Compare shows the
    workspace's models (metrics/test.json); without one, or before evaluate wrote it, the newest runs."""
    lines = [f"the training runs, compared: {ui_url(experiment_id, base)}"]
    weights = workspace_weights(root) if root is not None else {}
    evaluated = latest_evaluated_runs(client, experiment_id, weights)
    if len(evaluated) > 1:
        whose = "the workspace's" if weights else "the latest"
        lines.append(f"{whose} {len(evaluated)} models side by side (Compare): "
                     f"{compare_url(evaluated, experiment_id, base)}")
    lines.append(f"the studies and the report: {experiment_url(studies_id, base)}")
    return lines
