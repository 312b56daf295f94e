"""The geometric viewpoint: a linear classifier cuts the plane with hyperplanes (lines in 2-D), so some
2-D problems are out of its reach. Labels: 1 = the lecture's "class 1", 0 = its "class 2".

    quadrants    class 1 = first and third quadrants (x0 * x1 > 0); class 2 = second and fourth
    ring         class 1 = 1 <= ||x||_2 <= 2; class 2 = everything else
    three_modes  class 1 = three gaussian blobs; class 2 = uniform everywhere else (away from the blobs)
    separable    the control: class 1 on one side of a line, with a margin, so a line can get ~100%

Points are uniform in [-3, 3]^2 unless noted (blob points and the margin shift of "separable" may
step slightly outside). On the control a line is near perfect. On ring and three_modes no line beats
always predicting the majority class. On quadrants a line CAN beat the majority (~1/2) a little, by
cutting off a corner: the best half-plane x0 + x1 > 2 holds 9 - 2 of Q1 area and 2 * 1/2 of Q2/Q4 area
(of 36), so the best accuracy is 1/2 + 6/36 = 2/3 (QUADRANTS_BEST_LINE); far from solved either way.
"""

from typing import NamedTuple

import numpy as np
import pandas as pd

from linclass.core.metrics import accuracy
from linclass.core.model import class_scores, predict
from linclass.core.sgd import train_sgd

HARD_CASES = ("separable", "quadrants", "ring", "three_modes")
BOX = 3.0
MODE_CENTERS = 1.8 * np.array([[np.cos(a), np.sin(a)] for a in np.deg2rad([90.0, 210.0, 330.0])])
MODE_STD = 0.3
MODE_EXCLUSION = 1.0     # background points of three_modes stay this far from every center
MODE_FRACTION = 1 / 3    # share of class-1 (blob) points in three_modes
SEPARABLE_NORMAL = np.array([1.0, 0.5]) / np.hypot(1.0, 0.5)
SEPARABLE_OFFSET = 0.3
SEPARABLE_MARGIN = 0.25
QUADRANTS_BEST_LINE = 2 / 3  # best accuracy of any line on quadrants (uniform on the box), see above


def _uniform(rng, n):
    return rng.uniform(-BOX, BOX, size=(n, 2))


def _three_modes(rng, n):
    n1 = int(round(MODE_FRACTION * n))
    n0 = n - n1
    mode = np.arange(n1) % len(MODE_CENTERS)
    blobs = MODE_CENTERS[mode] + MODE_STD * rng.standard_normal((n1, 2))
    background = np.empty((0, 2))
    while len(background) < n0:  # rejection sampling, a few rounds at most
        candidates = _uniform(rng, 2 * n0)
        distance = np.linalg.norm(candidates[:, None, :] - MODE_CENTERS[None], axis=2).min(axis=1)
        background = np.concatenate([background, candidates[distance > MODE_EXCLUSION]])
    X = np.concatenate([blobs, background[:n0]])
    y = np.concatenate([np.ones(n1, np.int64), np.zeros(n0, np.int64)])
    order = rng.permutation(n)
    return X[order].astype(np.float32), y[order]


def make_hard_case(name, n=1000, seed=0):
    """X float32 (n, 2), y int64 (n,) for the case `name` (see the module docstring); deterministic in seed."""
    if name not in HARD_CASES:
        raise ValueError(f"unknown hard case {name!r}; known cases: {', '.join(HARD_CASES)}")
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    rng = np.random.default_rng(seed)
    if name == "three_modes":
        return _three_modes(rng, n)
    X = _uniform(rng, n)
    if name == "separable":
        side = np.where(X @ SEPARABLE_NORMAL > SEPARABLE_OFFSET, 1.0, -1.0)
        X = X + SEPARABLE_MARGIN * side[:, None] * SEPARABLE_NORMAL  # push away from the line: a clear margin
    X = X.astype(np.float32)
    # labels from the float32 points we return, so the definitions hold exactly on them
    if name == "quadrants":
        y = X[:, 0] * X[:, 1] > 0
    elif name == "ring":
        norm = np.linalg.norm(X, axis=1)
        y = (norm >= 1) & (norm <= 2)
    else:  # separable
        y = X @ SEPARABLE_NORMAL.astype(np.float32) > SEPARABLE_OFFSET
    return X, y.astype(np.int64)


class HardCaseFit(NamedTuple):
    X: np.ndarray   # (n, 2) float32
    y: np.ndarray   # (n,) int64
    W: np.ndarray   # (2, 2)
    b: np.ndarray   # (2,)
    accuracy: float


def fit_hard_cases(losses=("svm", "softmax"), n=1000, seed=0, epochs=30, learning_rate=0.05, batch_size=50,
                   datasets=HARD_CASES):
    """Train each loss on each case with train_sgd (no regularization, 2 classes, float32).

    Returns (table, models): table has columns dataset, loss, accuracy (on the training points: even there
    a line cannot do better), majority_rate (accuracy of always predicting the larger class);
    models[(dataset, loss)] = HardCaseFit(X, y, W, b, accuracy).
    """
    rows, models = [], {}
    for dataset in datasets:
        X, y = make_hard_case(dataset, n=n, seed=seed)
        majority_rate = float(max(y.mean(), 1 - y.mean()))
        for loss in losses:
            result = train_sgd(X, y, loss=loss, regularizer="none", learning_rate=learning_rate, lr_decay=1.0,
                               batch_size=min(batch_size, n), epochs=epochs, seed=seed, num_classes=2)
            acc = accuracy(y, predict(X, result.W, result.b))
            models[(dataset, loss)] = HardCaseFit(X, y, result.W, result.b, acc)
            rows.append({"dataset": dataset, "loss": loss, "accuracy": acc, "majority_rate": majority_rate})
    return pd.DataFrame(rows, columns=["dataset", "loss", "accuracy", "majority_rate"]), models


def plot_decision_regions(results, path, resolution=200):
    """Grid of panels (rows = datasets, columns = losses): predicted class over a mesh, the points on top.

    `results` is what fit_hard_cases returns: (table, models).
    """
    from matplotlib.colors import ListedColormap

    from linclass.plots import Figure, save_figure, set_margins  # pictures selects the Agg backend

    _, models = results
    if not models:
        raise ValueError("results hold no fitted models")
    datasets = list(dict.fromkeys(dataset for dataset, _ in models))
    losses = list(dict.fromkeys(loss for _, loss in models))
    grid = np.linspace(-BOX - 0.5, BOX + 0.5, resolution, dtype=np.float32)
    gx, gy = np.meshgrid(grid, grid)
    mesh = np.column_stack([gx.ravel(), gy.ravel()])
    colors = ListedColormap(["tab:orange", "tab:blue"])  # 0 = class 2, 1 = class 1
    fig = Figure(figsize=(3.2 * len(losses), 3.0 * len(datasets)))
    axes = np.array(fig.subplots(len(datasets), len(losses), squeeze=False))
    for (r, dataset), (c, loss) in ((rc, lc) for rc in enumerate(datasets) for lc in enumerate(losses)):
        ax = axes[r, c]
        fit = models.get((dataset, loss))
        if fit is None:
            ax.set_axis_off()
            continue
        predicted = np.argmax(class_scores(mesh, fit.W, fit.b), axis=1).reshape(gx.shape)
        ax.contourf(gx, gy, predicted, levels=[-0.5, 0.5, 1.5], cmap=colors, alpha=0.3)
        ax.scatter(fit.X[:, 0], fit.X[:, 1], c=fit.y, cmap=colors, vmin=0, vmax=1, s=4)
        ax.set_title(f"{dataset} / {loss}: acc {fit.accuracy:.2f}", fontsize=10)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("linear decision regions (blue = class 1, orange = class 2)")
    set_margins(fig, left=0.1, right=0.1, bottom=0.1, top=0.8, wspace=0.1, hspace=0.3)
    return save_figure(fig, path)
