"""One static report of the pipeline: report.md (images by relative path) and report.html (one file, images
embedded as base64 data URIs: no network, no JavaScript), rendered by Jinja2 from the templates beside this
module (templates/report.md.j2, templates/report.html.j2). Every table is read from a CSV.

The report is a list of blocks, the same for both templates:
    {"kind": "h1" | "h2" | "p", "text": str}
    {"kind": "table", "columns": [str], "rows": [[str]]}     cells already formatted (cell_text)
    {"kind": "image", "caption": str, "path": Path}          Markdown: a relative link; HTML: a data URI

One precision per quantity (cell_text, by column name): accuracies and shares with 4 decimals, and beside a
column <c> with <c>_low and <c>_high one column "<c> (95%)": "0.4218 [0.4082, 0.4355]"; accuracy differences
with a sign and 4 decimals; p-values with 3 significant digits; settings (strength, learning rate, scale) as
written; every other number with 4 significant digits; integers as they are.

Tables of models are ranked by validation accuracy (the project's rule: the test accuracy never chooses),
and each study says its budget (images, epochs) in a sentence: `budgets` (budget_sentences).
"""
from __future__ import annotations

import base64
import json
import math
import os
import re
from collections.abc import Mapping
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from linclass.files import atomic_file
from linclass.settings import LOSS_NAMES, REGULARIZER_NAMES

MIME_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
ACCURACY = re.compile(r"accuracy|majority_rate|near_zero|fraction|share")
SETTING = re.compile(r"^(strength|learning_rate|scale|lr|beta|delta|alpha)$")


def cell_text(column, value):
    """Text of one table cell of `column` (see the module docstring); NaN and None are empty."""
    if value is None or (isinstance(value, Real) and not isinstance(value, Integral) and math.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, Integral):
        return str(int(value))
    if not isinstance(value, Real):
        return str(value)
    value = float(value)
    if column == "difference":
        return f"{value:+.4f}"
    if column in ("p_value", "mid_p"):
        return f"{value:.3g}"
    if ACCURACY.search(column):
        return f"{value:.4f}"
    if SETTING.match(column):
        return f"{value:g}"
    return f"{value:.4g}"


def with_interval(df):
    """df with each column <c> that has <c>_low and <c>_high as one text column '<c> (95%)'."""
    df = df.copy()
    for column in list(df.columns):
        low, high = f"{column}_low", f"{column}_high"
        if low in df.columns and high in df.columns:
            texts = [f"{cell_text(column, v)} [{cell_text(column, lo)}, {cell_text(column, hi)}]"
                     for v, lo, hi in zip(df[column], df[low], df[high])]
            at = list(df.columns).index(column)
            df = df.drop(columns=[column, low, high])
            df.insert(at, f"{column} (95%)", texts)
    return df


def table(df):
    """The table block of df: intervals merged into their column, every cell formatted by its column."""
    df = with_interval(df)
    columns = [str(c) for c in df.columns]
    rows = [[cell_text(c, v) for c, v in zip(columns, row)] for row in df.itertuples(index=False, name=None)]
    return {"kind": "table", "columns": columns, "rows": rows}


def markdown_cell(text):
    """A Markdown table cell: '|' escaped, on one line."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(df):
    """The GitHub-flavoured Markdown table of df, as the report writes it."""
    return _environment().get_template("table.md.j2").render(block=table(df)).rstrip("\n")


def data_uri(path):
    path = Path(path)
    mime = MIME_TYPES.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"cannot embed image {str(path)!r}: suffix must be one of {', '.join(MIME_TYPES)}")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _environment():
    env = Environment(loader=PackageLoader("linclass", "studies/templates"), undefined=StrictUndefined,
                      autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(markdown_cell=markdown_cell, data_uri=data_uri)
    return env


def render(blocks, template, **context):
    return _environment().get_template(template).render(blocks=blocks, **context)


def relative_link(path, base_dir):
    """The image's link from the report's folder (the folder can be moved or opened offline)."""
    link = Path(os.path.relpath(Path(path).resolve(), Path(base_dir).resolve())).as_posix()
    return f"<{link}>" if " " in link else link


def paragraph(text):
    return {"kind": "p", "text": text}


def heading(text, level=2):
    return {"kind": f"h{level}", "text": text}


def image(caption, path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"report image {str(path)!r} ({caption}) does not exist")
    return {"kind": "image", "caption": caption, "path": path}


def _extra(item):
    """An extra image is a path (caption = file name) or a (caption, path) pair."""
    if isinstance(item, (tuple, list)):
        caption, path = item
        return image(str(caption), path)
    return image(Path(item).stem, item)


def budget_sentences(settings, images: Mapping[str, int]) -> dict[str, str]:
    """One sentence per section saying what its numbers cost: images and epochs (from the settings the stages
    ran with and `images`, the evaluate stage's counts of training, validation and test images)."""
    train, studies, path = settings.train, settings.studies, settings.studies.regularization_path
    n_train, n_val, n_test = images["train"], images["val"], images["test"]
    return {
        "models": (f"Budget: every model trained {train.epochs} epochs of minibatch SGD (batch {train.batch_size}) "
                   f"on {n_train:,} training images, chosen on {n_val:,} validation images, tested once on "
                   f"{n_test:,} test images."),
        "weight_scaling": (f"Budget: the zero-hinge model is trained on {studies.zero_hinge_subset} training images "
                           f"until its hinge loss is 0 and scored on those {studies.zero_hinge_subset} images (its "
                           f"accuracy says they are separated, not that it is a good model); every other model is "
                           f"scored on the {n_train:,} training images; at the scales "
                           f"{', '.join(f'{s:g}' for s in studies.scales)}."),
        "hard_cases": (f"Budget: {studies.hard_cases.n:,} points per data set, {studies.hard_cases.epochs} epochs "
                       f"at learning rate {studies.hard_cases.learning_rate:g}."),
        "regularization_path": (f"Budget: each point trained {path.epochs} epochs on the first "
                                f"{min(path.train_subset, n_train):,} training images (the models above: "
                                f"{train.epochs} epochs on {n_train:,}), scored on the {n_val:,} validation "
                                "images: its accuracies are lower than the table's."),
    }


def comparison_blocks(comparison, budget=None):
    """The models ranked by validation accuracy, with the 95% intervals of both accuracies."""
    table_df = comparison.drop(columns=[c for c in ("loss", "regularizer") if c in comparison.columns])
    if "val_accuracy" in table_df.columns:
        table_df = table_df.sort_values("val_accuracy", ascending=False, kind="stable")
        table_df.insert(0, "rank", range(1, len(table_df) + 1))
    intervals = "val_accuracy_low" in comparison.columns
    return [
        heading("Model comparison"),
        paragraph("Loss x regularizer combinations, as measured by the evaluate stage, ranked by validation "
                  "accuracy (the test accuracy never chooses)"
                  + ("; [low, high] is the 95% Wilson interval of each accuracy." if intervals else ".")
                  + (f" {budget}" if budget else "")),
        table(table_df),
    ]


def grid_blocks(comparison):
    """The lecture's grid: one table per input (pixels, each kind of features), a row per loss and a column per
    regularizer, each cell "validation / test" accuracy. Nothing when the table lacks those columns."""
    if not {"loss", "regularizer", "val_accuracy", "test_accuracy"} <= set(comparison.columns):
        return []
    cells = comparison.assign(
        features=comparison["features"] if "features" in comparison.columns else "pixels",
        cell=[f"{cell_text('val_accuracy', v)} / {cell_text('test_accuracy', t)}"
              for v, t in zip(comparison["val_accuracy"], comparison["test_accuracy"])])
    blocks = [heading("The loss x regularizer grid"),
              paragraph("The same accuracies laid out as the lecture's grid: validation / test, a row per loss and "
                        "a column per regularizer; one table per input.")]
    for kind in sorted(cells["features"].unique(), key=lambda kind: kind != "pixels"):   # pixels first
        rows = cells[cells["features"] == kind]
        grid = rows.pivot(index="loss", columns="regularizer", values="cell")
        grid = grid.reindex(index=[name for name in LOSS_NAMES if name in grid.index],   # the lecture's order
                            columns=[name for name in REGULARIZER_NAMES if name in grid.columns])
        blocks.append(table(grid.rename_axis(index=f"loss ({kind})", columns=None).reset_index()))
    return blocks


def paired_test_blocks(best):
    """The champion against the runner-up on the same images: b, c, the difference, p and the verdict."""
    if not best.get("runner_up"):
        return [paragraph(f"{best['model']} is the only model: there is no runner-up to test it against.")]
    rows = [{"split": split_name, "images": best[split]["images"],
             "champion_accuracy": best[split]["champion_accuracy"],
             "runner_up_accuracy": best[split]["runner_up_accuracy"], "difference": best[split]["difference"],
             "b": best[split]["b"], "c": best[split]["c"], "p_value": best[split]["p_value"],
             "verdict": best[split]["verdict"]}
            for split, split_name in (("val", "validation"), ("test", "test")) if split in best]
    val, test = best["val"], best["test"]
    return [
        paragraph(f"Is the champion {best['model']} really better than the runner-up {best['runner_up']}? McNemar's "
                  "exact test on the same images: b = images only the champion got right, c = images only the "
                  f"runner-up got right, difference = (b - c) / n; at alpha = {best['alpha']:g} the verdict is "
                  f"\"better\", \"worse\" or \"within noise\". On validation: {val['verdict']} (b = {val['b']}, "
                  f"c = {val['c']}, p = {cell_text('p_value', val['p_value'])}); on test: {test['verdict']} "
                  f"(b = {test['b']}, c = {test['c']}, p = {cell_text('p_value', test['p_value'])})."),
        table(pd.DataFrame(rows)),
    ]


def evaluation_blocks(folder, comparison):
    """Training and the best model, from the evaluate stage's folder (best.json, loss_curves.png,
    confusion_matrix.csv/.png) and the comparison table: each picture with one sentence of numbers."""
    folder = Path(folder)
    best = json.loads((folder / "best.json").read_text())
    confusion = pd.read_csv(folder / "confusion_matrix.csv", index_col=0)
    counts = confusion.to_numpy()
    off = counts - np.diag(np.diag(counts))
    true, predicted = np.unravel_index(np.argmax(off), off.shape)
    per_class = np.diag(counts) / counts.sum(axis=1)
    final = comparison.set_index("model")

    def accuracy(split):
        value = cell_text("accuracy", best[f"{split}_accuracy"])
        if f"{split}_accuracy_low" not in best:
            return value
        return f"{value} [{cell_text('accuracy', best[f'{split}_accuracy_low'])}, " \
               f"{cell_text('accuracy', best[f'{split}_accuracy_high'])}]"

    blocks = [
        heading("Training and the best model"),
        image("training loss (data + regularization) of every model, one panel each", folder / "loss_curves.png"),
        paragraph("Final data loss per model: " + ", ".join(
            f"{name} {cell_text('loss', row.final_data_loss)}" for name, row in final.sort_index().iterrows()) + "."),
        image(f"test confusion matrix of {best['model']}", folder / "confusion_matrix.png"),
        paragraph(f"The best model on validation is {best['model']} (validation {accuracy('val')}, test "
                  f"{accuracy('test')}). Its best class is {confusion.index[int(np.argmax(per_class))]} "
                  f"({per_class.max():.1%} right), its worst {confusion.index[int(np.argmin(per_class))]} "
                  f"({per_class.min():.1%}); its most frequent confusion: {confusion.index[true]} taken for "
                  f"{confusion.columns[predicted]} ({off[true, predicted]} of {counts[true].sum()} test images)."),
    ]
    if "runner_up" in best:
        blocks[1:1] = paired_test_blocks(best)
    return blocks


def _with_interval(side, row):
    return (f"{cell_text('accuracy', row[f'{side}_accuracy'])} [{cell_text('accuracy', row[f'{side}_accuracy_low'])}, "
            f"{cell_text('accuracy', row[f'{side}_accuracy_high'])}]")


def features_blocks(folder):
    """Pixels against features, from the evaluate stage's pixels_vs_features.json and feature_weights.png: the
    best model of each input (chosen on validation) overall and per class, in sentences of measured numbers."""
    folder = Path(folder)
    versus = json.loads((folder / "pixels_vs_features.json").read_text())
    pixels, features, test = versus["pixels"], versus["features"], versus["test"]
    per_class = pd.DataFrame(versus["per_class"])
    gain = per_class["features_accuracy"] - per_class["pixels_accuracy"]
    most, least = per_class.loc[gain.idxmax()], per_class.loc[gain.idxmin()]
    apart = per_class[(per_class["features_accuracy_low"] > per_class["pixels_accuracy_high"])
                      | (per_class["pixels_accuracy_low"] > per_class["features_accuracy_high"])]
    twins = pd.DataFrame(versus["twins"])
    ahead = int((twins["features_test_accuracy"] > twins["pixels_test_accuracy"]).sum()) if len(twins) else 0
    mean_gain = float((twins["features_test_accuracy"] - twins["pixels_test_accuracy"]).mean()) if len(twins) else 0.0
    table_rows = [{"class": row["class"], "images": row["images"], "pixels (95%)": _with_interval("pixels", row),
                   "features (95%)": _with_interval("features", row),
                   "difference": row["features_accuracy"] - row["pixels_accuracy"]} for _, row in per_class.iterrows()]
    return [
        heading("Pixels against features"),
        paragraph(f"The same linear classifiers on two inputs: the raw pixels (3,072 numbers per image) and the "
                  f"{versus['kind']} features (a hue histogram, a value histogram and HOG, each column "
                  "standardized on the training split). The best of each on validation, on the "
                  f"{test['images']:,} test images: {features} {cell_text('accuracy', test['champion_accuracy'])} "
                  f"against {pixels} {cell_text('accuracy', test['runner_up_accuracy'])}, a difference of "
                  f"{cell_text('difference', test['difference'])} (McNemar: b = {test['b']} images only the features "
                  f"model got right, c = {test['c']} only the pixel model; p = {cell_text('p_value', test['p_value'])}:"
                  f" {test['verdict']}). Loss x regularizer by loss x regularizer, the features model is ahead on "
                  f"test in {ahead} of {len(twins)} pairs, by {cell_text('difference', mean_gain)} on average."),
        paragraph(f"Per class (95% Wilson intervals on each class's {int(per_class['images'].iloc[0]):,} test "
                  f"images): the features gain most on {most['class']} ({_with_interval('pixels', most)} -> "
                  f"{_with_interval('features', most)}) and least on {least['class']} "
                  f"({_with_interval('pixels', least)} -> {_with_interval('features', least)}); the intervals "
                  f"do not overlap for {len(apart)} of {len(per_class)} classes."),
        table(pd.DataFrame(table_rows)),
        paragraph("A features model's weights are not an image: a row of W weighs hue bins, value bins and the "
                  "orientation bins of HOG cells. Below, per class, the weights on the hue and value bins (bars) and "
                  "the HOG glyph of the finest cells (one stroke per orientation along the edge it stands for, as "
                  "long as its positive weight). Each training run in MLflow carries the same picture of its model "
                  "(templates_grid.png) instead of template images."),
        image(f"what {features} weighs, per class", folder / "feature_weights.png"),
    ]


def regularization_path_blocks(folder, budget=None):
    """The regularization path from its stage's folder (path.csv, templates.png, curves.png): each picture
    with one sentence of numbers measured from path.csv."""
    from linclass.studies.regularization_path import describe_curves, describe_templates

    folder = Path(folder)
    path_table = pd.read_csv(folder / "path.csv")
    losses = [loss for loss in path_table["loss"].unique()
              if {"l1", "l2"} <= set(path_table.loc[path_table["loss"] == loss, "regularizer"])]
    return [
        heading("The regularization path: L1 against L2 as the strength grows"),
        *([paragraph(budget)] if budget else []),
        image("the template of one class along the path (columns: strength)", folder / "templates.png"),
        paragraph(" ".join(describe_templates(path_table, loss) for loss in losses)),
        image("validation accuracy, near-zero share, data loss and R(W) against the strength", folder / "curves.png"),
        paragraph(describe_curves(path_table)),
    ]


def sweep_budget(rows: pd.DataFrame) -> str:
    """What a sweep table's runs cost, from its own columns (epochs, val_size)."""
    epochs = ", ".join(str(int(e)) for e in sorted(rows["epochs"].unique())) if "epochs" in rows else "?"
    if "val_size" in rows and rows["val_size"].notna().all():
        val = ", ".join(f"{int(v):,}" for v in sorted(rows["val_size"].unique()))
        return f"Budget: {epochs} epochs per run, scored on {val} validation images."
    return f"Budget: {epochs} epochs per run (the table does not record its validation split's size)."


def hyperparameter_map_blocks(maps):
    """The learning rate x strength heat maps: maps = [(sweep table CSV, its heat map PNG), ...], each
    with its budget and one sentence of numbers measured from the table."""
    from linclass.studies.hyperparameter_map import describe, map_grid

    blocks = [heading("The hyperparameter map: learning rate x strength")]
    for csv, png in maps:
        rows = pd.read_csv(csv)
        blocks += [image(f"validation accuracy of the sweep {Path(csv).stem}", png),
                   paragraph(describe(Path(csv).stem, *map_grid(rows.to_dict("records"))) + " " + sweep_budget(rows))]
    return blocks


def write_report(out_path, *, comparison_csv, templates_png, weight_hist_png, scaling_csv, scaling_pngs,
                 loss_study_csv, hard_cases_csv, hard_cases_png, evaluation_dir=None, regularization_path_dir=None,
                 hyperparameter_maps=(), extra_images=(), budgets: Mapping[str, str] | None = None,
                 initial_loss_csv=None):
    """Write report.md at out_path and its HTML twin (same name, .html) beside it; returns the .md path.

    evaluation_dir: the evaluate stage's reports/evaluation (loss curves, the champion against the runner-up,
    its confusion matrix; section left out when None); regularization_path_dir: the regularization_path
    stage's folder (likewise); hyperparameter_maps: [(sweep table CSV, heat map PNG), ...]; budgets: the
    sentence of each section saying what it cost (budget_sentences); initial_loss_csv: the loss_study stage's
    check of each model's loss at its first step (table left out when None).
    """
    out_path = Path(out_path)
    if out_path.suffix != ".md":
        raise ValueError(f"report path must end in .md, got {str(out_path)!r}")
    budgets = dict(budgets or {})
    comparison = pd.read_csv(comparison_csv)
    blocks = [
        heading("Linear classifiers on CIFAR-10: report", level=1),
        *comparison_blocks(comparison, budgets.get("models")),
        *grid_blocks(comparison),
        *(evaluation_blocks(evaluation_dir, comparison) if evaluation_dir is not None else []),
        *(features_blocks(evaluation_dir) if evaluation_dir is not None
          and (Path(evaluation_dir) / "pixels_vs_features.json").is_file() else []),
        heading("Visual viewpoint: one template per class"),
        paragraph("Each row of W, reshaped to 32x32x3 and rescaled min-max to 0..255 per class."),
        image("class templates per model", templates_png),
        heading("Weights: L1 sparsity vs L2 spreading"),
        paragraph("Histograms of the weights; near-zero = |w| <= 1% of max|W|."),
        image("weight histograms", weight_hist_png),
        heading("Scaling W: L = 0 is not unique"),
        paragraph("The zero-hinge model with W and b multiplied by s: the hinge loss stays 0 for s >= 1, "
                  "the penalties grow (L2 as s^2, L1 as s), the accuracy does not change."
                  + (f" {budgets['weight_scaling']}" if "weight_scaling" in budgets else "")),
        table(pd.read_csv(scaling_csv)),
        *[image(f"weight scaling: {Path(p).stem}", p) for p in scaling_pngs],
        heading("The lecture's loss questions, measured"),
        paragraph("Long format: one row per measured number (question, case, loss, value), computed on the "
                  "lecture's example scores: no training."),
        table(pd.read_csv(loss_study_csv)),
        *([paragraph("The lecture's sanity check on the real data: each model's loss at its first step, with W "
                     "near 0, against C - 1 for the SVMs and ln C for softmax (the pixel models; `ok` within the "
                     "tolerance studies.initial_loss_tolerance)."),
           table(pd.read_csv(initial_loss_csv))] if initial_loss_csv is not None else []),
        heading("Geometric viewpoint: hard cases"),
        paragraph("2-D problems a line cannot solve: accuracy stays near the majority rate, "
                  "while the linearly separable control is near 100%."
                  + (f" {budgets['hard_cases']}" if "hard_cases" in budgets else "")),
        table(pd.read_csv(hard_cases_csv)),
        image("decision regions", hard_cases_png),
    ]
    if regularization_path_dir is not None:
        blocks += regularization_path_blocks(regularization_path_dir, budgets.get("regularization_path"))
    if hyperparameter_maps:
        blocks += hyperparameter_map_blocks(hyperparameter_maps)
    extras = [_extra(item) for item in extra_images]
    if extras:
        blocks += [heading("More figures"), *extras]

    for block in blocks:
        if block["kind"] == "image":
            block["link"] = relative_link(block["path"], out_path.parent)
    markdown = render(blocks, "report.md.j2")
    page = render(blocks, "report.html.j2", title=blocks[0]["text"])
    html_path = out_path.with_suffix(".html")
    with atomic_file(out_path) as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    with atomic_file(html_path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out_path
