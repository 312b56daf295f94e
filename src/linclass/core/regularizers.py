"""Weight penalties R(W) with gradients; the total loss is L = data loss + strength * R(W).

Only W (C, D) is regularized, never the bias b: the bias does not interact with the input, so
penalizing it would not make the classifier prefer spread-out weights.

Every regularizer has the signature reg(W, strength, beta=BETA, out=None) -> (value, dW), BETA = 0.5:
    value = strength * R(W) (python float), dW = strength * dR/dW (same shape and dtype as W),
    written into `out` (an array like W) when given: SGD reuses one buffer instead of allocating per step.
    With or without `out`, the same float operations in the same order: the results are bit-identical.
    none:       R = 0
    l2:         R = sum W^2                    dR/dW = 2W
    l1:         R = sum |W|                    dR/dW = sign(W)   (subgradient 0 at W = 0)
    elasticnet: R = sum(beta W^2 + |W|)        dR/dW = 2 beta W + sign(W)   (the lecture's form)
"""

import numpy as np

from linclass.settings import REGULARIZER_NAMES, ElasticNet, Penalty, check, default

BETA = default(ElasticNet, "beta")  # elastic net's weight of W^2, as params.yaml has it by default


def _check_strength(strength):
    check(Penalty, strength=strength)
    return float(strength)  # python float: never upcasts float32 W


def no_penalty(W, strength, beta=BETA, out=None):
    """R(W) = 0."""
    _check_strength(strength)
    if out is None:
        return 0.0, np.zeros_like(W)
    out.fill(0)
    return 0.0, out


def l2_penalty(W, strength, beta=BETA, out=None):
    """R(W) = sum W^2, dR/dW = 2W."""
    strength = _check_strength(strength)
    return strength * float(np.vdot(W, W)), np.multiply(W, 2 * strength, out=out)


def _abs_sum_and_sign(W, out):
    """(sum |W| as a python float, sign(W) in out); out doubles as the scratch for |W|."""
    if out is None:
        return float(np.abs(W).sum()), np.sign(W)
    abs_sum = float(np.abs(W, out=out).sum())
    return abs_sum, np.sign(W, out=out)


def l1_penalty(W, strength, beta=BETA, out=None):
    """R(W) = sum |W|, dR/dW = sign(W)."""
    strength = _check_strength(strength)
    abs_sum, sign = _abs_sum_and_sign(W, out)
    sign *= strength
    return strength * abs_sum, sign


def elasticnet_penalty(W, strength, beta=BETA, out=None):
    """R(W) = sum(beta W^2 + |W|), dR/dW = 2 beta W + sign(W)."""
    strength = _check_strength(strength)
    beta = float(beta)
    abs_sum, grad = _abs_sum_and_sign(W, out)
    value = beta * float(np.vdot(W, W)) + abs_sum
    grad *= strength
    grad += (2 * strength * beta) * W  # float addition commutes: s sign(W) + 2 s beta W, bit for bit
    return strength * value, grad


REGULARIZERS = dict(zip(REGULARIZER_NAMES, (no_penalty, l1_penalty, l2_penalty, elasticnet_penalty)))


def get_regularizer(name):
    """The regularizer called `name`: one of "none", "l1", "l2", "elasticnet"."""
    if name not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {name!r}; known regularizers: {', '.join(REGULARIZERS)}")
    return REGULARIZERS[name]


def penalty(name, W, beta=BETA):
    """R(W) without the strength (python float)."""
    value, _ = get_regularizer(name)(W, 1.0, beta)
    return value
