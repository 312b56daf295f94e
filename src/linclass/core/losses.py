"""Data losses on class scores: multiclass SVM (hinge), squared hinge, softmax cross-entropy.

Every loss has the signature loss(scores, y, delta=DELTA, reduction="mean", *, validate=True), DELTA = 1.0:
    scores (N, C) float, y (N,) int labels in [0, C)
    reduction="mean" -> (value, dscores): value = mean_i L_i (python float),
                        dscores = d(value)/d(scores), shape (N, C), dtype of scores
    reduction="none" -> per-example losses L_i, shape (N,), dtype of scores
    validate=False skips the checks of the shapes and labels: for a caller that checked them once
    (SGD checks y up front, then calls the loss on thousands of its minibatches).
All maths is vectorized over examples and classes; float32 scores stay float32.
"""

import numpy as np

from linclass.core.metrics import check_labels
from linclass.settings import LOSS_NAMES, SvmLoss, default

DELTA = default(SvmLoss, "delta")  # the margin, as params.yaml has it by default

REDUCTIONS = ("mean", "none")


def _check(scores, y, reduction):
    """Raise a one-line ValueError unless scores is (N, C) and y is (N,) integer labels in [0, C)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (N, C), got shape {scores.shape}")
    N, C = scores.shape
    if y.shape != (N,):
        raise ValueError(f"y must have shape (N,) = ({N},) to match scores {scores.shape}, got {y.shape}")
    check_labels(y, C)


def _margins(scores, y, delta):
    """margins[i, j] = max(0, s_j - s_{y_i} + delta) for j != y_i and 0 for j = y_i; shape (N, C)."""
    rows = np.arange(scores.shape[0])
    correct = scores[rows, y][:, None]
    margins = np.maximum(0, scores - correct + delta)
    margins[rows, y] = 0
    return margins


def hinge_loss(scores, y, delta=DELTA, reduction="mean", *, validate=True):
    """Multiclass SVM: L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + delta)."""
    if validate:
        _check(scores, y, reduction)
    delta = float(delta)  # a python float never upcasts float32 scores
    margins = _margins(scores, y, delta)
    per_example = margins.sum(axis=1)
    if reduction == "none":
        return per_example
    N = scores.shape[0]
    # d L_i / d s_j = 1[margin_j > 0] for j != y_i; d L_i / d s_{y_i} = -(number of positive margins)
    dscores = (margins > 0).astype(scores.dtype)
    dscores[np.arange(N), y] = -dscores.sum(axis=1)
    dscores /= N
    return float(per_example.mean(dtype=np.float64)), dscores


def squared_hinge_loss(scores, y, delta=DELTA, reduction="mean", *, validate=True):
    """Squared hinge (the lecture's Q6): L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + delta)^2."""
    if validate:
        _check(scores, y, reduction)
    delta = float(delta)
    margins = _margins(scores, y, delta)
    per_example = (margins * margins).sum(axis=1)
    if reduction == "none":
        return per_example
    N = scores.shape[0]
    # d L_i / d s_j = 2 margin_j for j != y_i; d L_i / d s_{y_i} = -sum_j 2 margin_j
    dscores = 2 * margins
    dscores[np.arange(N), y] = -dscores.sum(axis=1)
    dscores /= N
    return float(per_example.mean(dtype=np.float64)), dscores


def softmax_probabilities(scores):
    """Softmax over classes (N, C); stable: subtracting the row max leaves the result unchanged."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def softmax_loss(scores, y, delta=DELTA, reduction="mean", *, validate=True):
    """Softmax cross-entropy: L_i = -log(e^{s_{y_i}} / sum_j e^{s_j}) = logsumexp(s) - s_{y_i} (natural log).

    Computed with the log-sum-exp trick (subtract the row max), so scores like 1000 / -1000 give finite
    values and gradients. `delta` is accepted (so all losses share one signature) and ignored.
    """
    if validate:
        _check(scores, y, reduction)
    N = scores.shape[0]
    rows = np.arange(N)
    top = scores.argmax(axis=1)
    shifted = scores - scores[rows, top][:, None]  # max of each row is 0 -> exp never overflows
    exp = np.exp(shifted)
    exp[rows, top] = 0  # sum_j e^{shifted_j} = 1 + rest: log1p(rest) keeps a tiny loss tiny, not 0
    log_sum_exp = np.log1p(exp.sum(axis=1))
    per_example = log_sum_exp - shifted[rows, y]
    if reduction == "none":
        return per_example
    # d L_i / d s_j = p_j - 1[j = y_i]
    dscores = np.exp(shifted - log_sum_exp[:, None])
    dscores[rows, y] -= 1
    dscores /= N
    return float(per_example.mean(dtype=np.float64)), dscores


LOSSES = dict(zip(LOSS_NAMES, (hinge_loss, squared_hinge_loss, softmax_loss)))


def get_loss(name):
    """The loss function called `name`: one of "svm", "squared_svm", "softmax"."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(LOSSES)}")
    return LOSSES[name]
