"""One static report of the studies: report.md (images by relative path) and report.html (one file,
images embedded as base64 data URIs: no network, no JavaScript). Every table is read from a CSV.

The report is a list of blocks, rendered twice:
    ("h1" | "h2", text)   heading
    ("p", text)           paragraph
    ("table", DataFrame)  table
    ("image", caption, Path)
"""

import base64
import html
import json
import math
import os
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pandas as pd

from linclass.files import atomic_file

MIME_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def format_cell(value):
    """Text of one table cell: integers as is, floats with 6 significant digits, NaN / None empty."""
    if value is None or (isinstance(value, Real) and not isinstance(value, Integral) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, Integral):
        return str(int(value))
    if isinstance(value, Real):
        return f"{float(value):.6g}"
    return str(value)


def markdown_table(df):
    """A GitHub-flavoured Markdown table of df (no extra dependency); '|' in cells is escaped."""
    def cells(values):
        return "| " + " | ".join(format_cell(v).replace("|", "\\|").replace("\n", " ") for v in values) + " |"

    lines = [cells(df.columns), "|" + "|".join("---" for _ in df.columns) + "|"]
    lines += [cells(row) for row in df.itertuples(index=False, name=None)]
    return "\n".join(lines)


def html_table(df):
    """An HTML table of df with escaped cells."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(format_cell(v))}</td>" for v in row) + "</tr>"
        for row in df.itertuples(index=False, name=None))
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>{body}</tbody>\n</table>"


def _data_uri(path):
    mime = MIME_TYPES.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"cannot embed image {str(path)!r}: suffix must be one of {', '.join(MIME_TYPES)}")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_markdown(blocks, base_dir):
    parts = []
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            parts.append(f"# {block[1]}")
        elif kind == "h2":
            parts.append(f"## {block[1]}")
        elif kind == "p":
            parts.append(block[1])
        elif kind == "table":
            parts.append(markdown_table(block[1]))
        else:  # image: a relative link, so the folder can be moved or opened offline
            caption, path = block[1], block[2]
            link = Path(os.path.relpath(Path(path).resolve(), Path(base_dir).resolve())).as_posix()
            parts.append(f"![{caption}](<{link}>)" if " " in link else f"![{caption}]({link})")
    return "\n\n".join(parts) + "\n"


STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
         "th,td{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:#eee}"
         "img{max-width:100%}figure{margin:1em 0}")


def render_html(blocks, title):
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
             f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>"]
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "table":
            parts.append(html_table(block[1]))
        else:
            caption, path = block[1], Path(block[2])
            parts.append(f"<figure><img alt=\"{html.escape(caption)}\" src=\"{_data_uri(path)}\">"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)


def _image(caption, path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"report image {str(path)!r} ({caption}) does not exist")
    return ("image", caption, path)


def _extra(item):
    """An extra image is a path (caption = file name) or a (caption, path) pair."""
    if isinstance(item, (tuple, list)):
        caption, path = item
        return _image(str(caption), path)
    return _image(Path(item).stem, item)


def regularization_path_blocks(folder):
    """The regularization path from its stage's folder (path.csv, templates.png, curves.png): each picture
    with one sentence of numbers measured from path.csv."""
    from linclass.studies.regularization_path import describe_curves, describe_templates

    folder = Path(folder)
    table = pd.read_csv(folder / "path.csv")
    losses = [loss for loss in table["loss"].unique()
              if {"l1", "l2"} <= set(table.loc[table["loss"] == loss, "regularizer"])]
    return [
        ("h2", "The regularization path: L1 against L2 as the strength grows"),
        _image("the template of one class along the path (columns: strength)", folder / "templates.png"),
        ("p", " ".join(describe_templates(table, loss) for loss in losses)),
        _image("validation accuracy, near-zero share, data loss and R(W) against the strength", folder / "curves.png"),
        ("p", describe_curves(table)),
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
    return [
        ("h2", "Training and the best model"),
        _image("training loss (data + regularization) of every model", folder / "loss_curves.png"),
        ("p", "Final data loss per model: " + ", ".join(
            f"{name} {row.final_data_loss:.3f}" for name, row in final.sort_index().iterrows()) + "."),
        _image(f"test confusion matrix of {best['model']}", folder / "confusion_matrix.png"),
        ("p", f"The best model on validation is {best['model']} (validation {best['val_accuracy']:.4f}, test "
              f"{best['test_accuracy']:.4f}). Its best class is {confusion.index[int(np.argmax(per_class))]} "
              f"({per_class.max():.1%} right), its worst {confusion.index[int(np.argmin(per_class))]} "
              f"({per_class.min():.1%}); its most frequent confusion: {confusion.index[true]} taken for "
              f"{confusion.columns[predicted]} ({off[true, predicted]} of {counts[true].sum()} test images)."),
    ]


def hyperparameter_map_blocks(maps):
    """The learning rate x strength heat maps: maps = [(sweep table CSV, its heat map PNG), ...], each
    with one sentence of numbers measured from the table."""
    from linclass.studies.hyperparameter_map import describe, map_grid

    blocks = [("h2", "The hyperparameter map: learning rate x strength")]
    for csv, png in maps:
        blocks += [_image(f"validation accuracy of the sweep {Path(csv).stem}", png),
                   ("p", describe(Path(csv).stem, *map_grid(pd.read_csv(csv).to_dict("records"))))]
    return blocks


def write_report(out_path, *, comparison_csv, templates_png, weight_hist_png, scaling_csv, scaling_pngs,
                 loss_study_csv, hard_cases_csv, hard_cases_png, evaluation_dir=None, regularization_path_dir=None,
                 hyperparameter_maps=(), extra_images=()):
    """Write report.md at out_path and its HTML twin (same name, .html) beside it; returns the .md path.

    evaluation_dir: the evaluate stage's reports/evaluation (loss curves, best model's confusion matrix;
    section left out when None); regularization_path_dir: the regularization_path stage's folder (likewise);
    hyperparameter_maps: [(sweep table CSV, heat map PNG), ...].
    """
    out_path = Path(out_path)
    if out_path.suffix != ".md":
        raise ValueError(f"report path must end in .md, got {str(out_path)!r}")
    blocks = [
        ("h1", "Linear classifiers on CIFAR-10: report"),
        ("h2", "Model comparison"),
        ("p", "Loss x regularizer combinations, as measured by the evaluate stage."),
        ("table", pd.read_csv(comparison_csv)),
        *(evaluation_blocks(evaluation_dir, pd.read_csv(comparison_csv)) if evaluation_dir is not None else []),
        ("h2", "Visual viewpoint: one template per class"),
        ("p", "Each row of W, reshaped to 32x32x3 and rescaled min-max to 0..255 per class."),
        _image("class templates per model", templates_png),
        ("h2", "Weights: L1 sparsity vs L2 spreading"),
        ("p", "Histograms of the weights; near-zero = |w| <= 1% of max|W|."),
        _image("weight histograms", weight_hist_png),
        ("h2", "Scaling W: L = 0 is not unique"),
        ("p", "The zero-hinge model with W and b multiplied by s: the hinge loss stays 0 for s >= 1, "
              "the penalties grow (L2 as s^2, L1 as s), the accuracy does not change."),
        ("table", pd.read_csv(scaling_csv)),
        *[_image(f"weight scaling: {Path(p).stem}", p) for p in scaling_pngs],
        ("h2", "The lecture's loss questions, measured"),
        ("p", "Long format: one row per measured number (question, case, loss, value)."),
        ("table", pd.read_csv(loss_study_csv)),
        ("h2", "Geometric viewpoint: hard cases"),
        ("p", "2-D problems a line cannot solve: accuracy stays near the majority rate, "
              "while the linearly separable control is near 100%."),
        ("table", pd.read_csv(hard_cases_csv)),
        _image("decision regions", hard_cases_png),
    ]
    if regularization_path_dir is not None:
        blocks += regularization_path_blocks(regularization_path_dir)
    if hyperparameter_maps:
        blocks += hyperparameter_map_blocks(hyperparameter_maps)
    extras = [_extra(item) for item in extra_images]
    if extras:
        blocks += [("h2", "More figures"), *extras]

    markdown = render_markdown(blocks, out_path.parent)
    page = render_html(blocks, title=blocks[0][1])
    html_path = out_path.with_suffix(".html")
    with atomic_file(out_path) as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    with atomic_file(html_path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out_path
