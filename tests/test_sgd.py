"""Minibatch SGD: learns, is deterministic, keeps float32, records history, fails loudly."""

import hashlib
import math
import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest

from linclass.core import losses, sgd
from linclass.core.losses import get_loss
from linclass.core.metrics import accuracy
from linclass.core.model import class_scores, init_weights, predict
from linclass.core.pixels import Pixels
from linclass.core.sgd import DivergenceError, History, TrainResult, train_sgd

LOSS_NAMES = list(losses.LOSSES)


def make_data(N=50, D=50, C=10, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, D)).astype(dtype), rng.integers(0, C, N)


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_overfits_50_examples(loss):
    X, y = make_data()
    result = train_sgd(X, y, loss=loss, regularizer="none", learning_rate=0.05, batch_size=10, epochs=100,
                       init_scale=0.01, seed=1)
    assert isinstance(result, TrainResult)
    assert result.history.train_accuracy[0] < 1.0  # it did have to learn
    assert result.history.train_accuracy[-1] == 1.0
    assert accuracy(y, predict(X, result.W, result.b)) == 1.0
    assert result.history.data_loss[-5:].mean() < result.history.data_loss[:5].mean()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_weights_keep_the_dtype_of_X(dtype, loss):
    X, y = make_data(N=30, D=3072, dtype=dtype)
    result = train_sgd(X, y, loss=loss, regularizer="elasticnet", strength=np.float64(1e-3), beta=np.float64(0.5),
                       delta=np.float64(1.0), learning_rate=np.float64(1e-4), batch_size=8, epochs=2)
    assert result.W.dtype == dtype and result.b.dtype == dtype
    assert result.W.shape == (10, 3072) and result.b.shape == (10,)


def test_steps_are_exactly_the_sgd_update_and_b_is_not_regularized():
    """batch_size = N: W <- W - lr (dS^T X + 2 s W), b <- b - lr sum_i dS_i (no penalty on b), lr decays."""
    X, y = make_data(N=40, D=30, C=4, dtype=np.float64)
    lr, strength, seed, decay = 0.1, 5.0, 3, 0.5
    result = train_sgd(X, y, loss="softmax", regularizer="l2", strength=strength, learning_rate=lr,
                       batch_size=40, epochs=2, lr_decay=decay, seed=seed, init_scale=0.1)
    rng = np.random.default_rng(seed)
    W, b = init_weights(4, 30, rng, scale=0.1, dtype=np.float64)
    for epoch in range(2):  # two steps, so the second one starts from b != 0
        order = rng.permutation(40)
        _, dscores = get_loss("softmax")(X[order] @ W.T + b, y[order])
        W = W - lr * decay**epoch * (dscores.T @ X[order] + 2 * strength * W)
        b = b - lr * decay**epoch * dscores.sum(axis=0)
    np.testing.assert_allclose(result.W, W, rtol=1e-10)
    np.testing.assert_allclose(result.b, b, rtol=1e-10, atol=1e-15)
    assert np.abs(result.b).max() > 1e-3


def test_proximal_l1_step_is_a_soft_threshold_after_the_smooth_step():
    """l1_step="proximal": W <- T(W - lr (dS^T X + 2 beta s W)), T(w) = sign(w) max(|w| - lr s, 0)."""
    X, y = make_data(N=40, D=30, C=4, dtype=np.float64)
    lr, strength, beta, seed = 0.1, 0.05, 0.5, 3
    result = train_sgd(X, y, loss="svm", regularizer="elasticnet", strength=strength, beta=beta, learning_rate=lr,
                       batch_size=40, epochs=2, lr_decay=1.0, seed=seed, init_scale=0.1, l1_step="proximal")
    rng = np.random.default_rng(seed)
    W, b = init_weights(4, 30, rng, scale=0.1, dtype=np.float64)
    penalties = []  # the logged penalty is the whole strength * R(W) of the W the step starts from
    for _ in range(2):
        penalties.append(strength * (beta * np.vdot(W, W) + np.abs(W).sum()))
        order = rng.permutation(40)
        _, dscores = get_loss("svm")(X[order] @ W.T + b, y[order])
        W = W - lr * (dscores.T @ X[order] + 2 * beta * strength * W)
        W = np.sign(W) * np.maximum(np.abs(W) - lr * strength, 0)
        b = b - lr * dscores.sum(axis=0)
    np.testing.assert_allclose(result.W, W, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(result.history.reg_loss, penalties, rtol=1e-10)
    assert (result.W == 0).any()  # exact zeros


@pytest.mark.parametrize("regularizer", ["none", "l2"])
def test_l1_step_changes_nothing_without_an_l1_part(regularizer):
    X, y = make_data()
    kwargs = dict(loss="softmax", regularizer=regularizer, strength=1e-2, learning_rate=0.05, batch_size=10, epochs=2)
    for a, b in zip(_arrays(train_sgd(X, y, **kwargs)), _arrays(train_sgd(X, y, l1_step="proximal", **kwargs))):
        np.testing.assert_array_equal(a, b)


def test_strong_l1_zeroes_W_with_the_proximal_step_and_not_with_the_subgradient():
    """The subgradient makes every weight flip around 0 with amplitude lr * strength: W is not sparse."""
    X, y = make_data(N=100)
    kwargs = dict(loss="softmax", regularizer="l1", strength=1.0, learning_rate=0.05, batch_size=20, epochs=5)
    proximal = train_sgd(X, y, l1_step="proximal", **kwargs).W
    subgradient = train_sgd(X, y, l1_step="subgradient", **kwargs).W
    assert (proximal == 0).all()
    assert (subgradient != 0).mean() > 0.9 and np.abs(subgradient).max() < 2 * 0.05  # noise of size lr * strength


def _arrays(result):
    h = result.history
    return [result.W, result.b, h.data_loss, h.reg_loss, h.total_loss, h.train_accuracy, h.val_accuracy,
            h.learning_rate]


def test_same_seed_is_bit_identical_and_other_seed_differs():
    X, y = make_data(N=64, D=40)
    X_val, y_val = make_data(N=20, D=40, seed=9)
    kwargs = dict(loss="svm", regularizer="l2", strength=1e-2, learning_rate=1e-2, batch_size=16, epochs=3,
                  lr_decay=0.9, X_val=X_val, y_val=y_val)
    first, second = train_sgd(X, y, seed=7, **kwargs), train_sgd(X, y, seed=7, **kwargs)
    for a, b in zip(_arrays(first), _arrays(second)):
        assert np.array_equal(a, b)
    other = train_sgd(X, y, seed=8, **kwargs)
    assert not np.array_equal(first.W, other.W)
    assert not np.array_equal(first.history.data_loss, other.history.data_loss)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_divergence_raises_with_step_and_value(loss, dtype):
    X, y = make_data(N=100, D=20, C=5, dtype=dtype)
    with pytest.raises(DivergenceError) as excinfo:
        train_sgd(X * 1000, y, loss=loss, regularizer="l2", strength=1.0, learning_rate=1e12, batch_size=10,
                  epochs=5)
    message = str(excinfo.value)
    assert re.fullmatch(r"training diverged at step \d+ \(epoch \d+\): total loss = (inf|nan); "
                        r"lower learning_rate \(was 1e\+12\)", message), message
    assert f"step {excinfo.value.step} " in message
    assert excinfo.value.step >= 1 and not math.isfinite(excinfo.value.value)
    assert isinstance(excinfo.value, FloatingPointError)


X_OK, Y_OK = make_data(N=20, D=5, C=3)


@pytest.mark.parametrize("kwargs, message", [
    (dict(learning_rate=0.0), "learning_rate=0.0 is out of range: allowed a number > 0"),
    (dict(learning_rate=-1e-3), "learning_rate=-0.001 is out of range"),
    (dict(learning_rate=float("nan")), "learning_rate=nan is out of range"),
    (dict(batch_size=0), r"batch_size=0 is out of range: allowed an integer in \[1, N=20\]"),
    (dict(batch_size=21), "batch_size=21 is out of range"),
    (dict(batch_size=2.5), "batch_size=2.5 is out of range"),
    (dict(epochs=0), "epochs=0 is out of range: allowed an integer >= 1"),
    (dict(lr_decay=0.0), "lr_decay=0.0 is out of range: allowed a number > 0 and <= 1"),
    (dict(lr_decay=1.5), "lr_decay=1.5 is out of range"),
    (dict(loss="hinge"), "unknown loss 'hinge'; known losses: svm, squared_svm, softmax"),
    (dict(regularizer="l3"), "unknown regularizer 'l3'"),
    (dict(strength=-1.0), "strength=-1.0 is out of range: allowed a number >= 0"),
    (dict(num_classes=2), "largest label 2, got 2"),
    (dict(X=X_OK[0]), r"X must be a 2-D array \(N, D\), got shape \(5,\)"),
    (dict(X=X_OK[:, :, None]), r"got shape \(20, 5, 1\)"),
    (dict(X=X_OK.astype(np.uint8)), "dtype uint8"),
    (dict(y=Y_OK[:-1]), r"y must have shape \(20,\) to match X \(20, 5\), got \(19,\)"),
    (dict(y=Y_OK.astype(np.float64)), "y must be 1-D integer labels, got shape \\(20,\\) dtype float64"),
    (dict(y=-Y_OK - 1), "y must hold labels in >= 0, got label -3"),
    (dict(X_val=X_OK), "X_val and y_val must be given together"),
    (dict(X_val=X_OK[:, :4], y_val=Y_OK), r"X_val must have D = 5 columns like X, got shape \(20, 4\)"),
    (dict(on_epoch=3), "on_epoch must be callable"),
    (dict(beta=-0.5), "beta=-0.5 is out of range: allowed a number >= 0"),
    (dict(delta=float("inf")), "delta=inf is out of range: allowed a finite number > 0"),
    (dict(l1_step="prox"), "l1_step='prox' is not one of 'subgradient', 'proximal'; did you mean 'proximal'?"),
])
def test_bad_arguments_raise_one_line_value_errors(kwargs, message):
    args = dict(X=X_OK, y=Y_OK, batch_size=5)
    args.update(kwargs)
    X, y = args.pop("X"), args.pop("y")
    with pytest.raises(ValueError, match=message) as excinfo:
        train_sgd(X, y, **args)
    assert "\n" not in str(excinfo.value)


def test_history_lengths_totals_decay_and_frames():
    X, y = make_data(N=53, D=12, C=4)
    X_val, y_val = make_data(N=17, D=12, C=4, seed=5)
    seen = []

    def on_epoch(epoch, history):
        seen.append((epoch, len(history.total_loss), len(history.train_accuracy)))

    result = train_sgd(X, y, loss="softmax", regularizer="elasticnet", strength=0.1, learning_rate=0.05,
                       batch_size=10, epochs=3, lr_decay=0.5, X_val=X_val, y_val=y_val, on_epoch=on_epoch)
    h = result.history
    assert isinstance(h, History)
    steps = 3 * math.ceil(53 / 10)  # 6 steps per epoch: the last partial batch of 3 is used
    assert len(h.data_loss) == len(h.reg_loss) == len(h.total_loss) == steps == 18
    assert len(h.train_accuracy) == len(h.val_accuracy) == len(h.learning_rate) == 3
    assert seen == [(1, 6, 1), (2, 12, 2), (3, 18, 3)]
    assert np.array_equal(h.total_loss, h.data_loss + h.reg_loss)
    assert (h.reg_loss > 0).all()
    np.testing.assert_allclose(h.learning_rate, [0.05, 0.025, 0.0125])
    assert h.val_accuracy[-1] == accuracy(y_val, predict(X_val, result.W, result.b))
    assert h.train_accuracy[-1] == accuracy(y, predict(X, result.W, result.b))

    steps_df, epochs_df = h.to_frames()
    assert list(steps_df.columns) == ["step", "epoch", "data_loss", "reg_loss", "total_loss"]
    assert list(epochs_df.columns) == ["epoch", "train_accuracy", "val_accuracy", "learning_rate"]
    assert steps_df["step"].tolist() == list(range(1, 19))
    assert steps_df["epoch"].tolist() == [1] * 6 + [2] * 6 + [3] * 6
    assert epochs_df["epoch"].tolist() == [1, 2, 3]
    np.testing.assert_array_equal(epochs_df["learning_rate"], h.learning_rate)


def test_without_val_set_val_accuracy_is_nan_and_no_reg_means_zero_reg_loss():
    X, y = make_data(N=30, D=8, C=3)
    h = train_sgd(X, y, regularizer="none", strength=1.0, batch_size=30, epochs=2).history
    assert np.isnan(h.val_accuracy).all() and len(h.val_accuracy) == 2
    assert not h.reg_loss.any()
    assert np.array_equal(h.total_loss, h.data_loss)


def test_train_accuracy_sample_only_changes_the_bookkeeping():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 12)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    kwargs = dict(loss="softmax", regularizer="l2", strength=1e-3, learning_rate=0.05, batch_size=32, epochs=3, seed=5)
    full = train_sgd(X, y, train_accuracy_sample=10_000, **kwargs)
    sampled = train_sgd(X, y, train_accuracy_sample=50, **kwargs)
    assert np.array_equal(full.W, sampled.W) and np.array_equal(full.b, sampled.b)
    assert full.history.train_accuracy[-1] == sampled.history.train_accuracy[-1]  # last epoch: all rows
    assert all(math.isclose(a * 50, round(a * 50)) for a in sampled.history.train_accuracy[:-1])  # k / 50
    with pytest.raises(ValueError, match="train_accuracy_sample"):
        train_sgd(X, y, train_accuracy_sample=0, **kwargs)


def _plain_sgd(X, y, loss, regularizer, strength, beta, lr, batch_size, epochs, seed):
    """The SGD update written as the plain formulas (fresh arrays every step), for the bit-identity check."""
    from linclass.core.regularizers import get_regularizer

    rng = np.random.default_rng(seed)
    W, b = init_weights(10, X.shape[1], rng, scale=1e-3, dtype=X.dtype)
    for _ in range(epochs):
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch_size):
            X_b, y_b = X[order[start:start + batch_size]], y[order[start:start + batch_size]]
            _, dscores = get_loss(loss)(X_b @ W.T + b, y_b)
            _, dW_reg = get_regularizer(regularizer)(W, strength, beta)
            W -= lr * (dscores.T @ X_b + dW_reg)
            b -= lr * dscores.sum(axis=0)
        lr *= 0.9
    return W, b


@pytest.mark.parametrize("regularizer", ["none", "l1", "l2", "elasticnet"])
@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_reused_buffers_give_bit_identical_weights_to_the_plain_formulas(loss, regularizer):
    X, y = make_data(N=70, D=300)  # 70 = 3 x 20 + 10: the last minibatch is partial
    W, b = _plain_sgd(X, y, loss, regularizer, 1e-2, 0.3, 1e-2, 20, 3, seed=4)
    result = train_sgd(X, y, loss=loss, regularizer=regularizer, strength=1e-2, beta=0.3, learning_rate=1e-2,
                       batch_size=20, epochs=3, lr_decay=0.9, seed=4, num_classes=10, l1_step="subgradient")
    assert np.array_equal(result.W, W) and np.array_equal(result.b, b)


@pytest.mark.parametrize("prefetch_min_bytes", [0, 10**12], ids=["gathered-beside", "gathered-in-turn"])
@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_gathering_the_next_batch_in_a_helper_thread_changes_no_bit(monkeypatch, loss, prefetch_min_bytes):
    monkeypatch.setattr(sgd, "PREFETCH_MIN_BYTES", prefetch_min_bytes)
    X, y = make_data(N=70, D=300)  # the last minibatch is partial: 70 = 3 x 20 + 10
    W, b = _plain_sgd(X, y, loss, "elasticnet", 1e-2, 0.3, 1e-2, 20, 3, seed=4)
    result = train_sgd(X, y, loss=loss, regularizer="elasticnet", strength=1e-2, beta=0.3, learning_rate=1e-2,
                       batch_size=20, epochs=3, lr_decay=0.9, seed=4, num_classes=10, l1_step="subgradient")
    assert np.array_equal(result.W, W) and np.array_equal(result.b, b)


def test_the_helper_threads_end_with_training_also_when_it_diverges(monkeypatch):
    monkeypatch.setattr(sgd, "PREFETCH_MIN_BYTES", 0)
    X, y = make_data(N=200, D=300)
    train_sgd(X, y, batch_size=20, epochs=2, learning_rate=1e-3)
    with pytest.raises(DivergenceError):
        train_sgd(X * 1e30, y, batch_size=20, epochs=2, learning_rate=1e10)
    assert not [t.name for t in threading.enumerate() if t.name.startswith(("linclass-gather", "linclass-score"))]


@pytest.mark.parametrize("prefetch_min_bytes", [0, 10**12], ids=["scored-beside", "scored-in-turn"])
def test_each_epoch_reaches_on_epoch_in_order_with_its_accuracies_also_before_a_divergence(monkeypatch,
                                                                                         prefetch_min_bytes):
    """With the helper threads an epoch is scored beside the next one's steps: on_epoch still sees every epoch,
    in order, scored, and the one before a divergence too."""
    monkeypatch.setattr(sgd, "PREFETCH_MIN_BYTES", prefetch_min_bytes)
    X, y = make_data(N=200, D=300)
    X_val, y_val = make_data(N=40, D=300, seed=5)
    seen = []

    def on_epoch(epoch, history):
        seen.append((epoch, len(history.train_accuracy), float(history.train_accuracy[-1]),
                     float(history.val_accuracy[-1])))

    result = train_sgd(X, y, X_val=X_val, y_val=y_val, batch_size=20, epochs=3, learning_rate=1e-3,
                       on_epoch=on_epoch)
    h = result.history
    assert seen == [(e + 1, e + 1, h.train_accuracy[e], h.val_accuracy[e]) for e in range(3)]
    assert not np.isnan(h.val_accuracy).any()

    seen.clear()
    data = np.array(X)

    def poisons_the_data(epoch, history):   # the epochs after the first one reported diverge
        on_epoch(epoch, history)
        with np.errstate(over="ignore"):
            data[:] *= 1e30

    with pytest.raises(DivergenceError) as raised:
        train_sgd(data, y, X_val=X_val, y_val=y_val, batch_size=20, epochs=5, learning_rate=1e-3,
                  on_epoch=poisons_the_data)
    assert raised.value.epoch == (3 if prefetch_min_bytes == 0 else 2)
    assert [epoch for epoch, *_ in seen] == list(range(1, raised.value.epoch))


def test_batches_of_cifar_size_are_gathered_beside_and_tiny_ones_in_turn():
    assert 200 * 3072 >= sgd.PREFETCH_MIN_BYTES > 200 * 2 * 4  # a CIFAR-10 batch of uint8 pixels; a hard-cases batch


@pytest.mark.parametrize("regularizer", ["none", "l1", "l2", "elasticnet"])
def test_regularizer_out_buffer_is_bit_identical(regularizer):
    from linclass.core.regularizers import get_regularizer

    W = np.random.default_rng(0).standard_normal((10, 300)).astype(np.float32)
    W[0, :3] = 0  # sign(0) = 0
    value, grad = get_regularizer(regularizer)(W, 1e-2, 0.3)
    out = np.full_like(W, np.nan)
    value_out, grad_out = get_regularizer(regularizer)(W, 1e-2, 0.3, out=out)
    assert grad_out is out and value_out == value and np.array_equal(grad_out, grad)
    assert grad.dtype == np.float32


# ---- Pixels: uint8 images, the centring and scaling folded into the arithmetic --------------------------

def pixel_data(N=170, D=300, C=10, seed=0):
    """CIFAR-like uint8 rows (a brightness per image, noise around it) with their mean and scale."""
    rng = np.random.default_rng(seed)
    P = np.clip(rng.integers(40, 200, (N, 1)) + rng.normal(0, 50, (N, D)), 0, 255).astype(np.uint8)
    return Pixels(P, P.mean(axis=0).astype(np.float32), 255.0), rng.integers(0, C, N)


@pytest.mark.parametrize("regularizer", ["none", "l2", "elasticnet"])
@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_pixels_train_as_the_float32_formulas_on_the_design_matrix(loss, regularizer):
    """Batches of 80 = 3 blocks (32 + 32 + 16), 170 rows = a partial last batch; 3 epochs: the folded arithmetic
    follows the plain float32 SGD on X = (P - mean) / scale to rounding."""
    X, y = pixel_data()
    W, b = _plain_sgd(X.to_float(), y, loss, regularizer, 1e-2, 0.3, 0.5, 80, 3, seed=4)
    result = train_sgd(X, y, loss=loss, regularizer=regularizer, strength=1e-2, beta=0.3, learning_rate=0.5,
                       batch_size=80, epochs=3, lr_decay=0.9, seed=4, num_classes=10, l1_step="subgradient")
    assert result.W.dtype == np.float32 and result.b.dtype == np.float32
    np.testing.assert_allclose(result.W, W, rtol=0, atol=1e-5 * np.abs(W).max())
    np.testing.assert_allclose(result.b, b, rtol=0, atol=1e-5 * np.abs(b).max())


def test_folded_gradient_is_the_derivative_of_the_batch_loss():
    """dW = (dS^T F - outer(dS.sum(0), mean)) / scale against central differences of the data loss (float64)."""
    X, y = pixel_data(N=70, D=40, C=4)
    rng = np.random.default_rng(1)
    W, b = 1e-2 * rng.standard_normal((4, 40)), 1e-2 * rng.standard_normal(4)
    scores = np.empty((70, 4))
    F_block = np.empty((32, 40))  # float64: the gradient check runs in float64
    sgd._batch_scores(X.pixels, W, b, X, F_block, out=scores)
    np.testing.assert_allclose(scores, class_scores(X, W, b), rtol=1e-12, atol=1e-15)
    _, dscores = get_loss("softmax")(scores, y)
    dW = np.empty_like(W)
    sgd._batch_gradient(dscores, X.pixels, dscores.sum(axis=0), X, F_block, out=dW, tmp=np.empty_like(W))
    h = 1e-5
    for c, d in [(0, 0), (1, 7), (3, 39), (2, 20)]:
        step = np.zeros_like(W)
        step[c, d] = h
        up, _ = get_loss("softmax")(class_scores(X, W + step, b), y)
        down, _ = get_loss("softmax")(class_scores(X, W - step, b), y)
        assert math.isclose(dW[c, d], (up - down) / (2 * h), rel_tol=1e-6, abs_tol=1e-10)


def _fingerprint(result):
    return hashlib.md5(b"".join(np.ascontiguousarray(a).tobytes() for a in _arrays(result))).hexdigest()


PIXEL_RUN = dict(loss="softmax", regularizer="elasticnet", strength=1e-3, learning_rate=0.5, batch_size=80, epochs=3,
                 lr_decay=0.9, seed=7)


@pytest.mark.parametrize("prefetch_min_bytes", [0, 10**12], ids=["gathered-beside", "gathered-in-turn"])
def test_pixels_same_seed_same_bits_with_or_without_the_gather_thread(monkeypatch, prefetch_min_bytes):
    X, y = pixel_data()
    X_val, y_val = pixel_data(N=30, seed=9)
    first = train_sgd(X, y, X_val=X_val, y_val=y_val, **PIXEL_RUN)
    monkeypatch.setattr(sgd, "PREFETCH_MIN_BYTES", prefetch_min_bytes)
    again = train_sgd(X, y, X_val=X_val, y_val=y_val, **PIXEL_RUN)
    assert _fingerprint(again) == _fingerprint(first)
    other = train_sgd(X, y, X_val=X_val, y_val=y_val, **{**PIXEL_RUN, "seed": 8})
    assert not np.array_equal(first.W, other.W)


def test_pixels_same_bits_in_processes_that_run_at_once():
    """Two training processes at once (one BLAS thread each, as train.blas_threads=1) and this one alone."""
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import test_sgd as t; "
              "X, y = t.pixel_data(); print(t._fingerprint(t.train_sgd(X, y, **t.PIXEL_RUN)))")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    here = os.path.dirname(os.path.abspath(__file__))
    runs = [subprocess.Popen([sys.executable, "-c", script, here], env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=120)[0].strip() for run in runs]
    X, y = pixel_data()
    assert outputs == [_fingerprint(train_sgd(X, y, **PIXEL_RUN))] * 2
