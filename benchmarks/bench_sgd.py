"""Benchmark one SGD epoch of linclass against (1) the bare GEMMs of that epoch and (2) scikit-learn.

Not a test. Run: .venv/bin/python benchmarks/bench_sgd.py [--rows 50000] [--repeats 3] [--sklearn-rows N]
                                                           [--threads T]

Data: CIFAR-10-shaped made-up data (rows x 3072 float32, labels 0..9, seeded). Every timing is the best of
`repeats` runs in this process (time.perf_counter).
  ours      one epoch of a longer train_sgd(..., batch_size=200) run, for every loss x regularizer:
            time(epochs=2) - time(epochs=1), i.e. an epoch with its per-epoch bookkeeping (loss history,
            train accuracy on the 5,000-row sample, val none). "1-epoch run" is train_sgd(epochs=1) whole:
            set-up plus an epoch plus the final train accuracy on all rows (the "scoring pass").
  bare      only the GEMMs of the same epoch: for the same batches (same seed, same permutation),
            the gather X_b = X[idx], S = X_b @ W.T and dW = S.T @ X_b.      goal: ours <= 1.2x bare
  sklearn   SGDClassifier(loss=hinge/log_loss, penalty=..., max_iter=1, tol=None, shuffle=True).fit,
            one epoch (one-vs-all over the 10 classes); if --sklearn-rows < rows it is timed on that
            subset and scaled per row.                                       goal: ours >= 5x faster
"""

import argparse
import math
import os
import time
import warnings

import numpy as np

from linclass.core.model import init_weights, predict
from linclass.core.sgd import train_sgd

LOSSES = ["svm", "squared_svm", "softmax"]
REGULARIZERS = ["none", "l1", "l2", "elasticnet"]
SKLEARN_LOSS = {"svm": "hinge", "softmax": "log_loss"}  # squared_svm has no multiclass sklearn counterpart
SKLEARN_PENALTY = {"none": None, "l1": "l1", "l2": "l2", "elasticnet": "elasticnet"}
BATCH_SIZE, SEED, NUM_CLASSES, DIM = 200, 0, 10, 3072
BARE_GOAL, SKLEARN_GOAL = 1.2, 5.0


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bare_gemm_epoch(X, seed=SEED):
    """The GEMMs of one epoch with the same batches train_sgd uses (same rng draws), nothing else."""
    rng = np.random.default_rng(seed)
    W, _ = init_weights(NUM_CLASSES, X.shape[1], rng, dtype=X.dtype)
    order = rng.permutation(X.shape[0])
    for start in range(0, X.shape[0], BATCH_SIZE):
        X_b = X[order[start:start + BATCH_SIZE]]
        S = X_b @ W.T
        S.T @ X_b


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000, help="training rows (default 50000, CIFAR-10)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs (default 3)")
    parser.add_argument("--sklearn-rows", type=int, default=None,
                        help="time sklearn on this many rows and scale per row (default: all rows)")
    parser.add_argument("--threads", type=int, default=None,
                        help="limit BLAS threads (threadpoolctl); 1 is steadier on a busy machine (default: all)")
    args = parser.parse_args()
    if args.threads is not None:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn

        threadpool_limits(limits=args.threads)
    if args.rows < BATCH_SIZE:
        parser.error(f"--rows must be >= {BATCH_SIZE}, got {args.rows}")
    sklearn_rows = min(args.sklearn_rows or args.rows, args.rows)

    rng = np.random.default_rng(SEED)
    X = rng.standard_normal((args.rows, DIM), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, args.rows)
    print(f"load average before start: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs "
          "(other processes skew timings)")
    print(f"BLAS threads: {args.threads or 'default (all)'}")
    print(f"data: {args.rows} x {DIM} float32, {NUM_CLASSES} classes, batch {BATCH_SIZE}, "
          f"{math.ceil(args.rows / BATCH_SIZE)} steps/epoch, best of {args.repeats}")

    bare = best_time(lambda: bare_gemm_epoch(X), args.repeats)
    W, b = init_weights(NUM_CLASSES, DIM, np.random.default_rng(SEED), dtype=X.dtype)
    scoring = best_time(lambda: predict(X, W, b), args.repeats)
    print(f"bare GEMMs of one epoch (gather + X_b @ W.T + dS.T @ X_b): {bare:.3f} s (re-timed per row below)")
    print(f"scoring pass (train accuracy on all {args.rows} rows, one GEMM): {scoring:.3f} s (re-timed per row)")

    try:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import SGDClassifier
    except ImportError:
        SGDClassifier = None
        print("scikit-learn not installed: sklearn columns skipped")
    if SGDClassifier is not None and sklearn_rows < args.rows:
        print(f"sklearn timed on the first {sklearn_rows} rows and scaled by {args.rows / sklearn_rows:.2f} (per row)")

    header = (f"{'loss':12s} {'reg':10s} {'ours s':>8s} {'bare s':>7s} {'/bare':>6s} {'<=1.2x':>6s} "
              f"{'scoring':>7s} {'1-epoch run':>11s} {'/(bare+scoring)':>15s} {'sklearn s':>9s} {'speedup':>8s} {'>=5x':>5s}")
    print()
    print(header)
    print("-" * len(header))
    all_bare_met, all_sklearn_met = True, True
    for loss in LOSSES:
        for reg in REGULARIZERS:
            strength = 0.0 if reg == "none" else 1e-4
            # ours, the bare GEMMs and the scoring pass are timed interleaved, so a busy machine slows all alike
            one_epoch, two_epochs, bare, scoring = math.inf, math.inf, math.inf, math.inf
            run = lambda epochs: train_sgd(X, y, loss=loss, regularizer=reg, strength=strength,  # noqa: E731
                                           learning_rate=1e-7, batch_size=BATCH_SIZE, epochs=epochs, seed=SEED)
            for _ in range(args.repeats):
                bare = min(bare, best_time(lambda: bare_gemm_epoch(X), 1))
                scoring = min(scoring, best_time(lambda: predict(X, W, b), 1))
                one_epoch = min(one_epoch, best_time(lambda: run(1), 1))
                two_epochs = min(two_epochs, best_time(lambda: run(2), 1))
            ours = two_epochs - one_epoch
            ratio = ours / bare
            all_bare_met &= ratio <= BARE_GOAL
            row = (f"{loss:12s} {reg:10s} {ours:8.3f} {bare:7.3f} {ratio:6.2f} "
                   f"{'yes' if ratio <= BARE_GOAL else 'NO':>6s} {scoring:7.3f} {one_epoch:11.3f} "
                   f"{one_epoch / (bare + scoring):15.2f} ")
            if SGDClassifier is not None and loss in SKLEARN_LOSS:
                model_kwargs = dict(loss=SKLEARN_LOSS[loss], penalty=SKLEARN_PENALTY[reg], alpha=1e-4, max_iter=1,
                                    tol=None, shuffle=True, random_state=SEED)
                X_sub, y_sub = X[:sklearn_rows], y[:sklearn_rows]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter=1 always "fails to converge"
                    theirs = best_time(lambda: SGDClassifier(**model_kwargs).fit(X_sub, y_sub), min(args.repeats, 2))
                theirs *= args.rows / sklearn_rows
                speedup = theirs / one_epoch  # sklearn's fit also does its set-up: compare whole runs
                all_sklearn_met &= speedup >= SKLEARN_GOAL
                row += f"{theirs:9.3f} {speedup:8.1f} {'yes' if speedup >= SKLEARN_GOAL else 'NO':>5s}"
            else:
                row += f"{'n/a':>9s} {'n/a':>8s} {'':>5s}"
            print(row, flush=True)
    print()
    print(f"goal ours <= {BARE_GOAL}x bare GEMMs: {'met' if all_bare_met else 'NOT met'} for all combinations "
          "(ours = an epoch of a multi-epoch run; the 1-epoch run adds the full scoring pass: /(bare+scoring))")
    if SGDClassifier is not None:
        print(f"goal ours >= {SKLEARN_GOAL}x faster than sklearn: {'met' if all_sklearn_met else 'NOT met'} "
              "for all compared combinations")


if __name__ == "__main__":
    main()
