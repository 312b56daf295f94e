"""DVC stage `train@<loss>-<regularizer>`: SGD on the training split, tracked in one MLflow run.

Writes models/<loss>-<regularizer>/{W.npy, b.npy, history_steps.csv, history_epochs.csv} and
metrics/train/<loss>-<regularizer>.json. The MLflow run (named <loss>-<regularizer>) gets the
flattened config, reproducibility tags, loss/accuracy histories, the weights, the template images and
the loss curves. Outputs appear only when everything succeeded.
"""
import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np

from linclass.studies import pictures
from linclass.plumbing import tracking
from linclass.core.sgd import train_sgd
from linclass.files import md5_file
from linclass.plumbing.config import flatten, validate_model
from linclass.plumbing.paths import class_names as load_class_names
from linclass.plumbing.paths import dvc_lock_hashes, load_split
from linclass.plumbing.stage import atomic_dir, run, stage_params, write_json
from linclass.studies.loss_questions import initial_loss, initial_loss_check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", required=True)
    parser.add_argument("--regularizer", required=True)
    args = parser.parse_args()
    params = stage_params()
    validate_model(params, args.loss, args.regularizer)
    name = f"{args.loss}-{args.regularizer}"
    train, loss_cfg, reg_cfg = params["train"], params["loss"][args.loss], params["regularizer"][args.regularizer]

    X_train, y_train = load_split("train")
    X_val, y_val = load_split("val")
    class_names = load_class_names()
    if train["batch_size"] > len(X_train):
        raise ValueError(f"train.batch_size={train['batch_size']} is larger than the "
                         f"{len(X_train)} training images; allowed 1..{len(X_train)}")

    experiment_id = tracking.setup(params["tracking"]["experiment"], params["tracking"]["uri"])
    tags = {"loss": args.loss, "regularizer": args.regularizer, "model": name,
            "git_commit": tracking.git_commit(), "dvc_stage": f"train@{name}",
            "data_md5": params["data"]["md5"], "data_url": params["data"]["url"],
            **dvc_lock_hashes()}
    with tracking.tracked_run(experiment_id, name, tags) as active, atomic_dir(Path("models") / name) as out:
        run_id = active.info.run_id
        client = tracking.MlflowClient()
        client.log_batch(run_id, params=tracking.params_from_config(flatten(params)))
        tracking.log_dataset(params["data"], len(X_train), len(X_val))

        delta = loss_cfg.get("delta", 1.0)
        start = initial_loss(X_train, y_train, args.loss, len(class_names), seed=train["seed"],
                             init_scale=train["init_scale"], delta=delta)
        check = initial_loss_check(args.loss, start, len(class_names),
                                   tolerance=params["studies"]["initial_loss_tolerance"], delta=delta)
        if not check["ok"]:
            warnings.warn(f"{name}: initial loss {start:.4f} is off the expected {check['expected']:.4f} "
                          f"by {check['relative_error']:.1%} (more than the tolerance)", stacklevel=1)
        client.log_batch(run_id, metrics=tracking.scalar_metrics({
            "initial_loss": start, "initial_loss_expected": check["expected"],
            "initial_loss_relative_error": check["relative_error"]}))

        def log_epoch(epoch, history):  # live accuracy in the UI while training runs
            client.log_batch(run_id, metrics=[
                *tracking.history_metrics("train_accuracy", history.train_accuracy[-1:], [epoch]),
                *tracking.history_metrics("val_accuracy", history.val_accuracy[-1:], [epoch]),
                *tracking.history_metrics("learning_rate", history.learning_rate[-1:], [epoch])])

        result = train_sgd(
            X_train, y_train, X_val=X_val, y_val=y_val, num_classes=len(class_names),
            loss=args.loss, delta=delta,
            regularizer=args.regularizer, strength=reg_cfg["strength"], beta=reg_cfg.get("beta", 0.5),
            learning_rate=loss_cfg["learning_rate"], batch_size=train["batch_size"], epochs=train["epochs"],
            lr_decay=train["lr_decay"], seed=train["seed"], init_scale=train["init_scale"],
            l1_step=train["l1_step"], on_epoch=log_epoch)
        history = result.history
        steps, epochs = history.to_frames()
        client.log_batch(run_id, metrics=[
            *tracking.history_metrics("data_loss", history.data_loss, steps["step"]),
            *tracking.history_metrics("reg_loss", history.reg_loss, steps["step"]),
            *tracking.history_metrics("total_loss", history.total_loss, steps["step"])])

        np.save(out / "W.npy", result.W)
        np.save(out / "b.npy", result.b)
        steps.to_csv(out / "history_steps.csv", index=False)
        epochs.to_csv(out / "history_epochs.csv", index=False)
        summary = {"train_accuracy": float(history.train_accuracy[-1]),
                   "val_accuracy": float(history.val_accuracy[-1]),
                   "final_data_loss": float(history.data_loss[-1]),
                   "final_reg_loss": float(history.reg_loss[-1]),
                   "final_total_loss": float(history.total_loss[-1]),
                   "initial_loss": float(start), "initial_loss_expected": float(check["expected"])}
        weights_md5 = md5_file(out / "W.npy", out / "b.npy")
        client.set_tag(run_id, "weights_md5", weights_md5)
        client.log_batch(run_id, metrics=tracking.scalar_metrics(
            {f"final_{k}": v for k, v in summary.items()}))

        with tempfile.TemporaryDirectory() as tmp:
            figures = Path(tmp)
            pictures.save_template_pngs(result.W, class_names, figures / "templates", upscale=8)
            pictures.plot_template_grid(result.W, class_names, figures / "templates_grid.png",
                                      title=f"{name}: class templates (rows of W)")
            pictures.plot_loss_curves(steps, epochs, figures / "loss_curves.png", title=name)
            client.log_artifacts(run_id, tmp, artifact_path="plots")
        client.log_artifacts(run_id, str(out), artifact_path="model")
    write_json(Path("metrics/train") / f"{name}.json", {**summary, "weights_md5": weights_md5})
    print(f"train@{name}: train {summary['train_accuracy']:.4f} val {summary['val_accuracy']:.4f} "
          f"(mlflow run {run_id})")


if __name__ == "__main__":
    run(main)
