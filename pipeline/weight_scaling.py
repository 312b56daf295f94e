"""DVC stage `weight_scaling`: W vs 2W. For every trained model (on the training split) and for a model
trained to zero hinge loss on a small subset (the lecture's case), evaluate (sW, sb) for each scale s:
hinge, squared hinge and softmax loss (the margins of loss.svm and loss.squared_svm), R(W) of each regularizer
(without the strength; elastic net's beta of regularizer.elasticnet), and accuracy.

Writes reports/weight_scaling.csv, a plot per loss under reports/scaling/, metrics/weight_scaling.json,
and the MLflow run `study-weight-scaling` (metrics `<column>/<model>`, step = round(100 * scale))."""
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from linclass import plots
from linclass.plumbing.paths import REPORTS, load_model, load_split, model_names
from linclass.plumbing.stage import atomic_dir, atomic_file, run, stage_params, write_json
from linclass.studies.weight_scaling import train_zero_hinge_model, weight_scaling_table
from linclass.tracking.records import scalar_metrics
from linclass.tracking.runs import study_run

PLOTTED = ("hinge_loss", "squared_hinge_loss", "softmax_loss", "l1_penalty", "l2_penalty", "accuracy")


def zero_hinge_summary(table: pd.DataFrame) -> dict:
    """What the lecture says, as numbers: hinge loss at each scale >= 1 and the softmax trend."""
    rows = table.sort_values("scale")
    at_least_one = rows[rows["scale"] >= 1]
    return {"hinge_loss_max_for_scale_ge_1": float(at_least_one["hinge_loss"].max()),
            "softmax_loss_at_scale_1": float(rows.loc[rows["scale"] == 1, "softmax_loss"].iloc[0])
            if (rows["scale"] == 1).any() else float("nan"),
            "softmax_loss_falls_with_scale": bool(rows["softmax_loss"].is_monotonic_decreasing),
            "accuracy_constant": bool(rows["accuracy"].nunique() == 1)}


def main() -> None:
    params = stage_params()
    scales = params.studies.scales
    delta = params.loss.svm.delta
    settings = {"delta": delta, "squared_delta": params.loss.squared_svm.delta,
                "beta": params.regularizer.elasticnet.beta}
    X, y = load_split("train", mmap=True)  # one scoring pass per model reads it: no 150 MB copy up front
    tables = []
    for name in model_names(params):
        W, b = load_model(name)
        tables.append(weight_scaling_table(W, b, X, y, scales, name, **settings))
    n = params.studies.zero_hinge_subset
    W0, b0, X_sub, y_sub = train_zero_hinge_model(X, y, n=n, seed=params.train.seed, delta=delta)
    zero_name = f"zero-hinge-{n}"
    zero_table = weight_scaling_table(W0, b0, X_sub, y_sub, scales, zero_name, **settings)
    table = pd.concat([zero_table, *tables], ignore_index=True)

    with study_run(params.tracking, "study-weight-scaling", "weight_scaling",
                   f"W and b of every model, and of a model trained to zero hinge loss on {n} images, scaled by s "
                   f"(step = 100 s): the hinge loss stays 0, the penalties grow, the accuracy stays.") as run_id, \
            atomic_dir(REPORTS / "scaling") as out:
        for column in PLOTTED:
            plots.plot_weight_scaling(table, out / f"{column}.png", column)
        with atomic_file(REPORTS / "weight_scaling.csv") as tmp:
            table.to_csv(tmp, index=False)
        client = MlflowClient()
        metrics = [m for row in table.itertuples(index=False) for column in table.columns[2:]
                   for m in scalar_metrics({f"{column}/{row.model}": getattr(row, column)},
                                           step=round(100 * row.scale))]
        client.log_batch(run_id, metrics=metrics)
        client.log_artifacts(run_id, str(out), artifact_path="plots")
        client.log_artifact(run_id, str(REPORTS / "weight_scaling.csv"))
    summary = zero_hinge_summary(zero_table)
    write_json(Path("metrics/weight_scaling.json"), {zero_name: summary})
    print(zero_table.to_string(index=False))
    print("weight_scaling:", summary)


if __name__ == "__main__":
    run(main)
