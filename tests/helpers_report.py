"""Small real inputs of linclass.studies.report: PNG figures and CSV tables, written to a folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from linclass.plots import plot_template_grid, save_template_pngs


def write_report_inputs(work: Path) -> dict:
    """The keyword arguments of write_report: real PNGs and small CSVs under `work`."""
    work.mkdir(parents=True, exist_ok=True)
    W = np.random.default_rng(0).standard_normal((2, 3072))
    templates = plot_template_grid(W, ["cat", "dog"], work / "templates.png", title="t")
    [hist, scaling_png] = save_template_pngs(W, ["hist", "scaling"], work / "figs", upscale=1)
    paths = {"templates_png": templates, "weight_hist_png": hist, "scaling_pngs": [scaling_png],
             "hard_cases_png": templates}
    tables = {
        # as the evaluate stage writes it, but in the wrong order (by test accuracy): the report ranks by validation
        "comparison_csv": pd.DataFrame({
            "model": ["svm-l2", "softmax-l1"], "loss": ["svm", "softmax"], "regularizer": ["l2", "l1"],
            "strength": [1e-3, 1e-4], "train_accuracy": [0.43125, 0.4402],
            "val_accuracy": [0.4104, 0.4218], "val_accuracy_low": [0.39686, 0.40818],
            "val_accuracy_high": [0.424078, 0.43554], "test_accuracy": [0.3812, 0.3655],
            "test_accuracy_low": [0.371731, 0.356111], "test_accuracy_high": [0.390762, 0.374993],
            "final_data_loss": [2.5, 1.75], "final_reg_loss": [0.031234, 0.0004], "near_zero_weights": [0.01, 0.5]}),
        "scaling_csv": pd.DataFrame({"model": ["svm-zero"] * 2, "scale": [1.0, 2.0], "hinge_loss": [0.0, 0.0],
                                     "l2_penalty": [1.25, 5.0]}),
        "loss_study_csv": pd.DataFrame({"question": ["Q6 squared hinge"], "case": ["frog"],
                                        "loss": ["squared_svm"], "value": [83.25], "note": ["a | b"]}),
        "hard_cases_csv": pd.DataFrame({"dataset": ["ring"], "loss": ["svm"], "accuracy": [0.746],
                                        "majority_rate": [0.746]}),
    }
    for key, df in tables.items():
        paths[key] = work / f"{key}.csv"
        df.to_csv(paths[key], index=False)
    return paths
