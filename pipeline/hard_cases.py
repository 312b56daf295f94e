"""DVC stage `hard_cases`: the geometric viewpoint. Train each loss on the lecture's three 2-D data sets
that a linear classifier cannot separate (quadrants, ring, three modes) and on a separable control;
plot the decision regions with the data and record the accuracies against the majority rate."""
from pathlib import Path

from linclass import tracking
from linclass.artifacts import REPORTS
from linclass.hard_cases import fit_hard_cases, plot_decision_regions
from linclass.stage import atomic_dir, atomic_file, run, stage_params, write_json


def main() -> None:
    params = stage_params()
    cfg = params["studies"]["hard_cases"]
    losses = [loss for loss in params["grid"]["losses"]]
    results = fit_hard_cases(losses=losses, n=cfg["n"], seed=cfg["seed"], epochs=cfg["epochs"],
                             learning_rate=cfg["learning_rate"])
    table = results[0]

    experiment_id = tracking.setup(params["tracking"]["experiment"], params["tracking"]["uri"])
    tags = {"kind": "study", "dvc_stage": "hard_cases", "git_commit": tracking.git_commit()}
    with tracking.tracked_run(experiment_id, "study-hard-cases", tags) as active, \
            atomic_dir(REPORTS / "hard_cases") as out:
        plot_decision_regions(results, out / "decision_regions.png")
        with atomic_file(REPORTS / "hard_cases.csv") as tmp:
            table.to_csv(tmp, index=False, float_format="%.6f")
        client = tracking.MlflowClient()
        tracking.log_batches(client, active.info.run_id, metrics=tracking.scalar_metrics(
            {f"{r.dataset}.{r.loss}.accuracy": r.accuracy for r in table.itertuples()}))
        client.log_artifacts(active.info.run_id, str(out))
        client.log_artifact(active.info.run_id, str(REPORTS / "hard_cases.csv"))
    write_json(Path("metrics/hard_cases.json"), {
        f"{r.dataset}-{r.loss}": {"accuracy": round(r.accuracy, 6), "majority_rate": round(r.majority_rate, 6)}
        for r in table.itertuples()})
    print(table.to_string(index=False))


if __name__ == "__main__":
    run(main)
