"""DVC stage `hyperparameter_map`: the learning rate x strength search as a picture. One heat map of the
validation accuracy per sweep table in sweeps/ (sweeps/<loss>-<regularizer>.csv, written by `make sweep`).

Writes reports/hyperparameter_map/<loss>-<regularizer>.png, metrics/hyperparameter_map.json (the best
cell of each table and the spread of the accuracies) and the MLflow run `study-hyperparameter-map`.
"""
from pathlib import Path

import mlflow
import pandas as pd

from linclass.plumbing.paths import REPORTS, SWEEPS
from linclass.plumbing.stage import atomic_dir, run, stage_params, write_json
from linclass.studies import hyperparameter_map as hm
from linclass.tracking.runs import study_run

OUT = REPORTS / "hyperparameter_map"


def main() -> None:
    params = stage_params()
    tables = sorted(SWEEPS.glob("*.csv"))
    if not tables:
        raise ValueError(f"no sweep table in {SWEEPS}/; run `make sweep` (it writes {SWEEPS}/<loss>-<regularizer>.csv)")
    summary = {}
    with study_run(params.tracking, "study-hyperparameter-map", "hyperparameter_map",
                   "The learning rate x strength sweeps of sweeps/ as heat maps of the validation accuracy, "
                   "best cell framed."), \
            atomic_dir(OUT) as out:
        for table in tables:
            rows = pd.read_csv(table).to_dict("records")
            learning_rates, strengths, values = hm.map_grid(rows)
            epochs = "/".join(str(e) for e in sorted({row.get("epochs") for row in rows}))
            val = "/".join(f"{v:,}" for v in sorted({row.get("val_size") for row in rows if row.get("val_size")}))
            hm.plot_map(learning_rates, strengths, values, out / f"{table.stem}.png",
                        title=f"{table.stem}: validation accuracy of {len(rows)} runs ({epochs} epochs each"
                              + (f", {val} validation images" if val else "") + "; best framed)")
            lr, strength, best = hm.best_cell(learning_rates, strengths, values)
            summary[table.stem] = {"best_learning_rate": lr, "best_strength": strength, "best_val_accuracy": best,
                                   "worst_val_accuracy": float(pd.Series(values.ravel()).min()),
                                   "runs": len(rows)}
        mlflow.log_metrics({f"{key}/{name}": value for name, cells in summary.items() for key, value in cells.items()})
        mlflow.log_artifacts(str(out))
    write_json(Path("metrics/hyperparameter_map.json"), summary)
    for name, cells in summary.items():
        print(f"hyperparameter_map: {name}: best val {cells['best_val_accuracy']:.4f} at learning_rate="
              f"{cells['best_learning_rate']:g}, strength={cells['best_strength']:g} ({cells['runs']} runs)")


if __name__ == "__main__":
    run(main)
