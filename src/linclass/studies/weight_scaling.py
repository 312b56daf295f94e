"""W vs 2W, measured: "Suppose we found W with L = 0. Is it unique? No: 2W also has L = 0."

Scaling (W, b) by s scales every score by s. Once every margin holds (s_y - s_j >= delta), a larger
s keeps the hinge loss at 0 while R(sW) grows (L2 as s^2, L1 as s): only regularization can choose.
"""


import numpy as np
import pandas as pd

from linclass.core.losses import DELTA, hinge_loss, softmax_loss, squared_hinge_loss
from linclass.core.model import class_scores
from linclass.core.pixels import Pixels
from linclass.core.regularizers import BETA, penalty
from linclass.core.sgd import train_sgd
from linclass.settings import Studies, check

SCALING_COLUMNS = ["model", "scale", "accuracy", "hinge_loss", "squared_hinge_loss", "softmax_loss",
                   "l1_penalty", "l2_penalty", "elasticnet_penalty"]


def _mean(per_example):
    return float(np.mean(per_example, dtype=np.float64))



def weight_scaling_table(W, b, X, y, scales, model, delta=DELTA, squared_delta=DELTA, beta=BETA):
    """Losses, accuracy and penalties of (sW, sb) for each s in `scales`; one row per scale.

    W (C, D), b (C,), X (N, D), y (N,). Scores of (sW, sb) are exactly s * (X W^T + b), so the scores are
    computed once and multiplied (in float64). The hinge loss has margin delta, the squared hinge squared_delta.
    Penalties are R(sW) without the strength; elasticnet = beta*L2 + L1.
    Columns: model, scale, accuracy, hinge_loss, squared_hinge_loss, softmax_loss, l1_penalty,
    l2_penalty, elasticnet_penalty (losses are means over the N examples).
    """
    check(Studies, scales=list(scales))
    scales = [float(s) for s in scales]
    y = np.asarray(y)
    # Only the small (N, C) score table goes to float64 (X and W stay as they are): at large s the softmax
    # loss is tiny and float32 would round it to 0 long before float64 does.
    scores = class_scores(X, W, b).astype(np.float64)
    rows = []
    for s in scales:
        scaled = s * scores
        rows.append({
            "model": str(model),
            "scale": s,
            "accuracy": float(np.mean(np.argmax(scaled, axis=1) == y)),
            "hinge_loss": _mean(hinge_loss(scaled, y, delta, reduction="none")),
            "squared_hinge_loss": _mean(squared_hinge_loss(scaled, y, squared_delta, reduction="none")),
            "softmax_loss": _mean(softmax_loss(scaled, y, reduction="none")),
            "l1_penalty": penalty("l1", s * W, beta),
            "l2_penalty": penalty("l2", s * W, beta),
            "elasticnet_penalty": penalty("elasticnet", s * W, beta),
        })
    return pd.DataFrame(rows, columns=SCALING_COLUMNS)


def train_zero_hinge_model(X, y, n=50, seed=0, *, learning_rate=None, epochs=10, max_epochs=5120,
                           batch_size=None, delta=DELTA, num_classes=None):
    """The lecture's "W with L = 0": an SVM without regularization trained on a small subset until the
    hinge loss on that subset is exactly 0. Returns (W (C, D), b (C,), X_sub (n, D), y_sub (n,)).

    The subset is the first n rows of np.random.default_rng(seed).permutation(N). Training is repeated
    with twice the epochs (same seed, so the run continues the previous one) until the loss is 0; with
    n << D the subset is linearly separable. Raises RuntimeError if max_epochs is not enough.
    batch_size defaults to n (full batch). learning_rate defaults to 0.1 * delta * batch_size / mean ||x||^2:
    one step then moves an example's scores by about 0.1 delta whatever the pixel scale, so training stops
    just past the margins (a W that only just reaches L = 0, which is what the scaling study needs).
    """
    N = X.shape[0]
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= N:
        raise ValueError(f"n must be an integer in [1, N={N}], got {n!r}")
    y = np.asarray(y)
    if num_classes is None:
        num_classes = int(y.max()) + 1  # from all of y: the subset may miss a class
    subset = np.random.default_rng(seed).permutation(N)[:n]
    X_sub, y_sub = X[subset], y[subset]
    batch_size = n if batch_size is None else batch_size
    if learning_rate is None:
        rows = X_sub.to_float() if isinstance(X_sub, Pixels) else X_sub  # n rows: small
        mean_squared_norm = float(np.mean(np.einsum("nd,nd->n", rows, rows), dtype=np.float64))
        learning_rate = 0.1 * float(delta) * batch_size / max(mean_squared_norm, 1e-12)
    while True:
        result = train_sgd(X_sub, y_sub, loss="svm", regularizer="none", delta=delta,
                           learning_rate=learning_rate, lr_decay=1.0, batch_size=batch_size, epochs=epochs,
                           seed=seed, num_classes=num_classes)
        loss = _mean(hinge_loss(class_scores(X_sub, result.W, result.b), y_sub, delta, reduction="none"))
        if loss == 0.0:
            return result.W, result.b, X_sub, y_sub
        if epochs >= max_epochs:
            raise RuntimeError(f"hinge loss on the {n}-example subset is still {loss:.3g} after {epochs} epochs "
                               f"(max_epochs={max_epochs}); raise learning_rate or max_epochs")
        epochs = min(2 * epochs, max_epochs)
