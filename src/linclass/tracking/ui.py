"""How the MLflow UI shows linclass's runs: the experiments' kind and the runs table's columns."""
from __future__ import annotations

import json
import sys

import mlflow
from mlflow.tracking import MlflowClient

# The MLflow UI opens an experiment with this tag in its classic machine-learning view (runs, charts,
# models), not the GenAI one (traces, judges, prompts).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}

# The runs table as the training experiment opens with ?viewStateShareKey=linclass (a "shared view" of
# the MLflow UI, kept as an experiment tag): the accuracies and the settings that differ between runs,
# best on validation first. Without it the table shows no metric and no param until they are picked.
RUNS_VIEW_KEY = "linclass"
RUNS_VIEW = {
    "selectedColumns": ["attributes.`Models`",
                        *(f"metrics.`{m}`" for m in ("val_accuracy", "test_accuracy", "train_accuracy")),
                        *(f"params.`{p}`" for p in ("loss", "regularizer", "strength", "learning_rate",
                                                    "epochs", "batch_size"))],
    "orderByKey": "metrics.`val_accuracy`", "orderByAsc": False,
}


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
    return (f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={RUNS_VIEW_KEY}"
            "&workflowType=machine_learning")


