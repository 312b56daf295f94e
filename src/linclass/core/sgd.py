"""Minibatch stochastic gradient descent for the linear classifier f(x, W) = Wx + b.

Each step on a minibatch (X_b (B, D), y_b (B,)):
    scores = X_b @ W.T + b                    (B, C)
    data, dS = loss(scores, y_b)              mean data loss and d(data)/d(scores) (B, C)
    reg, dR = regularizer(W, strength)        strength * R(W) and its gradient (C, D)
    W -= lr * (dS.T @ X_b + dR)               (C, D)
    b -= lr * dS.sum(0)                       (C,)   the bias gets the data gradient only
The bias b is never regularized. The learning rate is multiplied by lr_decay after every epoch.

l1_step="proximal" applies the |W| part of L1 and elastic net as a soft threshold after the step,
    W -= clip(W, -lr * strength, lr * strength)    (= sign(W) max(|W| - lr strength, 0))
instead of its subgradient strength * sign(W) inside dR: a weight that the data does not hold up
becomes exactly 0 and stays there, where the subgradient makes it flip around 0 with an amplitude
of lr * strength (so at a strong L1 penalty the subgradient's W is not sparse and sum |W| grows).
The logged penalty is the whole strength * R(W) either way.

Float32 data stays float32 throughout (W and b get the dtype of X).

X is a float array (N, D) or linclass.core.pixels.Pixels: the uint8 pixels P with a mean image and a scale,
X = (P - mean) / scale. Then the step runs on F = float32(P) with the centring and scaling folded in:
    scores = (F_b @ W.T - W @ mean) / scale + b
    dW     = (dS.T @ F_b - outer(dS.sum(0), mean)) / scale
Either way the two GEMMs run on blocks of pixels.BLOCK_ROWS rows of the minibatch (32: a block stays in the
L2 cache, and OpenBLAS multiplies blocks that small without packing them). The summation order is fixed by the
blocks: same seed, same bits.

Gathering a minibatch (copying B scattered rows of X into one buffer) needs nothing from the step before
it, so for batches of PREFETCH_MIN_BYTES or more a helper thread gathers batch k+1 while this thread computes
on batch k (numpy releases the GIL in the gather, the conversion and the GEMMs). For pixels the helper thread
also converts the batch to float32, so that this thread only multiplies (measured on CIFAR-10's shape, one
BLAS thread: an epoch 0.135 s, against 0.172 s with the conversion in this thread). Without the helper thread
(small batches) each GEMM converts each block of pixels into one 384 KiB float32 buffer and multiplies it
there, last block first for the gradient: the uint8 batch and that block stay in the L2 cache. The same
values reach GEMMs of the same blocks either way: the weights are bit-identical with and without it.

With the helper thread, a second one scores each epoch (train accuracy on its sample, val accuracy) on a copy
of the weights while the next epoch's steps run, and on_epoch hears of an epoch once it is scored: on
CIFAR-10 the two predictions of 5,000 rows cost about 0.015 s an epoch, 0.6 s of a 40-epoch train stage.
"""

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from linclass.core.losses import get_loss
from linclass.core.metrics import accuracy, check_labels
from linclass.core.model import init_weights, predict
from linclass.core.pixels import BLOCK_ROWS, Pixels, row_blocks
from linclass.core.regularizers import get_regularizer
from linclass.settings import ElasticNet, SvmLoss, Train, check, default, is_int

# Batches smaller than this (in bytes) are gathered in this thread: handing one to the helper thread and
# back costs tens of microseconds, more than gathering a few kilobytes.
PREFETCH_MIN_BYTES = 256 * 1024


class DivergenceError(FloatingPointError):
    """Training produced a NaN/inf loss; `step`, `epoch`, `value` say where (both 1-based)."""

    def __init__(self, message, step=None, epoch=None, value=None):
        super().__init__(message)
        self.step, self.epoch, self.value = step, epoch, value


@dataclass
class History:
    """What happened during training.

    Step-level (one entry per SGD step): data_loss, reg_loss, total_loss (= data_loss + reg_loss).
    Epoch-level (one entry per epoch): train_accuracy (weights at the end of the epoch, on a fixed
    random subset of train_accuracy_sample training rows; on all rows at the final epoch),
    val_accuracy (NaN without a val set), learning_rate (the rate used during that epoch).
    Steps and epochs are numbered from 1 in to_frames() and in error messages.
    """

    data_loss: np.ndarray
    reg_loss: np.ndarray
    total_loss: np.ndarray
    train_accuracy: np.ndarray
    val_accuracy: np.ndarray
    learning_rate: np.ndarray
    steps_per_epoch: int = 0  # 0 = infer from the array lengths

    def to_frames(self):
        """(steps DataFrame [step, epoch, data_loss, reg_loss, total_loss],
        epochs DataFrame [epoch, train_accuracy, val_accuracy, learning_rate])."""
        import pandas as pd  # only here: the numeric core does not need pandas

        num_steps, num_epochs = len(self.total_loss), len(self.train_accuracy)
        per_epoch = self.steps_per_epoch or max(1, num_steps // max(1, num_epochs))
        step = np.arange(1, num_steps + 1)
        steps = pd.DataFrame({
            "step": step,
            "epoch": (step - 1) // per_epoch + 1,
            "data_loss": self.data_loss,
            "reg_loss": self.reg_loss,
            "total_loss": self.total_loss,
        })
        epochs = pd.DataFrame({
            "epoch": np.arange(1, num_epochs + 1),
            "train_accuracy": self.train_accuracy,
            "val_accuracy": self.val_accuracy,
            "learning_rate": self.learning_rate,
        })
        return steps, epochs

    def head(self, num_steps, num_epochs):
        """The history of the first num_steps steps and num_epochs epochs (views, no copies)."""
        return History(self.data_loss[:num_steps], self.reg_loss[:num_steps], self.total_loss[:num_steps],
                       self.train_accuracy[:num_epochs], self.val_accuracy[:num_epochs],
                       self.learning_rate[:num_epochs], self.steps_per_epoch)


@dataclass
class TrainResult:
    W: np.ndarray        # (C, D), dtype of X
    b: np.ndarray        # (C,), dtype of X
    history: History


def _check_data(X, y, name_X, name_y):
    if isinstance(X, Pixels):
        pass
    elif not isinstance(X, np.ndarray) or X.ndim != 2:
        raise ValueError(f"{name_X} must be a 2-D array (N, D), got shape {np.shape(X)} (or Pixels: uint8 images)")
    elif not np.issubdtype(X.dtype, np.floating):
        raise ValueError(f"{name_X} must be float32 or float64 (or Pixels for uint8 images), got dtype {X.dtype}")
    y = np.asarray(y)
    if y.shape != (X.shape[0],):
        raise ValueError(f"{name_y} must have shape ({X.shape[0]},) to match {name_X} {X.shape}, got {y.shape}")
    check_labels(y, name=name_y)
    return y


def _minibatches(X, order, batch_size, buffers, pool=None, floats=None):
    """(idx, X_b) for each batch_size slice idx of order, X_b = X[idx] written into buffers[k % len(buffers)],
    then, given `floats` (buffers as many, float32), converted into floats[k % len(floats)] (exact for uint8).

    With a pool (and two buffers) batch k+1 is gathered (and converted) in the pool while the caller works on
    batch k; the caller must be done with batch k when it asks for batch k+1 (the buffer of k is refilled then).
    """
    starts = range(0, len(order), batch_size)

    def gather(k):
        idx = order[starts[k]:starts[k] + batch_size]
        X_b = np.take(X, idx, axis=0, out=buffers[k % len(buffers)][:len(idx)], mode="clip")  # idx: in range
        if floats is None:
            return idx, X_b
        F_b = floats[k % len(floats)][:len(idx)]
        np.copyto(F_b, X_b)
        return idx, F_b

    if pool is None:
        yield from map(gather, range(len(starts)))
        return
    pending = pool.submit(gather, 0)
    for k in range(len(starts)):
        batch = pending.result()
        if k + 1 < len(starts):
            pending = pool.submit(gather, k + 1)
        yield batch


class _EpochEnd:
    """Each epoch's train and val accuracy into history, then on_epoch. Without a pool here; with one in the pool,
    on a copy of the weights, beside the next epoch's steps, and reported once scored (flush: the epoch being
    scored, now). The same weights and rows either way: the same accuracies."""

    def __init__(self, history, on_epoch, pool):
        self.history, self.on_epoch, self.pool, self.pending = history, on_epoch, pool, None

    def add(self, epoch, W, b, train, val):
        if self.pool is None:
            self._score(epoch, W, b, train, val)
            self._report(epoch)
            return
        self.flush()
        self.pending = epoch, self.pool.submit(self._score, epoch, W.copy(), b.copy(), train, val)

    def flush(self):
        if self.pending is not None:
            (epoch, future), self.pending = self.pending, None
            future.result()
            self._report(epoch)

    def _score(self, epoch, W, b, train, val):
        (X, y), (X_val, y_val) = train, val
        self.history.train_accuracy[epoch] = accuracy(y, predict(X, W, b))
        if X_val is not None:
            self.history.val_accuracy[epoch] = accuracy(y_val, predict(X_val, W, b))

    def _report(self, epoch):
        if self.on_epoch is not None:
            self.on_epoch(epoch + 1, self.history.head((epoch + 1) * self.history.steps_per_epoch, epoch + 1))


def _float_blocks(X_b, F_block, reverse=False):
    """(lo, hi, F) for each block of rows of the batch X_b, F = its rows in float: X_b[lo:hi] itself for float
    rows; for uint8 pixels, F_block (BLOCK_ROWS, D) float32 filled with them (exact). Last block first if reverse."""
    blocks = row_blocks(len(X_b))
    for lo, hi in reversed(blocks) if reverse else blocks:
        if F_block is None:
            yield lo, hi, X_b[lo:hi]
        else:
            np.copyto(F_block[:hi - lo], X_b[lo:hi])
            yield lo, hi, F_block[:hi - lo]


def _batch_scores(X_b, W, b, pixels, F_block, out):
    """out = X_b W^T + b (B, C) by blocks of rows. Pixels: out = (F W^T - W mean) / scale + b, F = float32(X_b)."""
    for lo, hi, F in _float_blocks(X_b, F_block):
        np.matmul(F, W.T, out=out[lo:hi])
    if pixels is not None:
        out -= W @ pixels.mean
        out /= pixels.scale
    out += b


def _batch_gradient(dscores, X_b, dscores_sum, pixels, F_block, out, tmp):
    """out = dS^T X_b (C, D): dS^T F summed over the blocks of rows, last block first (the rows the scores pass
    read last are still in the cache); Pixels: out = (dS^T F - outer(dS.sum(0), mean)) / scale, each block of
    uint8 rows converted again (the 600 KB batch and one 384 KiB block stay in the L2 cache, where a float32
    copy of the whole batch, 2.4 MB, would not)."""
    for k, (lo, hi, F) in enumerate(_float_blocks(X_b, F_block, reverse=True)):
        np.matmul(dscores[lo:hi].T, F, out=tmp if k else out)
        if k:
            out += tmp
    if pixels is not None:
        out -= np.multiply.outer(dscores_sum, pixels.mean, out=tmp)
        out /= pixels.scale


def train_sgd(X, y, *, loss="svm", regularizer="l2", strength=0.0, beta=default(ElasticNet, "beta"),
              delta=default(SvmLoss, "delta"), learning_rate=default(SvmLoss, "learning_rate"),
              batch_size=default(Train, "batch_size"), epochs=default(Train, "epochs"),
              lr_decay=default(Train, "lr_decay"), seed=default(Train, "seed"),
              init_scale=default(Train, "init_scale"), l1_step=default(Train, "l1_step"),
              num_classes=None, X_val=None, y_val=None, on_epoch=None, train_accuracy_sample=5000):
    """Train W (C, D), b (C,) on X (N, D), y (N,) by minibatch SGD; returns TrainResult(W, b, history).

    X (and X_val) is a float array or Pixels (uint8 images with their mean and scale: float32 weights).

    Deterministic: one np.random.default_rng(seed) draws the initial W, then a permutation per epoch;
    the last partial minibatch of each epoch is used. num_classes defaults to 1 + the largest label in
    y / y_val. on_epoch(epoch, history), if given, is called for each epoch in order once it is scored, with
    the helper threads during the next epoch (epoch counts from 1; history holds exactly the steps and epochs
    up to it). Raises ValueError for bad arguments and DivergenceError when the loss becomes NaN/inf.
    """
    # ---- validate everything up front (one-line errors) ----
    loss_fn = get_loss(loss)
    reg_fn = get_regularizer(regularizer)
    y = _check_data(X, y, "X", "y")
    N, D = X.shape
    if N == 0 or D == 0:
        raise ValueError(f"X must have at least one row and one column, got shape {X.shape}")
    if (X_val is None) != (y_val is None):
        raise ValueError("X_val and y_val must be given together (got only one of them)")
    if X_val is not None:
        y_val = _check_data(X_val, y_val, "X_val", "y_val")
        if X_val.shape[1] != D:
            raise ValueError(f"X_val must have D = {D} columns like X, got shape {X_val.shape}")
    largest = max(int(y.max()), int(y_val.max()) if y_val is not None and y_val.size else 0)
    if num_classes is None:
        num_classes = largest + 1
    if not is_int(num_classes) or num_classes < 2 or num_classes <= largest:
        raise ValueError(f"num_classes must be an integer >= 2 and > the largest label {largest}, got {num_classes}")
    check(Train, epochs=epochs, lr_decay=lr_decay, init_scale=init_scale, seed=seed, l1_step=l1_step)
    check(SvmLoss, learning_rate=learning_rate, delta=delta)
    check(ElasticNet, strength=strength, beta=beta)
    if not is_int(train_accuracy_sample) or train_accuracy_sample < 1:
        raise ValueError(f"train_accuracy_sample={train_accuracy_sample!r}: should be an integer >= 1")
    if not is_int(batch_size) or not 1 <= batch_size <= N:
        raise ValueError(f"batch_size={batch_size!r} is out of range: allowed an integer in [1, N={N}]")
    if on_epoch is not None and not callable(on_epoch):
        raise ValueError(f"on_epoch must be callable or None, got {type(on_epoch).__name__}")
    # python floats: numpy treats them as "weak" scalars, so float32 arrays stay float32
    strength, beta, delta = float(strength), float(beta), float(delta)
    lr, lr_decay = float(learning_rate), float(lr_decay)
    proximal = l1_step == "proximal" and regularizer in ("l1", "elasticnet")
    if proximal:  # the gradient step gets the smooth part only: elastic net's beta W^2 is L2 at beta * strength
        smooth_fn, smooth_strength = get_regularizer("l2" if regularizer == "elasticnet" else "none"), strength * beta

    # ---- train ----
    # Per-epoch train accuracy on a fixed random subset (scoring all N rows every epoch would cost half
    # an epoch of GEMMs); the final epoch is scored on all rows. Its own generator: the training stream
    # does not depend on the sample size.
    sample = np.sort(np.random.default_rng([seed, 1]).permutation(N)[:train_accuracy_sample])
    X_sample, y_sample = (X, y) if len(sample) == N else (X[sample], y[sample])
    rng = np.random.default_rng(seed)
    W, b = init_weights(num_classes, D, rng, scale=float(init_scale), dtype=X.dtype)
    steps_per_epoch = math.ceil(N / batch_size)
    num_steps = epochs * steps_per_epoch
    history = History(
        data_loss=np.empty(num_steps), reg_loss=np.empty(num_steps), total_loss=np.empty(num_steps),
        train_accuracy=np.empty(epochs), val_accuracy=np.full(epochs, np.nan), learning_rate=np.empty(epochs),
        steps_per_epoch=steps_per_epoch,
    )
    # Buffers reused by every step (a fresh batch per step costs page faults, not just a copy).
    pixels = X if isinstance(X, Pixels) else None
    source = X if pixels is None else pixels.pixels  # what the minibatches are gathered from
    prefetch = batch_size * D * source.itemsize >= PREFETCH_MIN_BYTES
    X_bufs = [np.empty((batch_size, D), dtype=source.dtype) for _ in range(2 if prefetch else 1)]
    # uint8 pixels become float32 in the helper thread (the whole batch, beside the step) or else here, a block
    # of rows at a time (F_block) for each GEMM: the same values in GEMMs of the same blocks either way
    F_bufs = [np.empty((batch_size, D), dtype=X.dtype) for _ in X_bufs] if prefetch and pixels is not None else None
    F_block = None if pixels is None or F_bufs else np.empty((BLOCK_ROWS, D), dtype=X.dtype)
    scores_buf = np.empty((batch_size, num_classes), dtype=X.dtype)
    dW, dW_block = np.empty_like(W), np.empty_like(W)
    dW_reg = None if regularizer == "none" else np.empty_like(W)  # no penalty: nothing to add
    step = 0
    pool = ThreadPoolExecutor(1, thread_name_prefix="linclass-gather") if prefetch else None
    scorer = ThreadPoolExecutor(1, thread_name_prefix="linclass-score") if prefetch else None
    epoch_end = _EpochEnd(history, on_epoch, scorer)
    try:
        for epoch in range(epochs):
            order = rng.permutation(N)
            with np.errstate(over="ignore", invalid="ignore"):  # a blow-up is reported just below
                for idx, X_b in _minibatches(source, order, batch_size, X_bufs, pool, F_bufs):
                    y_b = y[idx]
                    scores = scores_buf[:len(idx)]
                    _batch_scores(X_b, W, b, pixels, F_block, out=scores)
                    data_value, dscores = loss_fn(scores, y_b, delta=delta, validate=False)  # y checked above
                    reg_value = 0.0
                    if dW_reg is not None:
                        reg_value, _ = reg_fn(W, strength, beta, out=dW_reg)
                        if proximal:  # the gradient step takes the smooth part only; |W| is a soft threshold below
                            smooth_fn(W, smooth_strength, out=dW_reg)
                    total = data_value + reg_value
                    if not math.isfinite(total):
                        raise DivergenceError(
                            f"training diverged at step {step + 1} (epoch {epoch + 1}): total loss = {total}; "
                            f"lower learning_rate (was {learning_rate:.3g})",
                            step=step + 1, epoch=epoch + 1, value=total)
                    dscores_sum = dscores.sum(axis=0)
                    _batch_gradient(dscores, X_b, dscores_sum, pixels, F_block, out=dW, tmp=dW_block)
                    if dW_reg is not None:
                        dW += dW_reg
                    dW *= lr
                    W -= dW
                    if proximal:
                        W -= np.clip(W, -lr * strength, lr * strength)
                    dscores_sum *= lr
                    b -= dscores_sum
                    history.data_loss[step], history.reg_loss[step] = data_value, reg_value
                    history.total_loss[step] = total
                    step += 1
            if not (np.isfinite(W).all() and np.isfinite(b).all()):  # the last update can overflow too
                raise DivergenceError(
                    f"training diverged at step {step} (epoch {epoch + 1}): weights are not finite after the update; "
                    f"lower learning_rate (was {learning_rate:.3g})", step=step, epoch=epoch + 1, value=float("nan"))
            history.learning_rate[epoch] = lr
            epoch_end.add(epoch, W, b, (X, y) if epoch == epochs - 1 else (X_sample, y_sample), (X_val, y_val))
            lr *= lr_decay
        epoch_end.flush()
    except DivergenceError:
        epoch_end.flush()   # the epoch before still reaches on_epoch
        raise
    finally:
        for helper in (pool, scorer):
            if helper is not None:
                helper.shutdown()
    return TrainResult(W=W, b=b, history=history)
