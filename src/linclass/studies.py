"""The lecture's questions about losses, measured with linclass.losses (never typed in).

weight_scaling_table: "Suppose we found W with L = 0. Is it unique? No: 2W also has L = 0."
    Scaling (W, b) by s scales every score by s. Once every margin holds (s_y - s_j >= delta), a larger
    s keeps the hinge loss at 0 while R(sW) grows (L2 as s^2, L1 as s): only regularization can choose.
loss_behaviour_table: the slide questions Q1-Q6 on the cat/car/frog scores and softmax vs SVM.
initial_loss_check: the sanity check at initialization (W ~ 0: svm C-1, softmax log C).
"""

import math

import numpy as np
import pandas as pd

from .losses import get_loss, hinge_loss, softmax_loss, squared_hinge_loss
from .model import class_scores
from .regularizers import penalty
from .sgd import train_sgd

SCALING_COLUMNS = ["model", "scale", "accuracy", "hinge_loss", "squared_hinge_loss", "softmax_loss",
                   "l1_penalty", "l2_penalty", "elasticnet_penalty"]
LOSS_STUDY_COLUMNS = ["question", "case", "loss", "value", "note"]

# The lecture's score table; rows are examples (the slide's columns), classes are cat, car, frog.
LECTURE_SCORES = np.array([
    [3.2, 5.1, -1.7],   # cat image, y = cat (0)
    [1.3, 4.9, 2.0],    # car image, y = car (1)
    [2.2, 2.5, -3.1],   # frog image, y = frog (2)
])
LECTURE_LABELS = np.array([0, 1, 2])
LECTURE_EXAMPLES = ("cat", "car", "frog")


def _mean(per_example):
    return float(np.mean(per_example, dtype=np.float64))


# ---------------------------------------------------------------- weight scaling

def weight_scaling_table(W, b, X, y, scales, model, delta=1.0, beta=0.5):
    """Losses, accuracy and penalties of (sW, sb) for each s in `scales`; one row per scale.

    W (C, D), b (C,), X (N, D), y (N,). Scores of (sW, sb) are exactly s * (X W^T + b), so the scores are
    computed once and multiplied (in float64). Penalties are R(sW) without the strength; elasticnet = beta*L2 + L1.
    Columns: model, scale, accuracy, hinge_loss, squared_hinge_loss, softmax_loss, l1_penalty,
    l2_penalty, elasticnet_penalty (losses are means over the N examples).
    """
    scales = [float(s) for s in scales]
    if not scales or not all(math.isfinite(s) and s > 0 for s in scales):
        raise ValueError(f"scales must be a non-empty list of finite numbers > 0, got {scales}")
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
            "squared_hinge_loss": _mean(squared_hinge_loss(scaled, y, delta, reduction="none")),
            "softmax_loss": _mean(softmax_loss(scaled, y, reduction="none")),
            "l1_penalty": penalty("l1", s * W, beta),
            "l2_penalty": penalty("l2", s * W, beta),
            "elasticnet_penalty": penalty("elasticnet", s * W, beta),
        })
    return pd.DataFrame(rows, columns=SCALING_COLUMNS)


def train_zero_hinge_model(X, y, n=50, seed=0, *, learning_rate=None, epochs=10, max_epochs=5120,
                           batch_size=None, delta=1.0, num_classes=None):
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
        mean_squared_norm = float(np.mean(np.einsum("nd,nd->n", X_sub, X_sub), dtype=np.float64))
        learning_rate = 0.1 * float(delta) * batch_size / max(mean_squared_norm, 1e-12)
    while True:
        result = train_sgd(X_sub, y_sub, loss="svm", regularizer="none", delta=delta,
                           learning_rate=learning_rate, batch_size=batch_size, epochs=epochs,
                           seed=seed, num_classes=num_classes)
        loss = _mean(hinge_loss(class_scores(X_sub, result.W, result.b), y_sub, delta, reduction="none"))
        if loss == 0.0:
            return result.W, result.b, X_sub, y_sub
        if epochs >= max_epochs:
            raise RuntimeError(f"hinge loss on the {n}-example subset is still {loss:.3g} after {epochs} epochs "
                               f"(max_epochs={max_epochs}); raise learning_rate or max_epochs")
        epochs = min(2 * epochs, max_epochs)


# ---------------------------------------------------------------- the lecture's questions

def _hinge_all_classes(scores, y, delta):
    """Q4's variant: sum over ALL j, including j = y_i, whose term is max(0, delta) = delta."""
    correct = scores[np.arange(scores.shape[0]), y][:, None]
    return np.maximum(0, scores - correct + delta).sum(axis=1)


def loss_behaviour_table(delta=1.0):
    """The lecture's loss questions, measured. Long format: one row per measured number.

    Columns: question, case, loss, value, note. `loss` names what was measured: "svm", "softmax",
    "squared_svm", "svm_all_classes" (sum over all j incl. y_i, Q4) or "svm_mean_classes" (mean over the
    C-1 classes j != y_i, Q5). Scores are the slide's (rows = examples cat, car, frog; y = 0, 1, 2).
    """
    rows = []

    def add(question, case, loss, value, note=""):
        rows.append({"question": question, "case": case, "loss": loss, "value": float(value), "note": note})

    def both(question, case, scores, label, note=""):
        scores, label = np.atleast_2d(np.asarray(scores, dtype=np.float64)), np.array([label])
        add(question, case, "svm", hinge_loss(scores, label, delta, reduction="none")[0], note)
        add(question, case, "softmax", softmax_loss(scores, label, reduction="none")[0], note)

    # Q1: jiggle the car scores; the car margin is already > delta, so the hinge does not move.
    car = LECTURE_SCORES[1]
    both("Q1 car scores change a bit", "car scores [1.3, 4.9, 2.0]", car, 1)
    for shift in (+0.5, -0.5):
        jiggled = car + np.array([0.0, shift, 0.0])
        both("Q1 car scores change a bit", f"car score {shift:+.1f}", jiggled, 1,
             "hinge stays 0 while every margin holds; softmax always moves")
    both("W vs 2W", "car scores of 2W", 2 * car, 1, "L = 0 is not unique: 2W also gives 0")

    # Q2: min 0 (huge correct margin), max unbounded (huge wrong margin).
    for margin in (1e3, 1e6):
        both("Q2 min/max loss", f"correct class ahead by {margin:g}", [margin, 0.0, 0.0], 0, "min: 0")
        both("Q2 min/max loss", f"correct class behind by {margin:g}", [-margin, 0.0, 0.0], 0,
             "max: grows without bound")

    # Q3: W ~ 0 so all scores ~ 0: svm = (C-1) delta, softmax = log C.
    for C in (3, 10):
        both("Q3 loss at W = 0", f"C = {C}, all scores 0", np.zeros(C), 0, f"svm C-1 = {C - 1}, softmax log C")

    # Q4, Q5, Q6 on the three examples; the last row of each is the mean over the examples.
    C = LECTURE_SCORES.shape[1]
    per_loss = {
        "svm": hinge_loss(LECTURE_SCORES, LECTURE_LABELS, delta, reduction="none"),
        "svm_all_classes": _hinge_all_classes(LECTURE_SCORES, LECTURE_LABELS, delta),
        "svm_mean_classes": hinge_loss(LECTURE_SCORES, LECTURE_LABELS, delta, reduction="none") / (C - 1),
        "squared_svm": squared_hinge_loss(LECTURE_SCORES, LECTURE_LABELS, delta, reduction="none"),
    }
    questions = {
        "svm": ("Q4 sum over all classes", "reference: sum over j != y_i"),
        "svm_all_classes": ("Q4 sum over all classes", "adds max(0, delta) = delta to every example"),
        "svm_mean_classes": ("Q5 mean instead of sum", "divided by C-1: same minimiser"),
        "squared_svm": ("Q6 squared hinge", "squares punish large violations more: a different loss"),
    }
    for loss, per_example in per_loss.items():
        question, note = questions[loss]
        for name, value in zip(LECTURE_EXAMPLES, per_example):
            add(question, name, loss, value, note)
        add(question, "mean over examples", loss, _mean(per_example), note)

    # Softmax vs SVM: three score vectors with y = 0, all with the hinge satisfied.
    for scores in ([10, -2, 3], [10, 9, 9], [10, -100, -100]):
        both("softmax vs svm", f"scores {scores}, y = 0", scores, 0,
             "hinge is 0 once margins hold; softmax stays > 0 and keeps pushing")
    return pd.DataFrame(rows, columns=LOSS_STUDY_COLUMNS)


def initial_loss_check(loss_name, observed, num_classes, tolerance=0.10, delta=1.0):
    """Is the loss at initialization (W ~ 0, all scores ~ 0) what the maths says?

    Expected: svm (C-1) delta; squared_svm (C-1) delta^2 (each margin max(0, 0 + delta)^2); softmax log C.
    Returns dict(expected, observed, relative_error = |observed - expected| / expected, ok = rel <= tolerance).
    """
    get_loss(loss_name)  # unknown name -> ValueError listing the known ones
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    delta = float(delta)
    expected = {"svm": (num_classes - 1) * delta, "squared_svm": (num_classes - 1) * delta ** 2,
                "softmax": math.log(num_classes)}[loss_name]
    observed = float(observed)
    relative_error = abs(observed - expected) / expected
    return {"expected": expected, "observed": observed, "relative_error": relative_error,
            "ok": bool(relative_error <= tolerance)}
