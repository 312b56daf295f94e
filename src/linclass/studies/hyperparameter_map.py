"""The hyperparameter map: validation accuracy over a learning rate x regularization strength sweep, as a
colour map (CS231n's picture of a hyperparameter search).

The rows are the sweep's table (`python -m linclass.orchestration.sweep table`, or the CSV that `make sweep`
writes to sweeps/<loss>-<regularizer>.csv): one dict per experiment with at least `learning_rate`,
`strength` and the value drawn (default `val_accuracy`, the one that selects).
"""
from __future__ import annotations

import math

import numpy as np
from matplotlib.patches import Rectangle

from linclass.plots import Figure, save_figure, set_margins

REQUIRED = ("learning_rate", "strength")


def map_grid(rows, value="val_accuracy"):
    """(learning_rates (L,), strengths (S,), values (L, S)) from the rows; both axes sorted ascending.

    A cell that no row fills, or whose row has no number (a failed experiment), is NaN. A row without a
    learning rate or strength, or two rows for the same cell, are an error (one line naming the row).
    """
    rows = list(rows)
    if not rows:
        raise ValueError("the sweep table has no rows; run `make sweep` first")
    for i, row in enumerate(rows):
        for key in REQUIRED:
            v = row.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"sweep row {i} ({row.get('experiment', '?')}): {key}={v!r} is not a number > 0")
    learning_rates = np.array(sorted({float(r["learning_rate"]) for r in rows}))
    strengths = np.array(sorted({float(r["strength"]) for r in rows}))
    values = np.full((len(learning_rates), len(strengths)), np.nan)
    filled = np.zeros(values.shape, dtype=bool)
    for row in rows:
        i = np.searchsorted(learning_rates, float(row["learning_rate"]))
        j = np.searchsorted(strengths, float(row["strength"]))
        if filled[i, j]:
            raise ValueError(f"two sweep rows for learning_rate={row['learning_rate']:g}, "
                             f"strength={row['strength']:g}; keep one table per combination")
        filled[i, j] = True
        v = row.get(value)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            values[i, j] = float(v)
    return learning_rates, strengths, values


def best_cell(learning_rates, strengths, values):
    """(learning_rate, strength, value) of the highest value (the first in row-major order on ties)."""
    if not np.isfinite(values).any():
        raise ValueError("no experiment of the sweep has a number to compare (all failed?)")
    i, j = np.unravel_index(np.nanargmax(values), values.shape)
    return float(learning_rates[i]), float(strengths[j]), float(values[i, j])


def describe(name, learning_rates, strengths, values) -> str:
    """One sentence of measured numbers for the heat map of sweep `name`."""
    lr, strength, best = best_cell(learning_rates, strengths, values)
    runs = int(np.isfinite(values).sum())
    return (f"{name}: over {runs} runs (learning rate {learning_rates[0]:g} .. {learning_rates[-1]:g}, "
            f"λ {strengths[0]:g} .. {strengths[-1]:g}) the validation accuracy ranges from "
            f"{np.nanmin(values):.4f} to {best:.4f}, the best at learning rate {lr:g} and λ={strength:g}.")


def plot_map(learning_rates, strengths, values, path, title, label="validation accuracy"):
    """Heat map: rows = learning rates (smallest at the bottom), columns = strengths; each cell annotated,
    the best one framed."""
    fig = Figure(figsize=(1.1 * len(strengths) + 2.5, 0.6 * len(learning_rates) + 1.8))
    ax = fig.subplots()
    set_margins(fig, left=0.85, right=0.25, bottom=0.6, top=0.4)   # before the colour bar takes its share
    masked = np.ma.masked_invalid(values)
    image = ax.imshow(masked, origin="lower", cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label=label)
    ax.set_xticks(range(len(strengths)), [f"{s:g}" for s in strengths])
    ax.set_yticks(range(len(learning_rates)), [f"{lr:g}" for lr in learning_rates])
    ax.set_xlabel("regularization strength λ")
    ax.set_ylabel("learning rate")
    low, high = (np.nanmin(values), np.nanmax(values)) if np.isfinite(values).any() else (0, 1)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            dark = v < low + 0.6 * (high - low)
            ax.text(j, i, f"{v:.4f}", ha="center", va="center", fontsize=8, color="white" if dark else "black")
    if np.isfinite(values).any():
        i, j = np.unravel_index(np.nanargmax(values), values.shape)
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)

