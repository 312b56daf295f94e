"""Losses: analytic gradients vs finite differences, vectorized vs loop reference, stability, dtypes, errors."""

import math

import numpy as np
import pytest

from linclass.core import losses, regularizers
from linclass.core.losses import get_loss

LOSS_NAMES = list(losses.LOSSES)
REGULARIZER_NAMES = list(regularizers.REGULARIZERS)


def relative_error(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-12)


def numerical_gradient(f, x, h=1e-5):
    """Centered differences of the scalar f at the float64 array x (perturbs x in place, restores it)."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        old = x[index]
        x[index] = old + h
        plus = f()
        x[index] = old - h
        minus = f()
        x[index] = old
        grad[index] = (plus - minus) / (2 * h)
    return grad


def scores_away_from_kinks(rng, N, C, delta=1.0, gap=1e-3):
    """Random float64 scores whose hinge margins s_j - s_{y_i} + delta are all >= gap away from 0."""
    while True:
        scores = rng.standard_normal((N, C)) * 2
        y = rng.integers(0, C, N)
        margins = scores - scores[np.arange(N), y][:, None] + delta
        margins[np.arange(N), y] = 1.0
        if np.abs(margins).min() > gap:
            return scores, y


def reference_loss(name, scores, y, delta=1.0):
    """Plain loops straight from the formulas."""
    N, C = scores.shape
    out = np.zeros(N)
    for i in range(N):
        if name == "softmax":
            out[i] = -math.log(math.exp(scores[i, y[i]]) / sum(math.exp(s) for s in scores[i]))
            continue
        for j in range(C):
            if j == y[i]:
                continue
            margin = max(0.0, scores[i, j] - scores[i, y[i]] + delta)
            out[i] += margin ** 2 if name == "squared_svm" else margin
    return out


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("delta", [1.0, 0.5])
def test_gradient_matches_finite_differences(name, delta):
    rng = np.random.default_rng(1)
    scores, y = scores_away_from_kinks(rng, N=7, C=5, delta=delta)
    loss = get_loss(name)
    _, dscores = loss(scores, y, delta=delta)
    numeric = numerical_gradient(lambda: loss(scores, y, delta=delta)[0], scores)
    assert np.abs(dscores).max() > 0
    assert relative_error(dscores, numeric) < 1e-6


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_vectorized_equals_loop_reference(name):
    rng = np.random.default_rng(2)
    scores = rng.standard_normal((40, 10)) * 3
    y = rng.integers(0, 10, 40)
    expected = reference_loss(name, scores, y, delta=0.7)
    np.testing.assert_allclose(get_loss(name)(scores, y, delta=0.7, reduction="none"), expected, rtol=1e-12)
    value, _ = get_loss(name)(scores, y, delta=0.7)
    assert value == pytest.approx(expected.mean(), rel=1e-12)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_mean_of_per_example_equals_mean_value(name):
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((25, 4))
    y = rng.integers(0, 4, 25)
    value, _ = get_loss(name)(scores, y)
    per_example = get_loss(name)(scores, y, reduction="none")
    assert per_example.shape == (25,)
    assert isinstance(value, float)
    assert value == pytest.approx(per_example.mean(), rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_is_stable_for_extreme_scores(dtype):
    scores = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 1000.0]], dtype=dtype)
    y = np.array([1, 0])
    value, dscores = get_loss("softmax")(scores, y)
    per_example = get_loss("softmax")(scores, y, reduction="none")
    assert np.isfinite(value) and np.isfinite(dscores).all() and np.isfinite(per_example).all()
    # row 0: log-sum-exp = 1000, so L = 1000 - (-1000) = 2000; row 1: L = 1000 + log 2 - (-1000)
    np.testing.assert_allclose(per_example, [2000.0, 2000.0 + math.log(2)], rtol=1e-6)
    np.testing.assert_allclose(dscores * 2, [[1, -1, 0], [-1, 0.5, 0.5]], atol=1e-6)
    probabilities = losses.softmax_probabilities(scores)
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_float32_in_float32_out(name):
    rng = np.random.default_rng(4)
    scores = rng.standard_normal((8, 10)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    value, dscores = get_loss(name)(scores, y, delta=np.float64(1.0))
    assert dscores.dtype == np.float32 and dscores.shape == scores.shape
    assert get_loss(name)(scores, y, reduction="none").dtype == np.float32
    # and float32 agrees with float64 to float32 precision
    value64, dscores64 = get_loss(name)(scores.astype(np.float64), y)
    assert value == pytest.approx(value64, rel=1e-5)
    np.testing.assert_allclose(dscores, dscores64, rtol=1e-4, atol=1e-6)


def test_unknown_loss_lists_known_names():
    with pytest.raises(ValueError, match="'hinge'") as excinfo:
        get_loss("hinge")
    for name in LOSS_NAMES:
        assert name in str(excinfo.value)


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("y, reduction, message", [
    (np.array([0, 1]), "mean", r"\(2,\)"),              # wrong shape: 3 scores rows, 2 labels
    (np.array([[0], [1], [2]]), "mean", r"\(3, 1\)"),   # 2-D labels
    (np.array([0, 1, 3]), "mean", "got label 3"),      # label out of [0, 3)
    (np.array([0, -1, 2]), "mean", "got label -1"),
    (np.array([0.0, 1.0, 2.0]), "mean", "float64"),    # non-integer labels
    (np.array([0, 1, 2]), "sum", "'sum'"),             # unknown reduction
])
def test_bad_inputs_raise_one_line_value_errors(name, y, reduction, message):
    scores = np.zeros((3, 3))
    with pytest.raises(ValueError, match=message) as excinfo:
        get_loss(name)(scores, y, reduction=reduction)
    assert "\n" not in str(excinfo.value)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_validate_false_skips_the_checks_and_changes_no_bit(name):
    rng = np.random.default_rng(3)
    scores, y = rng.standard_normal((7, 4)).astype(np.float32), rng.integers(0, 4, 7)
    value, grad = get_loss(name)(scores, y, delta=0.5)
    value_fast, grad_fast = get_loss(name)(scores, y, delta=0.5, validate=False)
    assert value_fast == value and np.array_equal(grad_fast, grad)
    assert np.array_equal(get_loss(name)(scores, y, reduction="none", validate=False),
                          get_loss(name)(scores, y, reduction="none"))
    with pytest.raises(ValueError, match="labels in"):
        get_loss(name)(scores, np.full(7, -1), delta=0.5)


@pytest.mark.parametrize("loss_name", LOSS_NAMES)
@pytest.mark.parametrize("reg_name", REGULARIZER_NAMES)
def test_full_model_gradient(loss_name, reg_name):
    """L(W, b) = loss(X W^T + b, y) + strength * R(W): dW = dS^T X + dR, db = sum_i dS_i (b not regularized)."""
    rng = np.random.default_rng(5)
    N, D, C, strength = 6, 4, 3, 0.3
    while True:  # stay >= 1e-3 away from hinge kinks and from W = 0 (the L1 kink)
        X = rng.standard_normal((N, D))
        W = rng.standard_normal((C, D))
        b = rng.standard_normal(C)
        y = rng.integers(0, C, N)
        scores = X @ W.T + b
        margins = scores - scores[np.arange(N), y][:, None] + 1.0
        margins[np.arange(N), y] = 1.0
        if np.abs(margins).min() > 1e-3 and np.abs(W).min() > 1e-3:
            break
    loss, reg = get_loss(loss_name), regularizers.get_regularizer(reg_name)

    def total_loss():
        return loss(X @ W.T + b, y)[0] + reg(W, strength)[0]

    _, dscores = loss(X @ W.T + b, y)
    dW = dscores.T @ X + reg(W, strength)[1]
    db = dscores.sum(axis=0)
    assert relative_error(dW, numerical_gradient(total_loss, W, h=1e-6)) < 1e-6
    assert relative_error(db, numerical_gradient(total_loss, b, h=1e-6)) < 1e-6


def test_softmax_loss_of_a_confident_right_answer_is_tiny_but_positive():
    # [10, -100, -100] with y = 0: L = log(1 + 2 e^-110) ~ 2 e^-110, not rounded to 0 (log1p)
    value = losses.softmax_loss(np.array([[10.0, -100.0, -100.0]]), np.array([0]), reduction="none")[0]
    assert value > 0 and math.isclose(value, 2 * math.exp(-110), rel_tol=1e-12)
