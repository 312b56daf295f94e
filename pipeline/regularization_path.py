"""DVC stage `regularization_path`: each loss trained along a log grid of strengths for L1, L2 and elastic
net, on a subset of the training split for a few epochs (studies.regularization_path).

Writes reports/regularization_path/ (path.csv: one row per point; curves.png: validation accuracy,
near-zero share, data loss and R(W) against the strength; templates.png: the template of one class
along the path, L1 against L2, per loss), metrics/regularization_path.json, and the MLflow run
`study-regularization-path` (metrics `<column>/<loss>-<regularizer>`, step = position on the strength grid).
"""
from pathlib import Path

from linclass.plumbing.threads import set_blas_threads

set_blas_threads()  # before numpy is imported: BLAS reads its thread count once, when it loads
import mlflow  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from linclass.plumbing.paths import REPORTS, class_names, load_split  # noqa: E402
from linclass.plumbing.stage import atomic_dir, run, stage_params, write_json  # noqa: E402
from linclass.studies import regularization_path as rp  # noqa: E402
from linclass.tracking.records import scalar_metrics  # noqa: E402
from linclass.tracking.runs import study_run  # noqa: E402

OUT = REPORTS / "regularization_path"


def main() -> None:
    params = stage_params()
    cfg, train = params.studies.regularization_path, params.train
    names = class_names()
    if cfg.template_class not in names:
        raise ValueError(f"studies.regularization_path.template_class={cfg.template_class!r} is not a class; "
                         f"known: {', '.join(names)}")
    X, y = load_split("train", mmap=True)
    n = min(cfg.train_subset, len(X))
    X, y = X[:n], y[:n]  # the split is a seeded permutation: its first rows are a random subset
    X_val, y_val = load_split("val")

    points = rp.regularization_path(
        X, y, X_val, y_val, losses={loss: getattr(params.loss, loss).model_dump() for loss in cfg.losses},
        regularizers=cfg.regularizers, strengths=cfg.strengths, near_zero_tol=params.studies.near_zero_tol,
        beta=params.regularizer.elasticnet.beta, num_classes=len(names), epochs=cfg.epochs,
        batch_size=min(train.batch_size, n), lr_decay=train.lr_decay, seed=train.seed,
        init_scale=train.init_scale, l1_step=train.l1_step)
    table = rp.path_table(points)
    summary = rp.path_summary(table)
    k = names.index(cfg.template_class)
    strips = {f"{loss}-{reg}": rp.template_strip(points, loss, reg, k)
              for loss in cfg.losses for reg in ("l1", "l2") if reg in cfg.regularizers}

    strengths = ", ".join(f"{s:g}" for s in cfg.strengths)
    with study_run(params.tracking, "study-regularization-path", "regularization_path",
                   f"Each loss trained {cfg.epochs} epochs on {n} images with L1, L2 and elastic net along the "
                   f"strengths {strengths} (step = position in that list): validation accuracy, near-zero share, "
                   "data loss and R(W).") as run_id, \
            atomic_dir(OUT) as out:
        table.to_csv(out / "path.csv", index=False)
        rp.plot_path_curves(table, out / "curves.png")
        rp.plot_template_strips(strips, cfg.template_class, out / "templates.png")
        steps = {s: i for i, s in enumerate(sorted(table["strength"].unique()))}
        mlflow.log_params({"train_subset": n, "epochs": cfg.epochs, "strengths": cfg.strengths})
        MlflowClient().log_batch(run_id, metrics=[
            m for row in table.itertuples(index=False) for column in rp.COLUMNS[3:]
            for m in scalar_metrics({f"{column}/{row.loss}-{row.regularizer}": getattr(row, column)},
                                    step=steps[row.strength])])
        mlflow.log_artifacts(str(out))
    write_json(Path("metrics/regularization_path.json"), summary)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    run(main)
