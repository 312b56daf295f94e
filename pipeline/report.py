"""DVC stage `report`: one static report (reports/report.md, and reports/report.html with the pictures
embedded) that opens offline: the comparison table, the training loss curves and the best model's
confusion matrix, the templates, the scaling study, the loss study,
the hard cases, the regularization path and the hyperparameter maps. Logged to MLflow as the run `report`."""
import mlflow

from linclass.plumbing.paths import REPORTS, SWEEPS
from linclass.plumbing.stage import run, stage_params
from linclass.studies.report import write_report
from linclass.tracking.runs import study_run

SCALING_PLOTS = ("hinge_loss", "softmax_loss", "l2_penalty", "l1_penalty")


def main() -> None:
    params = stage_params()
    md = write_report(
        REPORTS / "report.md",
        comparison_csv=REPORTS / "comparison.csv",
        templates_png=REPORTS / "templates" / "templates.png",
        weight_hist_png=REPORTS / "templates" / "weight_histograms.png",
        scaling_csv=REPORTS / "weight_scaling.csv",
        scaling_pngs=[REPORTS / "scaling" / f"{name}.png" for name in SCALING_PLOTS],
        loss_study_csv=REPORTS / "loss_study.csv",
        hard_cases_csv=REPORTS / "hard_cases.csv",
        hard_cases_png=REPORTS / "hard_cases" / "decision_regions.png",
        evaluation_dir=REPORTS / "evaluation",
        regularization_path_dir=REPORTS / "regularization_path",
        hyperparameter_maps=[(csv, REPORTS / "hyperparameter_map" / f"{csv.stem}.png")
                             for csv in sorted(SWEEPS.glob("*.csv"))],
        extra_images=())
    with study_run(params.tracking, "report", "report", kind="report"):
        mlflow.log_artifact(str(md.with_suffix(".html")))
    print(f"report: {md} and {md.with_suffix('.html')}")


if __name__ == "__main__":
    run(main)
