"""DVC stage `evaluate`: validation and test accuracy (with 95% intervals), per-class accuracy and confusion
matrix of every trained model, the champion (best on validation) against the runner-up, one comparison
table of all combinations, and the Model Registry.

Writes metrics/test.json (per model: test and validation accuracy with their 95% Wilson intervals, and the
md5 of the weights they belong to), metrics/champion.json (the champion, the runner-up and McNemar's paired
test of the two on the validation and on the test images), metrics/per_class.json, reports/comparison.csv
(the table, ranked by validation accuracy), reports/predictions/<model>.csv (actual, predicted) for DVC's
confusion plots, and for the report reports/evaluation/: best.json (the champion and the paired tests),
confusion_matrix.png/.csv (its test confusion matrix) and loss_curves.png (the training loss of every
model, one panel each); with feature models (grid.features) also pixels_vs_features.json (the best pixel model
against the best features model, overall and per class with 95% intervals) and feature_weights.png (what that
features model weighs: hue and value bins, HOG glyphs). Adds the accuracies and the confusion matrix to each
model's MLflow run, registers its MLflow Model (every model: a features model computes its features) and gives the best
version on validation the alias `champion`, tagged with the paired test against the registry's runner-up
(linclass.tracking.registry). The champion of metrics/champion.json is chosen among every model.
"""
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from linclass import plots
from linclass.core.metrics import confusion_matrix, per_class_accuracy
from linclass.core.model import predict
from linclass.core.stats import compare_models, wilson_interval
from linclass.files import md5_file
from linclass.plumbing.paths import (
    DATA,
    FEATURES,
    REPORTS,
    all_model_names,
    load_input,
    load_model,
    load_split,
    model_dir,
    model_parts,
    train_summary,
)
from linclass.plumbing.paths import class_names as load_class_names
from linclass.plumbing.stage import atomic_dir, atomic_file, run, stage_params, write_json
from linclass.tracking import registry
from linclass.tracking.records import scalar_metrics
from linclass.tracking.runs import find_run, setup

ALPHA = 0.05  # the paired test's significance level: "better" / "worse" below it, "within noise" above
ACCURACY_COLUMNS = tuple(f"{split}_accuracy{end}" for split in ("val", "test") for end in ("", "_low", "_high"))


def accuracy_with_interval(y, y_pred, split):
    """{<split>_accuracy, <split>_accuracy_low, <split>_accuracy_high}: the accuracy and its 95% Wilson interval."""
    correct = int(np.count_nonzero(y == y_pred))
    low, high = wilson_interval(correct, len(y))
    return {f"{split}_accuracy": correct / len(y), f"{split}_accuracy_low": low, f"{split}_accuracy_high": high}


def confusion_table(confusion, class_names):
    return pd.DataFrame(confusion, index=class_names, columns=class_names)


def log_to_run(client, experiment_id, name, weights_md5, accuracies, test, class_names):
    """Add the test accuracy (with its interval) and the test confusion matrix to the model's training run
    (found by its weights' md5); return the run. The confusion matrix lies at the artifact root, beside the
    training run's loss curves and templates, so that MLflow's Compare page shows them side by side."""
    run_id = find_run(experiment_id, {"model": name, "weights_md5": weights_md5})
    if run_id is None:  # e.g. a fresh store: keep the results rather than lose them
        run_id = client.create_run(experiment_id, run_name=name,
                                   tags={"model": name, "weights_md5": weights_md5,
                                         "note": "evaluation only: training run not in this store"}).info.run_id
        client.set_terminated(run_id)
    # the validation accuracy and its interval are the training run's own (train.py logs them)
    client.log_batch(run_id, metrics=scalar_metrics({k: v for k, v in accuracies.items() if k.startswith("test_")}))
    with tempfile.TemporaryDirectory() as tmp:
        plots.plot_confusion_matrix(test["confusion"], class_names, Path(tmp) / "confusion_matrix.png",
                                    title=f"{name}: test confusion matrix")
        client.log_artifact(run_id, str(Path(tmp) / "confusion_matrix.png"))
        confusion_table(test["confusion"], class_names).to_csv(Path(tmp) / "confusion_matrix.csv")
        pd.DataFrame({"class": class_names, "test_accuracy": test["per_class"]}).to_csv(
            Path(tmp) / "per_class_accuracy.csv", index=False)
        for table in ("confusion_matrix.csv", "per_class_accuracy.csv"):
            client.log_artifact(run_id, str(Path(tmp) / table), artifact_path="evaluation")
    return client.get_run(run_id)


def register(client, registry_name, run, row, split):
    """Register the run's MLflow Model (if it logged one) as a version tagged with its results."""
    model_id = run.data.tags.get("model_id")
    if model_id is None:
        return None
    tags = {"model": row["model"], "loss": row["loss"], "regularizer": row["regularizer"], "features": row["features"],
            **{key: f"{row[key]:.6f}" for key in ACCURACY_COLUMNS},
            "params_hash": run.data.tags.get("params_hash", ""), "split": split}
    return registry.register(client, registry_name, run.info.run_id, model_id, tags)



def ranked_versions(client, registry_name, split):
    """The versions evaluated on the same validation set, best on validation first (ties: the oldest)."""
    versions = [v for v in client.search_model_versions(f"name = '{registry_name}'")
                if v.tags.get("split") == split and "val_accuracy" in v.tags]
    return sorted(versions, key=lambda v: (-float(v.tags["val_accuracy"]), int(v.version)))


def same_settings(version) -> tuple:
    """What makes two registered versions the same training: the model and the hash of its settings."""
    return version.tags.get("model"), version.tags.get("params_hash")


def paired(y, pred_champion, pred_runner_up):
    """The champion against the runner-up on the same images: compare_models with named accuracies."""
    result = compare_models(y, pred_champion, pred_runner_up, alpha=ALPHA)
    result["champion_accuracy"], result["runner_up_accuracy"] = result.pop("accuracy_a"), result.pop("accuracy_b")
    return result


def selection(names, predictions, y_val, y_test):
    """The champion (best on validation; ties: the first in grid order) and the runner-up, and McNemar's
    test of the two on the validation and on the test images."""
    val_accuracy = {name: float(np.mean(predictions[name]["val"] == y_val)) for name in names}
    ranked = sorted(names, key=lambda name: (-val_accuracy[name], names.index(name)))
    chosen = {"champion": ranked[0], "runner_up": ranked[1] if len(ranked) > 1 else None, "alpha": ALPHA}
    if chosen["runner_up"] is None:
        return ranked, chosen
    for split, y in (("val", y_val), ("test", y_test)):
        chosen[split] = paired(y, predictions[ranked[0]][split], predictions[ranked[1]][split])
    return ranked, chosen


def best_of(names, predictions, y_val):
    """The best of `names` on validation (ties: the first)."""
    return max(names, key=lambda name: (float(np.mean(predictions[name]["val"] == y_val)), -names.index(name)))


def pixels_vs_features(names, rows, predictions, y_val, y_test, class_names):
    """The best pixel model against the best features model (each chosen on validation) on the test images:
    overall (McNemar, features as A) and per class (correct counts with 95% Wilson intervals), and each
    loss x regularizer on both inputs. None without features models."""
    pixels = [name for name in names if rows[name]["features"] == "pixels"]
    features = [name for name in names if rows[name]["features"] != "pixels"]
    if not pixels or not features:
        return None
    best = {"pixels": best_of(pixels, predictions, y_val), "features": best_of(features, predictions, y_val)}
    per_class = []
    for k, name in enumerate(class_names):
        images = y_test == k
        row = {"class": name, "images": int(images.sum())}
        for side, model in best.items():
            correct = int(np.count_nonzero(predictions[model]["test"][images] == k))
            low, high = wilson_interval(correct, row["images"]) if row["images"] else (0.0, 1.0)
            row.update({f"{side}_correct": correct, f"{side}_accuracy": correct / max(row["images"], 1),
                        f"{side}_accuracy_low": low, f"{side}_accuracy_high": high})
        per_class.append(row)
    twins = [{"pair": name, "pixels_test_accuracy": rows[name]["test_accuracy"],
              "features_test_accuracy": rows[twin]["test_accuracy"]}
             for name in pixels for twin in features if twin.startswith(f"{name}-")]
    return {**best, "kind": rows[best["features"]]["features"], "alpha": ALPHA,
            "test": paired(y_test, predictions[best["features"]]["test"], predictions[best["pixels"]]["test"]),
            "per_class": per_class, "twins": twins}


def version_predictions(version, by_run, X_val, X_test):
    """(val predictions, test predictions) of a registered version: this run's, or, for a version another
    pipeline trained, its MLflow Model's (which carries its own preprocessing) on the same images."""
    import mlflow

    if version.run_id in by_run:
        return by_run[version.run_id]
    # suppress_warnings: no check of the model's pip requirements against this environment (1 s per stage process:
    # MLflow maps every installed package to its modules first); the model is used here, not served.
    # dst_path: from a tracking server, MLflow would download the model into a temporary folder it never removes.
    with tempfile.TemporaryDirectory() as tmp:
        classifier = mlflow.pyfunc.load_model(f"models:/{version.name}/{version.version}", dst_path=tmp,
                                              suppress_warnings=True).unwrap_python_model()
        return {split: np.argmax(classifier.scores(registry.model_input(X)), axis=1)
                for split, X in (("val", X_val), ("test", X_test))}


def selection_tags(top, second, by_run, data):
    """The champion version's tags: the runner-up and the paired tests against it on validation and test."""
    if second is None:
        return {"runner_up": "none (the only version evaluated on this validation split)"}
    X_val, y_val, X_test, y_test = data
    try:
        champion, runner_up = (version_predictions(v, by_run, X_val, X_test) for v in (top, second))
    except Exception as exc:  # noqa: BLE001 (a model the store cannot load: say so on the version, do not fail)
        return {"runner_up": second.tags.get("model", "?"), "runner_up_version": second.version,
                "val_verdict": f"not tested: {' '.join(str(exc).split())[:200]}"}
    tags = {"runner_up": second.tags.get("model", "?"), "runner_up_version": second.version}
    for split, y in (("val", y_val), ("test", y_test)):
        result = paired(y, champion[split], runner_up[split])
        tags.update({f"{split}_verdict": result["verdict"], f"{split}_difference": f"{result['difference']:+.6f}",
                     f"{split}_b": result["b"], f"{split}_c": result["c"],
                     f"{split}_p_value": f"{result['p_value']:.4g}"})
    return tags


def write_evaluation(out, best, results, class_names, names):
    """reports/evaluation/: the champion and its paired tests (json), its confusion matrix, every model's
    training loss."""
    (out / "best.json").write_text(json.dumps(best, indent=2, sort_keys=True) + "\n")
    plots.plot_confusion_matrix(results[best["model"]]["confusion"], class_names, out / "confusion_matrix.png",
                                title=f"{best['model']} (best on validation): test confusion matrix")
    confusion_table(results[best["model"]]["confusion"], class_names).to_csv(out / "confusion_matrix.csv")
    curves = {}
    for name in names:
        steps = pd.read_csv(model_dir(name) / "history_steps.csv")
        curves[name] = (steps["step"], steps["total_loss"])
    plots.plot_training_losses(curves, out / "loss_curves.png", title="Training loss of every combination")


def main() -> None:
    params = stage_params()
    X_test, y_test = load_split("test")
    X_val, y_val = load_split("val")
    train_images = len(load_split("train", mmap=True)[1])
    class_names = load_class_names()
    experiment = params.tracking.experiment_name()
    experiment_id = setup(experiment, params.tracking.uri)
    client = MlflowClient()
    split = md5_file(DATA / "X_val.npy", DATA / "y_val.npy")[:8]  # which validation set chose the champion

    rows, metrics, per_class, results, predictions, versions, by_run = {}, {}, {}, {}, {}, {}, {}
    known = {str(v.version) for v in client.search_model_versions(f"name = '{experiment}'")}   # before this run
    names = all_model_names(params)
    inputs: dict[str, tuple] = {"pixels": (X_val, X_test)}  # each model's input: the pixels, or a kind of features
    for features in params.grid.features:
        inputs[features] = (load_input(features, "val")[0], load_input(features, "test")[0])
    with atomic_dir(REPORTS / "predictions") as out_predictions, atomic_dir(REPORTS / "evaluation") as evaluation:
        for name in names:
            loss, reg, kind = model_parts(name)
            W, b = load_model(name)
            summary = train_summary(name)
            model_val, model_test = inputs[kind]
            y_pred = predict(model_test, W, b)
            predictions[name] = {"val": predict(model_val, W, b), "test": y_pred}
            test = results[name] = {"per_class": per_class_accuracy(y_test, y_pred, len(class_names)),
                                    "confusion": confusion_matrix(y_test, y_pred, len(class_names))}
            accuracies = {**accuracy_with_interval(y_val, predictions[name]["val"], "val"),
                          **accuracy_with_interval(y_test, y_pred, "test")}
            pd.DataFrame({"actual": [class_names[i] for i in y_test],
                          "predicted": [class_names[i] for i in y_pred]}).to_csv(
                out_predictions / f"{name}.csv", index=False)
            # the weights' md5 says which model these numbers belong to (linclass.orchestration.sweep checks it)
            metrics[name] = {**accuracies, "weights_md5": summary["weights_md5"]}
            per_class[name] = {c: float(a) for c, a in zip(class_names, test["per_class"])}
            strength = getattr(params.features.strength, reg) if kind != "pixels" else \
                getattr(params.regularizer, reg).strength
            rows[name] = {"model": name, "loss": loss, "regularizer": reg, "features": kind, "strength": strength,
                          "train_accuracy": summary["train_accuracy"], **accuracies,
                          "final_data_loss": summary["final_data_loss"],
                          "final_reg_loss": summary["final_reg_loss"],
                          "near_zero_weights": plots.weight_sparsity(W, params.studies.near_zero_tol)}
            run = log_to_run(client, experiment_id, name, summary["weights_md5"], accuracies, test, class_names)
            by_run[run.info.run_id] = predictions[name]
            versions[name] = register(client, experiment, run, rows[name], split)
        ranked, chosen = selection(names, predictions, y_val, y_test)
        best = {"model": chosen["champion"], **{k: rows[chosen["champion"]][k] for k in ACCURACY_COLUMNS},
                **chosen, "images": {"train": train_images, "val": len(y_val), "test": len(y_test)}}
        write_evaluation(evaluation, best, results, class_names, names)
        versus = pixels_vs_features(names, rows, predictions, y_val, y_test, class_names)
        if versus is not None:   # the report's section "Pixels against features", and what that model weighs
            (evaluation / "pixels_vs_features.json").write_text(json.dumps(versus, indent=2) + "\n")
            layout = json.loads((FEATURES / versus["kind"] / "layout.json").read_text())
            plots.plot_feature_weights(load_model(versus["features"])[0], layout, class_names,
                                       evaluation / "feature_weights.png",
                                       title=f"{versus['features']}: what each class weighs")
    ranking = ranked_versions(client, experiment, split)
    if ranking:
        # the runner-up is another model, or the same one with other settings: a version of the same model and
        # settings is its training run again, the same weights (it was the champion's own runner-up, "within noise")
        top = ranking[0]
        second = next((v for v in ranking[1:] if same_settings(v) != same_settings(top)), None)
        tags = selection_tags(top, second, by_run, (X_val, y_val, X_test, y_test))
        registry.set_champion(client, experiment, top.version, tags)
        registered = [v for v in versions.values() if v is not None]
        new = len(set(registered) - known)
        print(f"registered model {experiment!r}: {len(registered)} version{'s' if len(registered) != 1 else ''} "
              f"this run ({new} new{': the others were registered before' if new < len(registered) else ''}); "
              f"alias {registry.CHAMPION!r} -> version {top.version} ({top.tags['model']}, "
              f"val {float(top.tags['val_accuracy']):.4f}); against the runner-up {tags['runner_up']}: "
              f"val {tags.get('val_verdict', '-')}, test {tags.get('test_verdict', '-')}")
    table = pd.DataFrame([rows[name] for name in ranked])   # best on validation first
    with atomic_file(REPORTS / "comparison.csv") as tmp:
        table.to_csv(tmp, index=False)
    write_json("metrics/test.json", metrics)
    write_json("metrics/champion.json", chosen)
    write_json("metrics/per_class.json", per_class)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for split in ("val", "test"):
        if split in chosen:
            r = chosen[split]
            print(f"{chosen['champion']} vs {chosen['runner_up']} on {r['images']} {split} images: "
                  f"{r['champion_accuracy']:.4f} vs {r['runner_up_accuracy']:.4f}, b={r['b']} c={r['c']} "
                  f"p={r['p_value']:.3g}: {r['verdict']}")


if __name__ == "__main__":
    run(main)
