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
    for value in ("svm-l2", "0.3812", "0.3655", "83.25", "squared_svm", "0.746", "1.25"):
        assert value in text
    assert "| run | test_accuracy |" in text
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
    assert markdown_table(df).splitlines() == ["| a | b | c |", "|---|---|---|", "| 1 | 0.123457 | x |",
                                               "| 2 |  | y |"]


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
                       hyperparameter_maps=[(sweep, inputs["templates_png"])])
    text = out.read_text()
    assert ("softmax: from λ=0.0001 to λ=1 the near-zero share of W goes from 5% to 100% with L1, half of it "
            "from λ=0.01 (sum |W| 550 -> 0), and from 5% to 3% with L2, whose sum W^2 falls from 17.7 to 0.25.") in text
    assert "softmax-l1 0.410 at λ=0.0001; softmax-l2 0.410 at λ=0.0001; at λ=1: softmax-l1 0.100" in text
    assert "ranges from 0.400 to 0.420, the best at learning rate 0.05 and λ=0.001." in text
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
    assert "softmax-l1 1.750, svm-l2 2.500" in text
    assert "The best model on validation is svm-l2 (validation 0.4100, test 0.4000)" in text
    assert "best class is frog (90.0% right), its worst dog (50.0%)" in text
    assert "most frequent confusion: dog taken for cat (5 of 10 test images)" in text
    assert text.count("](../evaluation/") == 2
