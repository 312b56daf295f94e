"""DVC stage `hard_cases`: the geometric viewpoint. Train each loss on the lecture's three 2-D data sets
that a linear classifier cannot separate (quadrants, ring, three modes) and on a separable control;
plot the decision regions with the data and record the accuracies against the majority rate."""
from pathlib import Path

import mlflow

from linclass.plumbing.paths import REPORTS
from linclass.plumbing.stage import atomic_dir, atomic_file, run, stage_params, write_json
from linclass.studies.hard_cases import fit_hard_cases, plot_decision_regions
from linclass.tracking.runs import study_run


def main() -> None:
    params = stage_params()
    cfg = params.studies.hard_cases
    results = fit_hard_cases(losses=params.grid.losses, n=cfg.n, seed=cfg.seed, epochs=cfg.epochs,
                             learning_rate=cfg.learning_rate)
    table = results[0]

    with study_run(params.tracking, "study-hard-cases", "hard_cases",
                   "Each loss trained on 2-D data sets that no line separates (and on a separable control): its "
                   "accuracy against the majority rate."), \
            atomic_dir(REPORTS / "hard_cases") as out:
        plot_decision_regions(results, out / "decision_regions.png")
        with atomic_file(REPORTS / "hard_cases.csv") as tmp:
            table.to_csv(tmp, index=False)
        mlflow.log_metrics({**{f"accuracy/{r.dataset}-{r.loss}": r.accuracy for r in table.itertuples()},
                            **{f"majority_rate/{r.dataset}": r.majority_rate for r in table.itertuples()}})
        mlflow.log_artifacts(str(out))
        mlflow.log_artifact(str(REPORTS / "hard_cases.csv"))
    write_json(Path("metrics/hard_cases.json"), {
        f"{r.dataset}-{r.loss}": {"accuracy": r.accuracy, "majority_rate": r.majority_rate}
        for r in table.itertuples()})
    print(table.to_string(index=False))


if __name__ == "__main__":
    run(main)
