"""DVC stage `templates`: the visual viewpoint. The templates of every model in one figure
(rows: loss-regularizer, columns: classes) and the weight distribution per model, which shows L1's
sparsity against L2's spreading. Also logged to MLflow as the run `study-templates`."""
from pathlib import Path

from linclass.studies import pictures
from linclass.plumbing import tracking
from linclass.plumbing.paths import REPORTS, class_names, load_model, model_names
from linclass.plumbing.stage import atomic_dir, run, stage_params, write_json

OUT = REPORTS / "templates"


def main() -> None:
    params = stage_params()
    tol = params["studies"]["near_zero_tol"]
    models = {name: load_model(name)[0] for name in model_names(params)}
    sparsity = {name: {"near_zero_fraction": round(pictures.weight_sparsity(W, tol), 6)} for name, W in models.items()}

    with tracking.study_run(params, "study-templates", "templates") as run_id, atomic_dir(OUT) as out:
        pictures.plot_templates_comparison(models, class_names(), out / "templates.png")
        pictures.plot_weight_histograms(models, out / "weight_histograms.png", tol=tol)
        client = tracking.MlflowClient()
        client.log_batch(run_id, metrics=tracking.scalar_metrics(
            {f"{name}.near_zero_fraction": v["near_zero_fraction"] for name, v in sparsity.items()}))
        client.log_artifacts(run_id, str(out))
    write_json(Path("metrics/sparsity.json"), sparsity)
    for name, v in sparsity.items():
        print(f"templates: {name:20s} near-zero weights {v['near_zero_fraction']:.3f}")


if __name__ == "__main__":
    run(main)
