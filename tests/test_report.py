"""The static report: Markdown with relative image links, and a self-contained offline HTML twin."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers_report import write_report_inputs

from linclass.studies.report import markdown_table, write_report


@pytest.fixture
def inputs(tmp_path):
    """Small CSVs and real PNGs under tmp_path/work; the report goes to tmp_path/out/report.md."""
    return write_report_inputs(tmp_path / "work")


def test_markdown_report(tmp_path, inputs):
    out = write_report(tmp_path / "out" / "report.md", **inputs)
    text = out.read_text()
    for value in ("svm-l2", "0.3812", "0.3655", "83.25", "squared_svm", "0.7460", "1.25"):
        assert value in text
    assert "a \\| b" in text  # a '|' inside a cell does not break the table
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 4  # templates, histograms, one scaling figure, decision regions
    for link in links:
        assert not Path(link).is_absolute() and link.startswith("../work/")
        assert (out.parent / link).is_file()


def test_html_twin_is_self_contained(tmp_path, inputs):
    out = write_report(tmp_path / "out" / "report.md", **inputs,
                       extra_images=[("confusion", inputs["templates_png"])])
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"https?://", page)  # opens offline: no CDN, no remote anything
    assert "<script" not in page
    assert page.count("data:image/png;base64,") == 5
    assert "0.3812" in page and "83.25" in page and "a | b" in page
    assert "<td>0.4218 [0.4082, 0.4355]</td>" in page   # the validation accuracy and its interval, one cell
    assert "## More figures" in out.read_text()


def test_report_is_deterministic(tmp_path, inputs):
    first = write_report(tmp_path / "out" / "report.md", **inputs).read_bytes()
    html_first = (tmp_path / "out" / "report.html").read_bytes()
    second = write_report(tmp_path / "out" / "report.md", **inputs).read_bytes()
    assert first == second and html_first == (tmp_path / "out" / "report.html").read_bytes()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report.md"]


def test_missing_image_is_a_clear_error(tmp_path, inputs):
    inputs["weight_hist_png"] = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match="nope.png"):
        write_report(tmp_path / "out" / "report.md", **inputs)
    assert not (tmp_path / "out" / "report.md").exists()


def test_markdown_table_formats_cells():
    df = pd.DataFrame({"a": [1, 2], "b": [0.123456789, np.nan], "c": ["x", "y"]})
    assert markdown_table(df).splitlines() == ["| a | b | c |", "|---|---|---|", "| 1 | 0.1235 | x |",
                                               "| 2 |  | y |"]


def test_one_precision_per_quantity_and_intervals_in_one_cell():
    """Accuracies 4 decimals (whatever the CSV held), their interval beside them; settings as written; other
    measurements 4 significant digits; a difference signed; p-values 3 significant digits."""
    df = pd.DataFrame({"model": ["a", "b"], "strength": [1e-4, 0.001], "val_accuracy": [0.4218, 0.41],
                       "val_accuracy_low": [0.408176, 0.39646], "val_accuracy_high": [0.43554, 0.4236],
                       "test_accuracy": [0.41379999, 0.4], "final_data_loss": [1.7512345, 12.0],
                       "difference": [0.0008, -0.00125], "p_value": [0.125, 4.6527e-11], "b": [4, 506]})
    assert markdown_table(df).splitlines() == [
        "| model | strength | val_accuracy (95%) | test_accuracy | final_data_loss | difference | p_value | b |",
        "|---|---|---|---|---|---|---|---|",
        "| a | 0.0001 | 0.4218 [0.4082, 0.4355] | 0.4138 | 1.751 | +0.0008 | 0.125 | 4 |",
        "| b | 0.001 | 0.4100 [0.3965, 0.4236] | 0.4000 | 12 | -0.0013 | 4.65e-11 | 506 |"]


def test_models_are_ranked_by_validation_with_intervals_and_budgets(tmp_path, inputs):
    """comparison.csv in test order: the report's table ranks by validation, shows both intervals, and every
    study says its budget."""
    budgets = {"models": "Budget: every model trained 40 epochs.", "weight_scaling": "Budget: 50 images.",
               "hard_cases": "Budget: 1,000 points."}
    text = write_report(tmp_path / "out" / "report.md", **inputs, budgets=budgets).read_text()
    lines = [line for line in text.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert lines[0].startswith("| 1 | softmax-l1 | 0.0001 | 0.4402 | 0.4218 [0.4082, 0.4355] | "
                               "0.3655 [0.3561, 0.3750] |"), lines
    assert lines[1].startswith("| 2 | svm-l2 | 0.001 | 0.4313 | 0.4104 [0.3969, 0.4241] | 0.3812 [0.3717, 0.3908] |")
    assert "| rank | model | strength | train_accuracy | val_accuracy (95%) | test_accuracy (95%) |" in text
    assert "ranked by validation accuracy" in text and "95% Wilson interval" in text
    for sentence in budgets.values():
        assert sentence in text


def test_path_and_map_sections_say_their_measured_numbers(tmp_path, inputs):
    """Each new picture comes with one sentence computed from its table."""
    folder = tmp_path / "path"
    rows = [("softmax", reg, s, acc, nz, pen) for reg, values in {
        "l1": [(1e-4, 0.41, 0.05, 550.0), (1e-2, 0.23, 0.92, 40.0), (1.0, 0.10, 1.0, 0.0)],
        "l2": [(1e-4, 0.41, 0.05, 17.7), (1e-2, 0.40, 0.04, 8.5), (1.0, 0.30, 0.03, 0.25)]}.items()
        for s, acc, nz, pen in values]
    table = pd.DataFrame(rows, columns=["loss", "regularizer", "strength", "val_accuracy", "near_zero", "penalty"])
    table["train_accuracy"], table["data_loss"] = 0.5, 1.7
    folder.mkdir()
    table.to_csv(folder / "path.csv", index=False)
    for name in ("templates.png", "curves.png"):
        (folder / name).write_bytes(inputs["templates_png"].read_bytes())
    sweep = tmp_path / "softmax-l2.csv"
    pd.DataFrame({"learning_rate": [0.01, 0.05], "strength": [1e-3, 1e-3], "val_accuracy": [0.40, 0.42]}).to_csv(
        sweep, index=False)
    out = write_report(tmp_path / "out" / "report.md", **inputs, regularization_path_dir=folder,
                       hyperparameter_maps=[(sweep, inputs["templates_png"])],
                       budgets={"regularization_path": "Budget: each point trained 5 epochs."})
    text = out.read_text()
    assert ("softmax: from λ=0.0001 to λ=1 the near-zero share of W goes from 5% to 100% with L1, half of it "
            "from λ=0.01 (sum |W| 550 -> 0), and from 5% to 3% with L2, whose sum W^2 falls from 17.7 to 0.25.") in text
    assert "softmax-l1 0.4100 at λ=0.0001; softmax-l2 0.4100 at λ=0.0001; at λ=1: softmax-l1 0.1000" in text
    assert "ranges from 0.4000 to 0.4200, the best at learning rate 0.05 and λ=0.001." in text
    assert "Budget: ? epochs per run (the table does not record its validation split's size)." in text
    assert "## The regularization path: L1 against L2 as the strength grows\n\nBudget: each point trained 5 epochs." \
        in text
    assert len(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)) == 4 + 3


def test_training_section_shows_the_curves_and_the_best_models_confusion_in_numbers(tmp_path, inputs):
    import json

    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "best.json").write_text(json.dumps({"model": "svm-l2", "val_accuracy": 0.41, "test_accuracy": 0.4}))
    pd.DataFrame([[8, 2, 0], [5, 5, 0], [1, 0, 9]], index=["cat", "dog", "frog"],
                 columns=["cat", "dog", "frog"]).to_csv(evaluation / "confusion_matrix.csv")
    for name in ("loss_curves.png", "confusion_matrix.png"):
        (evaluation / name).write_bytes(inputs["templates_png"].read_bytes())
    comparison = pd.DataFrame({"model": ["svm-l2", "softmax-l1"], "test_accuracy": [0.4, 0.39],
                               "final_data_loss": [2.5, 1.75]})
    comparison.to_csv(inputs["comparison_csv"], index=False)
    text = write_report(tmp_path / "out" / "report.md", **inputs, evaluation_dir=evaluation).read_text()
    assert "## Training and the best model" in text
    assert "softmax-l1 1.75, svm-l2 2.5" in text
    assert "The best model on validation is svm-l2 (validation 0.4100, test 0.4000)" in text
    assert "best class is frog (90.0% right), its worst dog (50.0%)" in text
    assert "most frequent confusion: dog taken for cat (5 of 10 test images)" in text
    assert text.count("](../evaluation/") == 2


def test_the_champion_against_the_runner_up_is_a_table_of_b_c_p_and_the_verdict(tmp_path, inputs):
    import json

    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    test = {"images": 10000, "champion_accuracy": 0.4138, "runner_up_accuracy": 0.4137, "difference": 0.0001,
            "b": 7, "c": 6, "p_value": 1.0, "mid_p": 0.79, "verdict": "within noise"}
    val = {**test, "images": 5000, "champion_accuracy": 0.4218, "runner_up_accuracy": 0.421, "difference": 0.0008,
           "b": 4, "c": 0, "p_value": 0.125, "mid_p": 0.0625}
    (evaluation / "best.json").write_text(json.dumps({
        "model": "softmax-elasticnet", "val_accuracy": 0.4218, "val_accuracy_low": 0.4082, "val_accuracy_high": 0.4355,
        "test_accuracy": 0.4138, "test_accuracy_low": 0.4042, "test_accuracy_high": 0.4235,
        "champion": "softmax-elasticnet", "runner_up": "softmax-l1", "alpha": 0.05, "val": val, "test": test}))
    pd.DataFrame([[8, 2], [5, 5]], index=["cat", "dog"], columns=["cat", "dog"]).to_csv(
        evaluation / "confusion_matrix.csv")
    for name in ("loss_curves.png", "confusion_matrix.png"):
        (evaluation / name).write_bytes(inputs["templates_png"].read_bytes())
    text = write_report(tmp_path / "out" / "report.md", **inputs, evaluation_dir=evaluation).read_text()
    assert ("Is the champion softmax-elasticnet really better than the runner-up softmax-l1? " in text
            and "On validation: within noise (b = 4, c = 0, p = 0.125); on test: within noise (b = 7, c = 6, p = 1)."
            in text)
    assert (
        "| split | images | champion_accuracy | runner_up_accuracy | difference | b | c | p_value | verdict |" in text
    )
    assert "| validation | 5000 | 0.4218 | 0.4210 | +0.0008 | 4 | 0 | 0.125 | within noise |" in text
    assert "| test | 10000 | 0.4138 | 0.4137 | +0.0001 | 7 | 6 | 1 | within noise |" in text
    assert "(validation 0.4218 [0.4082, 0.4355], test 0.4138 [0.4042, 0.4235])" in text


def test_the_weight_scaling_budget_says_where_each_model_is_scored():
    """The zero-hinge model's accuracy of 1.0 is on its own 50 training images; the sentence said every model
    was scored on the 45,000 (a class would read 1.0 as a perfect model)."""
    import yaml

    from linclass.config import validate
    from linclass.studies.report import budget_sentences

    settings = validate(yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text()))
    n = settings.studies.zero_hinge_subset
    sentence = budget_sentences(settings, {"train": 45000, "val": 5000, "test": 10000})["weight_scaling"]
    assert f"zero-hinge model is trained on {n} training images until its hinge loss is 0 and scored on those " \
           f"{n} images" in sentence, sentence
    assert "every other model is scored on the 45,000 training images" in sentence, sentence


def test_the_report_lays_the_accuracies_out_as_the_lectures_grid():
    """A row per loss and a column per regularizer in the lecture's order, pixels first, whatever the ranking."""
    from linclass.studies.report import grid_blocks

    rows = [("softmax-l2-hog_hist", "softmax", "l2", "hog_hist", 0.62, 0.61),
            ("softmax-none", "softmax", "none", "pixels", 0.4196, 0.4137),
            ("svm-l2", "svm", "l2", "pixels", 0.4110, 0.3948),
            ("svm-none", "svm", "none", "pixels", 0.4114, 0.3948),
            ("softmax-l2", "softmax", "l2", "pixels", 0.4206, 0.4118)]
    comparison = pd.DataFrame(rows, columns=["model", "loss", "regularizer", "features", "val_accuracy",
                                             "test_accuracy"])
    tables = [block for block in grid_blocks(comparison) if block["kind"] == "table"]
    assert [t["columns"] for t in tables] == [["loss (pixels)", "none", "l2"], ["loss (hog_hist)", "l2"]]
    assert tables[0]["rows"] == [["svm", "0.4114 / 0.3948", "0.4110 / 0.3948"],
                                 ["softmax", "0.4196 / 0.4137", "0.4206 / 0.4118"]]
    assert tables[1]["rows"] == [["softmax", "0.6200 / 0.6100"]]
    assert grid_blocks(comparison.drop(columns=["loss"])) == []


def test_the_report_shows_each_models_initial_loss_against_the_lectures_check(tmp_path, inputs):
    """The lecture's sanity check (the loss at initialization is C - 1 for the SVM, ln C for softmax) on the real
    data: reports/initial_loss.csv of the loss_study stage, in the loss questions' section."""
    initial = tmp_path / "initial_loss.csv"
    initial.write_text("model,loss,expected,observed,relative_error,ok\n"
                       "svm-l2,svm,9,8.99888,0.000124931,True\nsoftmax-l2,softmax,2.30259,2.30256,9.61735e-06,True\n")
    text = write_report(tmp_path / "out" / "report.md", **inputs, initial_loss_csv=initial).read_text()
    section = text[text.index("## The lecture's loss questions, measured"):text.index("## Geometric viewpoint")]
    assert "each model's loss at its first step" in section
    assert "| svm-l2 | svm | 9 | 8.999 | 0.0001249 | True |" in section, section
    assert "| softmax-l2 | softmax | 2.303 | 2.303 |" in section, section
    assert "first step" not in write_report(tmp_path / "out2" / "report.md", **inputs).read_text()
