"""DVC stage `evaluate`: test accuracy, per-class accuracy and confusion matrix of every trained model,
one comparison table of all combinations, and the Model Registry.

Writes metrics/test.json and metrics/per_class.json (DVC metrics), reports/comparison.csv (the table),
reports/predictions/<model>.csv (actual, predicted) for DVC's confusion plots, and for the report
reports/evaluation/: best.json (the best model on validation), confusion_matrix.png (its test confusion
matrix) and loss_curves.png (the training loss of every model). Adds test_accuracy and the confusion
matrix to each model's MLflow run, registers its MLflow Model and gives the best on validation the
alias `champion` (linclass.plumbing.mlflow_model).
"""
import json
import tempfile
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from linclass import plots
from linclass.core.metrics import accuracy, confusion_matrix, per_class_accuracy
from linclass.core.model import predict
from linclass.files import md5_file
from linclass.plumbing.paths import DATA, MODELS, REPORTS, load_model, load_split, model_names, train_summary
from linclass.plumbing.paths import class_names as load_class_names
from linclass.plumbing.stage import atomic_dir, atomic_file, run, stage_params, write_json
from linclass.tracking import registry
from linclass.tracking.records import scalar_metrics
from linclass.tracking.runs import find_run, setup


def evaluate_model(W, b, X, y, num_classes):
    y_pred = predict(X, W, b)
    return {"accuracy": accuracy(y, y_pred), "per_class": per_class_accuracy(y, y_pred, num_classes),
            "confusion": confusion_matrix(y, y_pred, num_classes), "predicted": y_pred}


def confusion_table(confusion, class_names):
    return pd.DataFrame(confusion, index=class_names, columns=class_names)


def log_to_run(client, experiment_id, name, weights_md5, result, class_names):
    """Add the test results to the model's training run (found by its weights' md5); return the run."""
    run_id = find_run(experiment_id, {"model": name, "weights_md5": weights_md5})
    if run_id is None:  # e.g. a fresh store: keep the results rather than lose them
        run_id = client.create_run(experiment_id, run_name=name,
                                   tags={"model": name, "weights_md5": weights_md5,
                                         "note": "evaluation only: training run not in this store"}).info.run_id
        client.set_terminated(run_id)
    client.log_batch(run_id, metrics=scalar_metrics({"test_accuracy": result["accuracy"]}))
    with tempfile.TemporaryDirectory() as tmp:
        plots.plot_confusion_matrix(result["confusion"], class_names, Path(tmp) / "confusion_matrix.png",
                                       title=f"{name}: test confusion matrix")
        confusion_table(result["confusion"], class_names).to_csv(Path(tmp) / "confusion_matrix.csv")
        pd.DataFrame({"class": class_names, "test_accuracy": result["per_class"]}).to_csv(
            Path(tmp) / "per_class_accuracy.csv", index=False)
        client.log_artifacts(run_id, tmp, artifact_path="evaluation")
    return client.get_run(run_id)


def register(client, registry_name, run, row, split):
    """Register the run's MLflow Model (if it logged one) as a version tagged with its results."""
    model_id = run.data.tags.get("model_id")
    if model_id is None:
        return None
    tags = {"model": row["model"], "loss": row["loss"], "regularizer": row["regularizer"],
            "val_accuracy": f"{row['val_accuracy']:.6f}", "test_accuracy": f"{row['test_accuracy']:.6f}",
            "params_hash": run.data.tags.get("params_hash", ""), "split": split}
    return registry.register(client, registry_name, run.info.run_id, model_id, tags)


def champion(client, registry_name, split):
    """The best version on validation among those evaluated on the same validation set (ties: the oldest)."""
    versions = [v for v in client.search_model_versions(f"name = '{registry_name}'")
                if v.tags.get("split") == split and "val_accuracy" in v.tags]
    if not versions:
        return None
    return max(versions, key=lambda v: (float(v.tags["val_accuracy"]), -int(v.version)))


def write_evaluation(out, best, results, class_names, names):
    """reports/evaluation/: the best model (json), its confusion matrix, every model's training loss."""
    (out / "best.json").write_text(json.dumps(best, indent=2, sort_keys=True) + "\n")
    plots.plot_confusion_matrix(results[best["model"]]["confusion"], class_names, out / "confusion_matrix.png",
                                   title=f"{best['model']} (best on validation): test confusion matrix")
    confusion_table(results[best["model"]]["confusion"], class_names).to_csv(out / "confusion_matrix.csv")
    curves = {}
    for name in names:
        steps = pd.read_csv(MODELS / name / "history_steps.csv")
        curves[name] = (steps["step"], steps["total_loss"])
    plots.plot_training_losses(curves, out / "loss_curves.png", title="Training loss of every combination")


def main() -> None:
    params = stage_params()
    X_test, y_test = load_split("test")
    X_val, y_val = load_split("val")
    class_names = load_class_names()
    experiment = params.tracking.experiment
    experiment_id = setup(experiment, params.tracking.uri)
    client = MlflowClient()
    split = md5_file(DATA / "X_val.npy", DATA / "y_val.npy")[:8]  # which validation set chose the champion

    rows, metrics, per_class, results, versions = [], {}, {}, {}, {}
    names = model_names(params)
    with atomic_dir(REPORTS / "predictions") as predictions, atomic_dir(REPORTS / "evaluation") as evaluation:
        for name in names:
            loss, reg = name.split("-")
            W, b = load_model(name)
            summary = train_summary(name)
            test = results[name] = evaluate_model(W, b, X_test, y_test, len(class_names))
            val_acc = accuracy(y_val, predict(X_val, W, b))
            pd.DataFrame({"actual": [class_names[i] for i in y_test],
                          "predicted": [class_names[i] for i in test["predicted"]]}).to_csv(
                predictions / f"{name}.csv", index=False)
            metrics[name] = {"test_accuracy": round(test["accuracy"], 6), "val_accuracy": round(val_acc, 6)}
            per_class[name] = {c: round(float(a), 6) for c, a in zip(class_names, test["per_class"])}
            row = {"model": name, "loss": loss, "regularizer": reg,
                   "strength": getattr(params.regularizer, reg).strength,
                   "train_accuracy": summary["train_accuracy"], "val_accuracy": val_acc,
                   "test_accuracy": test["accuracy"],
                   "final_data_loss": summary["final_data_loss"],
                   "final_reg_loss": summary["final_reg_loss"],
                   "near_zero_weights": plots.weight_sparsity(W, params.studies.near_zero_tol)}
            rows.append(row)
            run = log_to_run(client, experiment_id, name, summary["weights_md5"], test, class_names)
            versions[name] = register(client, experiment, run, row, split)
        best_row = max(rows, key=lambda r: r["val_accuracy"])  # the first of equals, in grid order
        best = {k: best_row[k] for k in ("model", "val_accuracy", "test_accuracy")}
        write_evaluation(evaluation, best, results, class_names, names)
    top = champion(client, experiment, split)
    if top is not None:
        registry.set_champion(client, experiment, top.version)
        print(f"registered model {experiment!r}: {sum(v is not None for v in versions.values())} versions "
              f"this run; alias {registry.CHAMPION!r} -> version {top.version} ({top.tags['model']}, "
              f"val {float(top.tags['val_accuracy']):.4f})")
    table = pd.DataFrame(rows).sort_values("test_accuracy", ascending=False, kind="stable")
    with atomic_file(REPORTS / "comparison.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    write_json("metrics/test.json", metrics)
    write_json("metrics/per_class.json", per_class)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    run(main)
