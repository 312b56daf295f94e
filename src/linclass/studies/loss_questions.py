"""The lecture's questions about losses, measured with linclass.core.losses (never typed in).

loss_behaviour_table: the slide questions Q1-Q6 on the cat/car/frog scores and softmax vs SVM.
initial_loss, initial_loss_check: the sanity check at initialization (W ~ 0: svm C-1, softmax log C).
"""

import math

import numpy as np
import pandas as pd

from linclass.core.losses import DELTA, get_loss, hinge_loss, softmax_loss, squared_hinge_loss
from linclass.core.model import class_scores, init_weights
from linclass.settings import Studies, default

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


def _hinge_all_classes(scores, y, delta):
    """Q4's variant: sum over ALL j, including j = y_i, whose term is max(0, delta) = delta."""
    correct = scores[np.arange(scores.shape[0]), y][:, None]
    return np.maximum(0, scores - correct + delta).sum(axis=1)


def loss_behaviour_table(delta=DELTA):
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


def initial_loss_check(loss_name, observed, num_classes, tolerance=default(Studies, "initial_loss_tolerance"),
                       delta=DELTA):
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


def initial_loss(X, y, loss_name, num_classes, *, seed, init_scale, delta=DELTA, sample=5000):
    """Data loss at the small random W that training starts from (the same draw as train_sgd's),
    on the first `sample` rows of X (N, D), y (N,)."""
    W, b = init_weights(num_classes, X.shape[1], np.random.default_rng(seed), scale=init_scale, dtype=X.dtype)
    value, _ = get_loss(loss_name)(class_scores(X[:sample], W, b), y[:sample], delta=delta)
    return value
