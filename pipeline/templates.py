"""DVC stage `templates`: the visual viewpoint. The templates of every model in one figure
(rows: loss-regularizer, columns: classes) and the weight distribution per model, which shows L1's
sparsity against L2's spreading. Also logged to MLflow as the run `study-templates` (metrics
`near_zero_share/<model>`)."""
from pathlib import Path

import mlflow

from linclass import plots
from linclass.plumbing.paths import REPORTS, class_names, load_model, model_names
from linclass.plumbing.stage import atomic_dir, run, stage_params, write_json
from linclass.tracking.runs import study_run

OUT = REPORTS / "templates"


def main() -> None:
    params = stage_params()
    tol = params.studies.near_zero_tol
    models = {name: load_model(name)[0] for name in model_names(params)}
    sparsity = {name: {"near_zero_fraction": plots.weight_sparsity(W, tol)} for name, W in models.items()}

    with study_run(params.tracking, "study-templates", "templates",
                   "The class templates (rows of W) of every trained model side by side, and each model's share of "
                   "near-zero weights: L1 makes W sparse, L2 keeps it dense."), atomic_dir(OUT) as out:
        plots.plot_templates_comparison(models, class_names(), out / "templates.png")
        plots.plot_weight_histograms(models, out / "weight_histograms.png", tol=tol)
        mlflow.log_metrics({f"near_zero_share/{name}": v["near_zero_fraction"] for name, v in sparsity.items()})
        mlflow.log_artifacts(str(out))
    write_json(Path("metrics/sparsity.json"), sparsity)
    for name, v in sparsity.items():
        print(f"templates: {name:20s} near-zero weights {v['near_zero_fraction']:.3f}")


if __name__ == "__main__":
    run(main)
