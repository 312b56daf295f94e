"""The regularization path: the same model trained along a log grid of strengths lambda, to see what
the penalty does to W (the lecture's L = data loss + lambda R(W)).

At each point (loss, regularizer, lambda): validation accuracy, the data loss and R(W) (without lambda)
of the final W on the training rows it saw, the share of near-zero weights (|w| <= tol max|W|) and W
itself (its rows are the class templates). Every point is its own SGD run from the same seed (no warm
start), i.e. exactly the model the train stage would fit with that lambda on that data.

The path runs on a prefix of the training split (the split is a seeded permutation, so a prefix is a
random subset) and for few epochs: it is a picture of a trend, not a model to keep.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from linclass.core.losses import DELTA, get_loss
from linclass.core.metrics import accuracy
from linclass.core.model import class_scores, predict
from linclass.core.regularizers import BETA, penalty
from linclass.core.sgd import train_sgd
from linclass.plots import Figure, save_figure, set_margins, template_images, weight_sparsity
from linclass.settings import RegularizationPath, Studies, check, default

COLUMNS = ("loss", "regularizer", "strength", "val_accuracy", "train_accuracy", "data_loss", "penalty",
           "near_zero")
PER_EPOCH_ACCURACY_SAMPLE = 100  # rows scored after each epoch but the last (which scores all of X)


@dataclass
class PathPoint:
    loss: str
    regularizer: str
    strength: float
    W: np.ndarray            # (C, D)
    b: np.ndarray            # (C,)
    val_accuracy: float
    train_accuracy: float
    data_loss: float         # mean data loss of (W, b) on the training rows
    penalty: float           # R(W), without the strength
    near_zero: float         # share of |w| <= near_zero_tol * max|W|


def path_point(X, y, X_val, y_val, *, loss, regularizer, strength, learning_rate, delta=DELTA, beta=BETA,
               near_zero_tol=default(Studies, "near_zero_tol"), num_classes=None, **sgd) -> PathPoint:
    """Train on X (N, D), y (N,) with this strength; measure the point. `sgd`: epochs, batch_size, lr_decay,
    seed, init_scale (passed to train_sgd)."""
    # The path reads only the final weights: the per-epoch train accuracy (its one use of the sample) is
    # scored on a few rows, the final one on all rows, as always. The weights do not depend on the sample.
    result = train_sgd(X, y, loss=loss, regularizer=regularizer, strength=strength, beta=beta, delta=delta,
                       learning_rate=learning_rate, num_classes=num_classes,
                       train_accuracy_sample=PER_EPOCH_ACCURACY_SAMPLE, **sgd)
    W, b = result.W, result.b
    data_loss, _ = get_loss(loss)(class_scores(X, W, b), y, delta=delta)
    return PathPoint(loss, regularizer, float(strength), W, b,
                     val_accuracy=accuracy(y_val, predict(X_val, W, b)),
                     train_accuracy=float(result.history.train_accuracy[-1]),  # on all rows of X
                     data_loss=float(data_loss), penalty=penalty(regularizer, W, beta),
                     near_zero=weight_sparsity(W, near_zero_tol))


def regularization_path(X, y, X_val, y_val, *, losses, regularizers, strengths,
                        near_zero_tol=default(Studies, "near_zero_tol"), beta=BETA, num_classes=None,
                        **sgd) -> list[PathPoint]:
    """Every loss x regularizer x strength, in that order.

    losses: {name: {"learning_rate": ..., "delta": ...}} (each loss at its own settings);
    sgd: epochs, batch_size, lr_decay, seed, init_scale.
    """
    check(RegularizationPath, strengths=list(strengths))
    strengths = [float(s) for s in strengths]
    points = []
    for loss, settings in losses.items():
        for regularizer in regularizers:
            for strength in strengths:
                points.append(path_point(X, y, X_val, y_val, loss=loss, regularizer=regularizer,
                                         strength=strength, learning_rate=settings["learning_rate"],
                                         delta=settings.get("delta", 1.0), beta=beta,
                                         near_zero_tol=near_zero_tol, num_classes=num_classes, **sgd))
    return points


def path_table(points) -> pd.DataFrame:
    """One row per point, columns COLUMNS."""
    return pd.DataFrame([{column: getattr(point, column) for column in COLUMNS} for point in points],
                        columns=list(COLUMNS))


def template_strip(points, loss, regularizer, class_index) -> tuple[list[float], np.ndarray]:
    """(strengths, templates (S, D)): row class_index of W at each strength of one loss-regularizer path."""
    chosen = [p for p in points if p.loss == loss and p.regularizer == regularizer]
    if not chosen:
        raise ValueError(f"no path points for {loss}-{regularizer}")
    return [p.strength for p in chosen], np.stack([p.W[class_index] for p in chosen])


def path_summary(table) -> dict:
    """Per '<loss>-<regularizer>': the best validation accuracy and its strength, and the validation
    accuracy, near-zero share and R(W) at the weakest and the strongest strength of the grid."""
    summary = {}
    for (loss, regularizer), rows in table.groupby(["loss", "regularizer"], sort=False):
        rows = rows.sort_values("strength")
        best = rows.loc[rows["val_accuracy"].idxmax()]
        first, last = rows.iloc[0], rows.iloc[-1]
        summary[f"{loss}-{regularizer}"] = {
            "best_strength": float(best["strength"]), "best_val_accuracy": float(best["val_accuracy"]),
            **{f"{column}_at_{end}": float(row[column]) for end, row in (("weakest", first), ("strongest", last))
               for column in ("strength", "val_accuracy", "near_zero", "penalty")}}
    return summary


def _ends(table, loss, regularizer):
    rows = table[(table["loss"] == loss) & (table["regularizer"] == regularizer)].sort_values("strength")
    if rows.empty:
        raise ValueError(f"the path table has no rows for {loss}-{regularizer}")
    return rows.iloc[0], rows.iloc[-1]


def describe_templates(table, loss) -> str:
    """One sentence of measured numbers for the L1 vs L2 template strip of `loss`."""
    (l1_lo, l1_hi), (l2_lo, l2_hi) = _ends(table, loss, "l1"), _ends(table, loss, "l2")
    l1 = table[(table["loss"] == loss) & (table["regularizer"] == "l1")].sort_values("strength")
    half = l1[l1["near_zero"] >= 0.5]
    half = f", half of it from λ={half['strength'].iloc[0]:g}" if len(half) else ""
    return (
        f"{loss}: from λ={l1_lo['strength']:g} to λ={l1_hi['strength']:g} the near-zero share of W goes "
        f"from {l1_lo['near_zero']:.0%} to {l1_hi['near_zero']:.0%} with L1{half} (sum |W| "
        f"{l1_lo['penalty']:.4g} -> {l1_hi['penalty']:.4g}), and from {l2_lo['near_zero']:.0%} to "
        f"{l2_hi['near_zero']:.0%} with L2, whose sum W^2 falls from {l2_lo['penalty']:.4g} to {l2_hi['penalty']:.4g}."
    )


def describe_curves(table) -> str:
    """One sentence of measured numbers for the curves: each path's best validation accuracy and its
    accuracy at the strongest strength."""
    summary = path_summary(table)
    best = "; ".join(f"{name} {cells['best_val_accuracy']:.4f} at λ={cells['best_strength']:g}"
                     for name, cells in summary.items())
    strongest = ", ".join(f"{name} {cells['val_accuracy_at_strongest']:.4f}" for name, cells in summary.items())
    top = max(table["strength"])
    return f"Best validation accuracy: {best}; at λ={top:g}: {strongest}."


# ---------------------------------------------------------------- pictures

def plot_template_strips(strips, class_name, path):
    """Rows = paths (e.g. {"softmax-l1": (strengths, templates (S, D)), "softmax-l2": ...}), columns = strengths.

    Every template is rescaled min-max on its own (plots.template_images), like the templates figure.
    """
    if not strips:
        raise ValueError("strips must hold at least one {name: (strengths, templates)} entry, got none")
    rows = {name: (strengths, template_images(templates)) for name, (strengths, templates) in strips.items()}
    templates_of = {name: templates for name, (_, templates) in strips.items()}
    S = max(len(strengths) for strengths, _ in rows.values())
    fig = Figure(figsize=(1.3 * S + 1.2, 1.5 * len(rows) + 0.5))
    axes = np.array(fig.subplots(len(rows), S, squeeze=False))
    for axes_row, (name, (strengths, images)) in zip(axes, rows.items()):
        for ax in axes_row:
            ax.set_xticks([])
            ax.set_yticks([])
        for ax, strength, image, template in zip(axes_row, strengths, images, templates_of[name]):
            ax.imshow(image, interpolation="nearest")
            ax.set_title(f"λ={strength:g}", fontsize=9)
            if not np.any(template):
                ax.text(16, 16, "W = 0", ha="center", va="center", color="white", fontsize=9)
        axes_row[0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=10)
    fig.suptitle(f"template of '{class_name}' along the regularization path")
    set_margins(fig, left=1.4, right=0.1, bottom=0.1, top=0.6, wspace=0.1, hspace=0.35)
    return save_figure(fig, path)


CURVES = (("val_accuracy", "validation accuracy", "linear"), ("near_zero", "near-zero share of W", "linear"),
          ("data_loss", "data loss (training rows)", "linear"), ("penalty", "R(W) (without λ)", "symlog"))
# colour = regularizer, line = loss; elastic net thinner and crossed, as it often lies on L1
STYLES = {"l1": dict(color="tab:red", marker="o", linewidth=2.5),
          "l2": dict(color="tab:blue", marker="o", linewidth=2.5),
          "elasticnet": dict(color="tab:green", marker="x", linewidth=1.2)}


def plot_path_curves(table, path):
    """2 x 2 panels against λ (log axis): validation accuracy, near-zero share, data loss, R(W) (symlog:
    an all-zero W is 0); one line per loss-regularizer path of `table` (path_table's columns)."""
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"the path table lacks columns {missing}; it has {list(table.columns)}")
    fig = Figure(figsize=(11, 7.5))
    axes = np.array(fig.subplots(2, 2)).ravel()
    losses = list(table["loss"].unique())
    for ax, (column, label, yscale) in zip(axes, CURVES):
        for (loss, regularizer), rows in table.groupby(["loss", "regularizer"], sort=False):
            ax.plot(rows["strength"], rows[column], ["-", "--", ":"][losses.index(loss) % 3], markersize=4,
                    label=f"{loss}-{regularizer}", **STYLES.get(regularizer, {}))
        ax.set_xscale("log")
        if yscale == "symlog":
            ax.set_yscale("symlog", linthresh=1e-2)
            ax.set_ylim(bottom=0)
        else:
            ax.set_yscale(yscale)
        ax.set_xlabel("strength λ")
        ax.set_title(label, fontsize=10)
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()   # one legend for the four panels, below them
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
    fig.suptitle("the regularization path")
    set_margins(fig, left=0.75, right=0.2, bottom=0.55 + 0.2 * (1 + (len(labels) - 1) // 6), top=0.65, wspace=0.2,
                hspace=0.35)   # the legend's rows below
    return save_figure(fig, path)
