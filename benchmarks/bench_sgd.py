"""Benchmark an SGD epoch of linclass on uint8 pixels against its floors: memory, GEMMs, today's float32.

Not a test. Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sgd.py [--rows 49000] [--repeats 5]
                                                  [--sklearn] [--sklearn-rows N] [--only LOSS-REG ...]
(`make bench` does this.) Data: CIFAR-10-shaped made-up images (rows x 3072 uint8, labels 0..9, seeded) with
their mean image and scale 255: linclass trains on them as Pixels (the centring folded into the arithmetic).

For every loss x regularizer, `repeats` rounds, each timing all columns in turn (interleaved, so a machine
that gets busier slows them alike; the order turns every round). The times shown are medians over the
rounds; the ratios are medians of the rounds' own ratios (paired, so a load that changes between rounds
cancels out). time.perf_counter throughout:
  epoch     one epoch of train_sgd(Pixels, ..., epochs=3, batch_size=200), from its on_epoch call for epoch 1
            to the one for epoch 2: the steps with all their bookkeeping (loss and penalty history every
            step, train accuracy on the 5,000-row sample; no val set). With the helper threads an epoch is
            reported once scored, during the next one, so this times epoch 3's steps (epoch 2's scoring
            beside them); the scoring pass on all rows after the final epoch is not timed either way.
  in turn   the same epoch with every minibatch gathered in this thread before its step (train_sgd gathers
            the next one in a helper thread while this one computes, for batches of PREFETCH_MIN_BYTES or more)
  memory    the memory floor: the uint8 rows of every minibatch of the epoch (same permutation) gathered
            into a reused buffer, nothing else: the training data streamed once, in the order SGD reads it.
  gemm      the GEMM floor: the two GEMMs of every step, float32, on 32-row blocks of one batch that stays
            in the L2 cache (S_k = F_k W^T, dW = sum_k S_k^T F_k): what the arithmetic costs without
            moving any data.
  float32   today's floor before this change: float32 design matrix rows gathered into a reused buffer, then
            S = X_b W^T and S^T X_b on the whole batch (the floor of the float32 implementation).
  sklearn   (--sklearn) SGDClassifier(loss=hinge/log_loss, penalty=..., max_iter=1, tol=None).fit on the
            float32 design matrix, one epoch as scikit-learn runs it; if --sklearn-rows < rows it is timed
            on that subset and scaled per row.
Goal (issue 21): a 40-epoch train stage, whole process with DVC, <= 0.75x today's float32 floor of its 40
epochs. Printed here: the epoch / float32 ratio, and what 40 such epochs leave of that budget for the rest
of the stage (`make bench-stage` measures the stage itself). Last, the arithmetic's own floor: this core's
float32 GEMM peak (a 2048 x 2048 GEMM), the rate of the step's GEMMs on a 32-row block, and an epoch's GEMMs
at the peak.
Use one BLAS thread (as the pipeline's train stages do): OPENBLAS_NUM_THREADS=1, or --threads 1.
"""

import argparse
import math
import os
import statistics
import time
import warnings

import numpy as np

from linclass.core import sgd
from linclass.core.model import init_weights
from linclass.core.pixels import BLOCK_ROWS, Pixels, design_matrix, row_blocks
from linclass.core.sgd import _minibatches, train_sgd

LOSSES = ["svm", "squared_svm", "softmax"]
REGULARIZERS = ["none", "l1", "l2", "elasticnet"]
SKLEARN_LOSS = {"svm": "hinge", "softmax": "log_loss"}  # squared_svm has no multiclass sklearn counterpart
SKLEARN_PENALTY = {"none": None, "l1": "l1", "l2": "l2", "elasticnet": "elasticnet"}
BATCH_SIZE, SEED, NUM_CLASSES, DIM, SCALE = 200, 0, 10, 3072, 255.0
STAGE_EPOCHS, STAGE_GOAL = 40, 0.75


def linclass_epoch(X, y, loss, reg):
    """Seconds of the 2nd epoch of a 3-epoch train_sgd run (see the module docstring)."""
    stamps = []
    train_sgd(X, y, loss=loss, regularizer=reg, strength=0.0 if reg == "none" else 1e-4, learning_rate=1e-7,
              batch_size=BATCH_SIZE, epochs=3, seed=SEED, on_epoch=lambda epoch, history: stamps.append(
                  time.perf_counter()))
    return stamps[1] - stamps[0]


def in_turn_epoch(X, y, loss, reg):
    """linclass_epoch with the gather in this thread (no helper thread)."""
    saved, sgd.PREFETCH_MIN_BYTES = sgd.PREFETCH_MIN_BYTES, math.inf
    try:
        return linclass_epoch(X, y, loss, reg)
    finally:
        sgd.PREFETCH_MIN_BYTES = saved


def epoch_order(n, seed=SEED):
    """The permutation of train_sgd's first epoch (the same rng draws: W first, then the order)."""
    rng = np.random.default_rng(seed)
    init_weights(NUM_CLASSES, DIM, rng)
    return rng.permutation(n)


def memory_epoch(pixels):
    """Every minibatch's uint8 rows gathered into a reused buffer, in the epoch's order."""
    order = epoch_order(len(pixels))
    buffer = [np.empty((BATCH_SIZE, pixels.shape[1]), dtype=np.uint8)]
    start = time.perf_counter()
    for _ in _minibatches(pixels, order, BATCH_SIZE, buffer):
        pass
    return time.perf_counter() - start


def gemm_epoch(n):
    """Both GEMMs of every step of an n-row epoch on the 32-row blocks of one L2-resident float32 batch."""
    rng = np.random.default_rng(SEED)
    W, _ = init_weights(NUM_CLASSES, DIM, rng)
    F = rng.integers(0, 256, (BATCH_SIZE, DIM)).astype(np.float32)
    S, G, G_block = np.empty((BATCH_SIZE, NUM_CLASSES), np.float32), np.empty_like(W), np.empty_like(W)
    steps = [min(BATCH_SIZE, n - lo) for lo in range(0, n, BATCH_SIZE)]
    start = time.perf_counter()
    for rows in steps:
        blocks = row_blocks(rows, BLOCK_ROWS)
        for lo, hi in blocks:
            np.matmul(F[lo:hi], W.T, out=S[lo:hi])
        for k, (lo, hi) in enumerate(reversed(blocks)):
            np.matmul(S[lo:hi].T, F[lo:hi], out=G_block if k else G)
            if k:
                G += G_block
    return time.perf_counter() - start


def float32_epoch(X):
    """Today's floor: float32 rows gathered into a reused buffer, then both GEMMs on the whole batch."""
    rng = np.random.default_rng(SEED)
    W, _ = init_weights(NUM_CLASSES, X.shape[1], rng, dtype=X.dtype)
    order = rng.permutation(X.shape[0])
    X_buf = [np.empty((BATCH_SIZE, X.shape[1]), dtype=X.dtype)]
    S_buf, G = np.empty((BATCH_SIZE, NUM_CLASSES), dtype=X.dtype), np.empty_like(W)
    start = time.perf_counter()
    for idx, X_b in _minibatches(X, order, BATCH_SIZE, X_buf):
        S = np.matmul(X_b, W.T, out=S_buf[:len(idx)])
        np.matmul(S.T, X_b, out=G)
    return time.perf_counter() - start


def gemm_rates(n=2048, repeats=5):
    """GFLOP/s of this core (one BLAS thread): its peak, a large square float32 GEMM (n x n), and the step's two
    GEMMs on one 32-row block (F W^T and S^T F, as gemm_epoch runs them); best of `repeats`."""
    rng = np.random.default_rng(SEED)
    A, B = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    F, W = rng.random((BLOCK_ROWS, DIM), dtype=np.float32), rng.random((NUM_CLASSES, DIM), dtype=np.float32)
    S, G = np.empty((BLOCK_ROWS, NUM_CLASSES), np.float32), np.empty_like(W)
    block_flop = 2 * BLOCK_ROWS * DIM * NUM_CLASSES
    cases = {"peak": (lambda: np.matmul(A, B), 1, 2 * n ** 3),
             "scores": (lambda: np.matmul(F, W.T, out=S), 1000, block_flop),
             "gradient": (lambda: np.matmul(S.T, F, out=G), 1000, block_flop)}
    rates = {}
    for name, (fn, calls, flop) in cases.items():
        fn()
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best = min(best, time.perf_counter() - start)
        rates[name] = flop * calls / best / 1e9
    return rates


def sklearn_epoch(X_float, y, loss, reg, rows):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import SGDClassifier

    model = SGDClassifier(loss=SKLEARN_LOSS[loss], penalty=SKLEARN_PENALTY[reg], alpha=1e-4, max_iter=1, tol=None,
                          shuffle=True, random_state=SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter=1 always "fails to converge"
        start = time.perf_counter()
        model.fit(X_float[:rows], y[:rows])
        return (time.perf_counter() - start) * len(X_float) / rows


def load():
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=49_000, help="training rows (default 49000, CIFAR-10's split)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; medians are reported (default 5)")
    parser.add_argument("--sklearn", action="store_true", help="also time scikit-learn's SGDClassifier (slow)")
    parser.add_argument("--sklearn-rows", type=int, default=None,
                        help="time sklearn on this many rows and scale per row (default: all rows)")
    parser.add_argument("--threads", type=int, default=None,
                        help="limit BLAS threads (threadpoolctl, installed with scikit-learn); default: "
                             "OPENBLAS_NUM_THREADS or all")
    parser.add_argument("--only", nargs="*", default=None, metavar="LOSS-REG",
                        help="only these combinations, e.g. svm-l2 softmax-none (default: all 12)")
    args = parser.parse_args()
    if args.threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.threads)
    if args.rows < BATCH_SIZE:
        parser.error(f"--rows must be >= {BATCH_SIZE}, got {args.rows}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    combos = [(loss, reg) for loss in LOSSES for reg in REGULARIZERS]
    if args.only:
        unknown = sorted(set(args.only) - {f"{loss}-{reg}" for loss, reg in combos})
        if unknown:
            parser.error(f"--only: unknown combination(s) {', '.join(unknown)}; allowed LOSS-REG with LOSS in "
                         f"{LOSSES} and REG in {REGULARIZERS}")
        combos = [(loss, reg) for loss, reg in combos if f"{loss}-{reg}" in args.only]
    sklearn_rows = min(args.sklearn_rows or args.rows, args.rows)
    if args.sklearn:
        try:
            import sklearn  # noqa: F401
        except ImportError:
            parser.error("--sklearn needs scikit-learn: pip install -e '.[bench]'")

    rng = np.random.default_rng(SEED)
    pixels = rng.integers(0, 256, (args.rows, DIM), dtype=np.uint8)
    mean = pixels[:5000].mean(axis=0, dtype=np.float64).astype(np.float32)
    X = Pixels(pixels, mean, SCALE)
    y = rng.integers(0, NUM_CLASSES, args.rows)
    X_float = np.concatenate([design_matrix(pixels[lo:hi], mean, SCALE) for lo, hi in row_blocks(args.rows, 4096)])
    threads = args.threads or os.environ.get("OPENBLAS_NUM_THREADS") or "default (all)"
    print(f"load average before start: {load()} on {os.cpu_count()} CPUs "
          "(other processes skew timings; the ratios are measured side by side)")
    print(f"BLAS threads: {threads}")
    print(f"data: {args.rows} x {DIM} uint8 ({pixels.nbytes / 1e6:.0f} MB; as float32 {X_float.nbytes / 1e6:.0f} MB), "
          f"{NUM_CLASSES} classes, batch {BATCH_SIZE}, {math.ceil(args.rows / BATCH_SIZE)} steps/epoch, "
          f"medians of {args.repeats} interleaved rounds")
    if args.sklearn and sklearn_rows < args.rows:
        print(f"sklearn timed on the first {sklearn_rows} rows and scaled by {args.rows / sklearn_rows:.2f} (per row)")

    header = (f"{'loss':12s} {'reg':10s} {'epoch s':>8s} {'in turn':>8s} {'memory s':>8s} {'gemm s':>7s} "
              f"{'float32 s':>9s} {'/in turn':>8s} {'/memory':>7s} {'/gemm':>6s} {'/float32':>8s}"
              + (f" {'sklearn s':>9s} {'speedup':>7s}" if args.sklearn else ""))
    print()
    print(header)
    print("-" * len(header))
    columns = {"epoch": lambda loss, reg: linclass_epoch(X, y, loss, reg),
               "in turn": lambda loss, reg: in_turn_epoch(X, y, loss, reg),
               "memory": lambda loss, reg: memory_epoch(pixels),
               "gemm": lambda loss, reg: gemm_epoch(args.rows),
               "float32": lambda loss, reg: float32_epoch(X_float)}
    epochs, floats = [], []
    for loss, reg in combos:
        with_sklearn = args.sklearn and loss in SKLEARN_LOSS
        times = {name: [] for name in columns}
        theirs = []
        for round_ in range(args.repeats):
            names = list(columns)[round_ % len(columns):] + list(columns)[:round_ % len(columns)]  # turn the order
            for name in names:
                times[name].append(columns[name](loss, reg))
            if with_sklearn:
                theirs.append(sklearn_epoch(X_float, y, loss, reg, sklearn_rows))
        med = {name: statistics.median(values) for name, values in times.items()}
        ratio = {name: statistics.median(e / t for e, t in zip(times["epoch"], values))
                 for name, values in times.items()}
        epochs.append(med["epoch"])
        floats.append(med["float32"])
        row = (f"{loss:12s} {reg:10s} {med['epoch']:8.3f} {med['in turn']:8.3f} {med['memory']:8.3f} "
               f"{med['gemm']:7.3f} {med['float32']:9.3f} {ratio['in turn']:8.2f} {ratio['memory']:7.2f} "
               f"{ratio['gemm']:6.2f} {ratio['float32']:8.2f}")
        if with_sklearn:
            speedup = statistics.median(t / e for t, e in zip(theirs, times["epoch"]))
            row += f" {statistics.median(theirs):9.3f} {speedup:7.1f}"
        print(row, flush=True)
    print()
    print(f"load average at the end: {load()}")
    epoch, today = statistics.median(epochs), statistics.median(floats)
    budget = STAGE_GOAL * STAGE_EPOCHS * today
    print(f"epoch {min(epochs):.3f}-{max(epochs):.3f} s over the combinations (median {epoch:.3f} s); today's "
          f"float32 floor {min(floats):.3f}-{max(floats):.3f} s (median {today:.3f} s)")
    print(f"issue 21: a {STAGE_EPOCHS}-epoch train stage <= {STAGE_GOAL}x today's float32 floor of its epochs = "
          f"{STAGE_GOAL} x {STAGE_EPOCHS} x {today:.3f} s = {budget:.1f} s; {STAGE_EPOCHS} epochs of SGD here "
          f"{STAGE_EPOCHS * epoch:.1f} s ({epoch / today:.2f}x the float32 floor, medians), leaving "
          f"{budget - STAGE_EPOCHS * epoch:.1f} s for the rest of the stage")
    rates = gemm_rates()
    steps = math.ceil(args.rows / BATCH_SIZE)
    flop = 2 * 2 * args.rows * DIM * NUM_CLASSES   # two GEMMs a step, 2 flop a multiply-add
    print(f"this core's float32 GEMM peak (one thread, 2048 x 2048): {rates['peak']:.1f} GFLOP/s; the step's GEMMs "
          f"on 32-row blocks: {rates['scores']:.1f} (scores) and {rates['gradient']:.1f} (gradient) GFLOP/s. An "
          f"epoch's {flop / 1e9:.1f} GFLOP ({steps} steps) take {flop / rates['peak'] / 1e9:.3f} s at the peak")

if __name__ == "__main__":
    main()
