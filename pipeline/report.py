"""DVC stage `report`: one static report (reports/report.md, and reports/report.html with the pictures
embedded) that opens offline: the comparison table (ranked by validation, with 95% intervals), the champion
against the runner-up (McNemar), the training loss curves and the best model's confusion matrix, the
templates, the scaling study, the loss study with each model's initial loss, the hard cases, the
regularization path and the hyperparameter maps, each with its budget. Logged to MLflow as the run `report`:
the HTML, and the champion's and the runner-up's accuracies and the paired tests as metrics
(`champion/val_accuracy`, `paired_test/test_p_value`, ...)."""
import json

import mlflow

from linclass.plumbing.paths import REPORTS, SWEEPS
from linclass.plumbing.stage import run, stage_params
from linclass.studies.report import budget_sentences, write_report
from linclass.tracking.runs import study_run

SCALING_PLOTS = ("hinge_loss", "softmax_loss", "l2_penalty", "l1_penalty")


def report_metrics(best: dict) -> dict[str, float]:
    """The numbers the report's reader looks for first, under readable names."""
    metrics = {f"champion/{key}": best[key] for key in best if key.startswith(("val_accuracy", "test_accuracy"))}
    for split in ("val", "test"):
        if split in best:
            metrics.update({f"runner_up/{split}_accuracy": best[split]["runner_up_accuracy"],
                            **{f"paired_test/{split}_{key}": best[split][key]
                               for key in ("difference", "b", "c", "p_value")}})
    return metrics


def main() -> None:
    params = stage_params()
    best = json.loads((REPORTS / "evaluation" / "best.json").read_text())
    md = write_report(
        REPORTS / "report.md",
        comparison_csv=REPORTS / "comparison.csv",
        templates_png=REPORTS / "templates" / "templates.png",
        weight_hist_png=REPORTS / "templates" / "weight_histograms.png",
        scaling_csv=REPORTS / "weight_scaling.csv",
        scaling_pngs=[REPORTS / "scaling" / f"{name}.png" for name in SCALING_PLOTS],
        loss_study_csv=REPORTS / "loss_study.csv",
        initial_loss_csv=REPORTS / "initial_loss.csv",
        hard_cases_csv=REPORTS / "hard_cases.csv",
        hard_cases_png=REPORTS / "hard_cases" / "decision_regions.png",
        evaluation_dir=REPORTS / "evaluation",
        regularization_path_dir=REPORTS / "regularization_path",
        hyperparameter_maps=[(csv, REPORTS / "hyperparameter_map" / f"{csv.stem}.png")
                             for csv in sorted(SWEEPS.glob("*.csv"))],
        extra_images=(), budgets=budget_sentences(params, best["images"]))
    verdicts = {split: best[split]["verdict"] for split in ("val", "test") if split in best}
    description = (f"The pipeline's report (report.html): {best['model']} is the champion, best on validation; "
                   + (f"against the runner-up {best['runner_up']} it is {verdicts['val']} on validation and "
                      f"{verdicts['test']} on test (McNemar, same images)." if verdicts else "it has no runner-up."))
    with study_run(params.tracking, "report", "report", description, kind="report"):
        mlflow.log_artifact(str(md.with_suffix(".html")))
        mlflow.log_metrics(report_metrics(best))
        mlflow.set_tags({"champion": best["model"], "runner_up": best.get("runner_up") or "none",
                         **{f"{split}_verdict": verdict for split, verdict in verdicts.items()}})
    print(f"report: {md} and {md.with_suffix('.html')}")


if __name__ == "__main__":
    run(main)
