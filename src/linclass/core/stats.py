"""How sure an accuracy is, and whether one model is really better than another on the same images.

Wilson score interval for an accuracy p = k / n (k correct of n), at confidence `level`:
    z      = the (1 + level) / 2 quantile of N(0, 1)            (1.96 for 95%)
    centre = (p + z^2 / (2n)) / (1 + z^2 / n)
    half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))
    [low, high] = [centre - half, centre + half]                 (always inside [0, 1])
It is the set of accuracies q that a z-test with the standard error of q itself, |p - q| <=
z sqrt(q (1 - q) / n), does not reject. Unlike the textbook p +- z sqrt(p (1 - p) / n) it keeps its
coverage near 0 and 1 and for small n. Near p = 0.42: +-0.031 on 1,000 images, +-0.0097 on 10,000.

McNemar's test, for two models A and B that predicted the same n images:
    b = images only A got right,  c = images only B got right
(images both got right or both got wrong say nothing about which is better). If A and B are equally
good, each of the b + c images where they disagree is A's with probability 1/2, so b ~ Binomial(b + c, 1/2):
    exact p-value = min(1, 2 * P(X <= min(b, c)))                 X ~ Binomial(b + c, 1/2)
                  = min(1, 2 * sum_{i=0}^{min(b, c)} C(b + c, i) / 2^(b + c))
    mid-p         = min(1, 2 * P(X < min(b, c)) + P(X = min(b, c)))
The exact p-value is the one to report and decide with (verdict): it never calls a difference real
more often than alpha says, which is the point of "better" vs "within noise". The mid-p (half the
probability of the observed count) is less conservative for small b + c; at the b + c of thousands
that two CIFAR-10 models disagree on, the two differ by P(X = min(b, c)), far below any alpha.
The sums are exact integer arithmetic (Python ints), rounded once to a float.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from pydantic import Field

from linclass.settings import Section, check, is_int


class Confidence(Section):
    """What a confidence level and a significance level allow: strictly between 0 and 1."""
    level: float = Field(0.95, gt=0, lt=1, description="confidence level of an interval")
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level of a test")


def z_value(level: float = 0.95) -> float:
    """z with P(-z <= Z <= z) = level for Z ~ N(0, 1) (1.959964 for 0.95)."""
    check(Confidence, level=level)
    return NormalDist().inv_cdf((1.0 + float(level)) / 2.0)


def _counts(name: str, values) -> np.ndarray:
    """values as an int64 array, or a one-line ValueError naming the first that is not a whole number >= 0."""
    array = np.asarray(values)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be whole numbers >= 0, got dtype {array.dtype}")
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(array) & (array == np.round(array)) & (array >= 0))
    if np.any(bad):
        raise ValueError(f"{name} must be whole numbers >= 0, got {array[bad].flat[0].item()!r}")
    return array.astype(np.int64)


def wilson_interval(correct, total, level: float = 0.95):
    """(low, high) of the Wilson score interval of the accuracy correct / total at confidence `level`.

    Vectorised: correct and total broadcast against each other (arrays in, arrays out; scalars in,
    floats out). total must be >= 1 and 0 <= correct <= total.
    """
    z = z_value(level)
    k, n = _counts("correct", correct), _counts("total", total)
    try:
        k, n = np.broadcast_arrays(k, n)
    except ValueError:
        raise ValueError(f"correct and total must have broadcastable shapes, got {k.shape} and {n.shape}") from None
    if np.any(n == 0):
        raise ValueError("total must be >= 1: no accuracy (and no interval) on 0 images")
    if np.any(k > n):
        first = np.argmax(k > n)
        raise ValueError(f"correct must be <= total, got correct={k.flat[first]} for total={n.flat[first]}")
    p, n = k / n, n.astype(np.float64)
    shrink = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / shrink
    half = z / shrink * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at k = 0 (k = n) the low (high) end is exactly 0 (1); rounding would leave it at +-1e-17
    low, high = np.where(k == 0, 0.0, centre - half), np.where(k == n, 1.0, centre + half)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def _paired(y_true, *predictions) -> list[np.ndarray]:
    arrays = [np.asarray(a) for a in (y_true, *predictions)]
    if any(a.ndim != 1 for a in arrays) or len({a.shape for a in arrays}) != 1:
        raise ValueError(f"y_true and the predictions must be 1-D of equal length, got shapes "
                         f"{', '.join(str(a.shape) for a in arrays)}")
    if arrays[0].size == 0:
        raise ValueError("y_true and the predictions must not be empty (n = 0)")
    return arrays


def accuracy_interval(y_true, y_pred, level: float = 0.95) -> tuple[float, float, float]:
    """(accuracy, low, high) of predictions y_pred of labels y_true, with the Wilson interval at `level`."""
    y_true, y_pred = _paired(y_true, y_pred)
    correct = int(np.count_nonzero(y_true == y_pred))
    low, high = wilson_interval(correct, len(y_true), level)
    return correct / len(y_true), low, high


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test of model A against model B on the same images."""
    b: int          # images only A got right
    c: int          # images only B got right
    p_value: float  # exact two-sided: min(1, 2 P(X <= min(b, c))), X ~ Binomial(b + c, 1/2)
    mid_p: float    # min(1, 2 P(X < min(b, c)) + P(X = min(b, c)))


def mcnemar_from_counts(b: int, c: int) -> McNemar:
    """McNemar's exact test from the discordant counts b (only A right) and c (only B right)."""
    for name, value in (("b", b), ("c", c)):
        if not is_int(value) or value < 0:
            raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    b, c = int(b), int(c)
    n, low = b + c, min(b, c)
    if n == 0:  # the models agree on every image: nothing says either is better
        return McNemar(b, c, 1.0, 1.0)
    below, term = 0, 1  # sum_{i < low} C(n, i); C(n, i) updated as C(n, i + 1) = C(n, i) (n - i) / (i + 1)
    for i in range(low):
        below += term
        term = term * (n - i) // (i + 1)
    at = term  # C(n, low)
    p_value = min(1.0, 2 * (below + at) / 2**n)
    mid_p = min(1.0, (2 * below + at) / 2**n)
    return McNemar(b, c, p_value, mid_p)


def mcnemar(y_true, pred_a, pred_b) -> McNemar:
    """McNemar's exact test of the predictions pred_a (model A) against pred_b (model B) of labels y_true."""
    y_true, pred_a, pred_b = _paired(y_true, pred_a, pred_b)
    right_a, right_b = y_true == pred_a, y_true == pred_b
    return mcnemar_from_counts(int(np.count_nonzero(right_a & ~right_b)), int(np.count_nonzero(right_b & ~right_a)))


def verdict(test: McNemar, alpha: float = 0.05) -> str:
    """"better" (A is right on significantly more of the images they disagree on: p <= alpha and b > c),
    "worse" (the same for B: p <= alpha and c > b) or "within noise" (p > alpha), from the exact p-value."""
    check(Confidence, alpha=alpha)
    if test.p_value > alpha:
        return "within noise"
    return "better" if test.b > test.c else "worse"


def compare_models(y_true, pred_a, pred_b, alpha: float = 0.05) -> dict:
    """Model A against model B on the same images, as plain numbers for tables, metrics files and tags:
    images, accuracy_a, accuracy_b, difference (accuracy_a - accuracy_b), McNemar's b, c, p_value (exact),
    mid_p, and the verdict at `alpha` ("better", "worse" or "within noise", for A).

    difference = (b - c) / images: the images both got right (or wrong) cancel out.
    """
    y_true, pred_a, pred_b = _paired(y_true, pred_a, pred_b)
    test = mcnemar(y_true, pred_a, pred_b)
    n = len(y_true)
    accuracy_a, accuracy_b = int(np.count_nonzero(y_true == pred_a)) / n, int(np.count_nonzero(y_true == pred_b)) / n
    return {"images": n, "accuracy_a": accuracy_a, "accuracy_b": accuracy_b, "difference": (test.b - test.c) / n,
            "b": test.b, "c": test.c, "p_value": test.p_value, "mid_p": test.mid_p, "verdict": verdict(test, alpha)}
