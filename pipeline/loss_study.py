"""DVC stage `loss_study`: the lecture's questions about the losses, measured.

reports/loss_study.csv: moving the correct score a little, min/max losses, the loss at W ~ 0, summing
over all classes, mean instead of sum, squared hinge, and the scores [10,-2,3], [10,9,9], [10,-100,-100].
reports/initial_loss.csv: the loss each training run started from on the real data against C-1 / log C.
"""
import mlflow
import pandas as pd

from linclass.plumbing.paths import REPORTS, class_names, model_names, train_summary
from linclass.plumbing.stage import atomic_file, run, stage_params, write_json
from linclass.studies.loss_questions import initial_loss_check, loss_behaviour_table
from linclass.tracking.runs import study_run


def main() -> None:
    params = stage_params()
    table = loss_behaviour_table(delta=params.loss.svm.delta)
    tolerance = params.studies.initial_loss_tolerance
    rows = []
    for name in model_names(params):
        loss = name.split("-")[0]
        check = initial_loss_check(loss, train_summary(name)["initial_loss"], len(class_names()),
                                   tolerance=tolerance, delta=getattr(getattr(params.loss, loss), "delta", 1.0))
        rows.append({"model": name, "loss": loss, **check})
    initial = pd.DataFrame(rows)

    with study_run(params.tracking, "study-loss-behaviour", "loss_study",
                   "The lecture's questions about the losses measured on its example scores, and the loss each "
                   "training run started from against C - 1 (SVM) and log C (softmax)."):
        with atomic_file(REPORTS / "loss_study.csv") as tmp:
            table.to_csv(tmp, index=False)
        with atomic_file(REPORTS / "initial_loss.csv") as tmp:
            initial.to_csv(tmp, index=False)
        mlflow.log_metrics({f"initial_loss_relative_error/{r['model']}": r["relative_error"] for r in rows})
        mlflow.log_artifact(str(REPORTS / "loss_study.csv"))
        mlflow.log_artifact(str(REPORTS / "initial_loss.csv"))
    write_json("metrics/initial_loss.json", {r["model"]: {"observed": r["observed"], "expected": r["expected"],
                                                          "ok": bool(r["ok"])} for r in rows})
    print(table.to_string(index=False))
    print(initial.to_string(index=False))


if __name__ == "__main__":
    run(main)
