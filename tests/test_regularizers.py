"""Regularizers: values by hand, gradients vs finite differences, dtypes, errors."""

import numpy as np
import pytest

from linclass.core import regularizers
from linclass.core.regularizers import get_regularizer, penalty

REGULARIZER_NAMES = list(regularizers.REGULARIZERS)

W_SMALL = np.array([[1.0, -2.0], [0.5, 0.0]])
# R(W_SMALL): sum W^2 = 1 + 4 + 0.25 = 5.25; sum |W| = 3.5; elastic net (beta = 0.5) = 2.625 + 3.5
EXPECTED_R = {"none": 0.0, "l2": 5.25, "l1": 3.5, "elasticnet": 6.125}
EXPECTED_DR = {
    "none": np.zeros((2, 2)),
    "l2": 2 * W_SMALL,
    "l1": np.array([[1.0, -1.0], [1.0, 0.0]]),
    "elasticnet": 2 * 0.5 * W_SMALL + np.array([[1.0, -1.0], [1.0, 0.0]]),
}


def relative_error(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-12)


@pytest.mark.parametrize("name", REGULARIZER_NAMES)
@pytest.mark.parametrize("strength", [1.0, 2.5])
def test_values_and_gradients_by_hand(name, strength):
    value, dW = get_regularizer(name)(W_SMALL, strength, beta=0.5)
    assert isinstance(value, float)
    assert value == pytest.approx(strength * EXPECTED_R[name])
    np.testing.assert_allclose(dW, strength * EXPECTED_DR[name])
    assert penalty(name, W_SMALL) == pytest.approx(EXPECTED_R[name])


def test_elasticnet_uses_beta():
    value, dW = get_regularizer("elasticnet")(W_SMALL, 1.0, beta=2.0)
    assert value == pytest.approx(2.0 * 5.25 + 3.5)
    np.testing.assert_allclose(dW, 4.0 * W_SMALL + np.sign(W_SMALL))


@pytest.mark.parametrize("name", REGULARIZER_NAMES)
@pytest.mark.parametrize("beta", [0.5, 1.7])
def test_gradient_matches_finite_differences(name, beta):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((3, 5))
    W[np.abs(W) < 1e-2] = 0.5  # stay away from the L1 kink at 0
    strength, h = 0.7, 1e-5
    reg = get_regularizer(name)
    _, dW = reg(W, strength, beta)
    numeric = np.zeros_like(W)
    for index in np.ndindex(W.shape):
        old = W[index]
        W[index] = old + h
        plus = reg(W, strength, beta)[0]
        W[index] = old - h
        minus = reg(W, strength, beta)[0]
        W[index] = old
        numeric[index] = (plus - minus) / (2 * h)
    if name == "none":
        assert not dW.any() and not numeric.any()
    else:
        assert relative_error(dW, numeric) < 1e-6


@pytest.mark.parametrize("name", REGULARIZER_NAMES)
def test_zero_strength_gives_zero(name):
    value, dW = get_regularizer(name)(W_SMALL, 0.0)
    assert value == 0.0 and not dW.any()


@pytest.mark.parametrize("name", REGULARIZER_NAMES)
@pytest.mark.parametrize("strength", [1e-3, np.float64(1e-3), np.float32(1e-3)])
def test_float32_W_keeps_float32_gradient(name, strength):
    W = np.random.default_rng(1).standard_normal((10, 30)).astype(np.float32)
    value, dW = get_regularizer(name)(W, strength)
    assert dW.dtype == np.float32 and dW.shape == W.shape
    assert isinstance(value, float)


@pytest.mark.parametrize("name", REGULARIZER_NAMES)
@pytest.mark.parametrize("strength", [-1e-3, float("nan")])
def test_bad_strength_raises(name, strength):
    allowed = "a number" if strength == strength else "a finite number"   # NaN: not finite
    with pytest.raises(ValueError, match=f"strength={strength!r} is out of range: allowed {allowed} >= 0"):
        get_regularizer(name)(W_SMALL, strength)


def test_unknown_regularizer_lists_known_names():
    with pytest.raises(ValueError, match="'l3'") as excinfo:
        get_regularizer("l3")
    for name in REGULARIZER_NAMES:
        assert name in str(excinfo.value)
    with pytest.raises(ValueError, match="'L2'"):
        penalty("L2", W_SMALL)
