"""DVC stage `evaluate`: test accuracy, per-class accuracy and confusion matrix of every trained model,
and one comparison table of all combinations.

Writes metrics/test.json and metrics/per_class.json (DVC metrics), reports/comparison.csv (the table), and for DVC's confusion
plots reports/predictions/<model>.csv (actual, predicted); logs the results into each model's MLflow run.
"""
import tempfile
from pathlib import Path

import pandas as pd

from linclass.studies import pictures
from linclass.plumbing import tracking
from linclass.plumbing.paths import class_names as load_class_names
from linclass.plumbing.paths import load_model, load_split, model_names, train_summary
from linclass.core.metrics import accuracy, confusion_matrix, per_class_accuracy
from linclass.core.model import predict
from linclass.plumbing.stage import atomic_dir, atomic_file, run, stage_params, write_json


def evaluate_model(W, b, X, y, num_classes):
    y_pred = predict(X, W, b)
    return {"accuracy": accuracy(y, y_pred), "per_class": per_class_accuracy(y, y_pred, num_classes),
            "confusion": confusion_matrix(y, y_pred, num_classes), "predicted": y_pred}


def log_to_run(experiment_id, name, weights_md5, result, val_accuracy, class_names):
    """Add the test results to the model's training run (found by its weights' md5)."""
    client = tracking.MlflowClient()
    run_id = tracking.find_run(experiment_id, {"model": name, "weights_md5": weights_md5})
    if run_id is None:  # e.g. a fresh store: keep the results rather than lose them
        run_id = client.create_run(experiment_id, run_name=name,
                                   tags={"model": name, "weights_md5": weights_md5,
                                         "note": "evaluation only: training run not in this store"}).info.run_id
        client.set_terminated(run_id)
    per_class = {f"test_accuracy_{c}": float(a) for c, a in zip(class_names, result["per_class"])}
    metrics = {"test_accuracy": result["accuracy"], "val_accuracy_final": val_accuracy, **per_class}
    client.log_batch(run_id, metrics=tracking.scalar_metrics(metrics))
    with tempfile.TemporaryDirectory() as tmp:
        pictures.plot_confusion_matrix(result["confusion"], class_names, Path(tmp) / "confusion_matrix.png",
                                     title=f"{name}: test confusion matrix")
        pd.DataFrame(result["confusion"], index=class_names, columns=class_names).to_csv(
            Path(tmp) / "confusion_matrix.csv")
        client.log_artifacts(run_id, tmp, artifact_path="evaluation")


def main() -> None:
    params = stage_params()
    X_test, y_test = load_split("test")
    X_val, y_val = load_split("val")
    class_names = load_class_names()
    experiment_id = tracking.setup(params["tracking"]["experiment"], params["tracking"]["uri"])

    rows, metrics, per_class = [], {}, {}
    with atomic_dir(Path("reports/predictions")) as predictions:
        for name in model_names(params):
            loss, reg = name.split("-")
            W, b = load_model(name)
            summary = train_summary(name)
            test = evaluate_model(W, b, X_test, y_test, len(class_names))
            val_acc = accuracy(y_val, predict(X_val, W, b))
            pd.DataFrame({"actual": [class_names[i] for i in y_test],
                          "predicted": [class_names[i] for i in test["predicted"]]}).to_csv(
                predictions / f"{name}.csv", index=False)
            metrics[name] = {"test_accuracy": round(test["accuracy"], 6), "val_accuracy": round(val_acc, 6)}
            per_class[name] = {c: round(float(a), 6) for c, a in zip(class_names, test["per_class"])}
            rows.append({"model": name, "loss": loss, "regularizer": reg,
                         "strength": params["regularizer"][reg]["strength"],
                         "train_accuracy": summary["train_accuracy"], "val_accuracy": val_acc,
                         "test_accuracy": test["accuracy"],
                         "final_data_loss": summary["final_data_loss"],
                         "final_reg_loss": summary["final_reg_loss"],
                         "near_zero_weights": pictures.weight_sparsity(W, params["studies"]["near_zero_tol"])})
            log_to_run(experiment_id, name, summary["weights_md5"], test, val_acc, class_names)
    table = pd.DataFrame(rows).sort_values("test_accuracy", ascending=False, kind="stable")
    with atomic_file("reports/comparison.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    write_json("metrics/test.json", metrics)
    write_json("metrics/per_class.json", per_class)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    run(main)
