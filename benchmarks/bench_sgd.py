"""Benchmark an SGD epoch of linclass against (1) the bare GEMMs of that epoch and (2) scikit-learn.

Not a test. Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sgd.py [--rows 50000] [--repeats 5]
                                                  [--sklearn-rows N] [--only LOSS-REG ...]
(`make bench` does this.) Data: CIFAR-10-shaped made-up data (rows x 3072 float32, labels 0..9, seeded).

For every loss x regularizer, `repeats` rounds, each timing the three in turn (interleaved, so a machine
that gets busier slows all three alike; linclass and bare swap places every other round). The times shown
are medians over the rounds; the ratios are medians of the rounds' own ratios (paired, so a load that
changes between rounds cancels out). time.perf_counter throughout:
  linclass  the 2nd epoch of train_sgd(..., epochs=3, batch_size=200), from the on_epoch call after
            epoch 1 to the one after epoch 2: the steps with all their bookkeeping (loss and penalty
            history every step, train accuracy on the 5,000-row sample; no val set). Epoch 3 is not
            timed: the final epoch adds the scoring pass on all rows, once per run.
  bare      only the GEMMs of the same epoch: for the same batches (same seed, same permutation),
            the gather X_b = X[idx] into a reused buffer, S = X_b @ W.T and S.T @ X_b into reused
            buffers. The floor of a minibatch implementation that gathers and multiplies in turn.
                                                                   goal: linclass <= 1.15x bare
  overlap   the same, with each batch gathered in a helper thread while the GEMMs of the batch before
            run (as train_sgd does on batches of 256 KiB or more): the floor of linclass itself, shown
            so that the gain from the overlap is visible apart from the bookkeeping (no goal).
  sklearn   SGDClassifier(loss=hinge/log_loss, penalty=..., max_iter=1, tol=None, shuffle=True).fit,
            i.e. one epoch as scikit-learn runs it (one-vs-all over the 10 classes, float32 kept);
            if --sklearn-rows < rows it is timed on that subset and scaled per row.
                                                                   goal: sklearn / linclass >= 5x
Use one BLAS thread (as the pipeline's train stages do): OPENBLAS_NUM_THREADS=1, or --threads 1.
"""

import argparse
import math
import os
import statistics
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from linclass.core.model import init_weights
from linclass.core.sgd import _minibatches, train_sgd

LOSSES = ["svm", "squared_svm", "softmax"]
REGULARIZERS = ["none", "l1", "l2", "elasticnet"]
SKLEARN_LOSS = {"svm": "hinge", "softmax": "log_loss"}  # squared_svm has no multiclass sklearn counterpart
SKLEARN_PENALTY = {"none": None, "l1": "l1", "l2": "l2", "elasticnet": "elasticnet"}
BATCH_SIZE, SEED, NUM_CLASSES, DIM = 200, 0, 10, 3072
BARE_GOAL, SKLEARN_GOAL = 1.15, 5.0


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def linclass_epoch(X, y, loss, reg):
    """Seconds of the 2nd epoch of a 3-epoch train_sgd run (see the module docstring)."""
    stamps = []
    train_sgd(X, y, loss=loss, regularizer=reg, strength=0.0 if reg == "none" else 1e-4, learning_rate=1e-7,
              batch_size=BATCH_SIZE, epochs=3, seed=SEED, on_epoch=lambda epoch, history: stamps.append(
                  time.perf_counter()))
    return stamps[1] - stamps[0]


def bare_gemm_epoch(X, seed=SEED, overlap=False):
    """The GEMMs of one epoch with the same batches train_sgd uses (same rng draws), nothing else; with
    overlap=True each batch is gathered in a helper thread while the GEMMs of the one before run."""
    rng = np.random.default_rng(seed)
    W, _ = init_weights(NUM_CLASSES, X.shape[1], rng, dtype=X.dtype)
    order = rng.permutation(X.shape[0])
    X_bufs = [np.empty((BATCH_SIZE, X.shape[1]), dtype=X.dtype) for _ in range(2 if overlap else 1)]
    S_buf = np.empty((BATCH_SIZE, NUM_CLASSES), dtype=X.dtype)
    G = np.empty_like(W)
    with ThreadPoolExecutor(1) as pool:
        start = time.perf_counter()
        for idx, X_b in _minibatches(X, order, BATCH_SIZE, X_bufs, pool if overlap else None):
            S = np.matmul(X_b, W.T, out=S_buf[:len(idx)])
            np.matmul(S.T, X_b, out=G)
        return time.perf_counter() - start


def verdict(ok):
    return "PASS" if ok else "MISS"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000, help="training rows (default 50000, CIFAR-10)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; medians are reported (default 5)")
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
    combos = [(loss, reg) for loss in LOSSES for reg in REGULARIZERS]
    if args.only:
        unknown = sorted(set(args.only) - {f"{loss}-{reg}" for loss, reg in combos})
        if unknown:
            parser.error(f"--only: unknown combination(s) {', '.join(unknown)}; allowed LOSS-REG with LOSS in "
                         f"{LOSSES} and REG in {REGULARIZERS}")
        combos = [(loss, reg) for loss, reg in combos if f"{loss}-{reg}" in args.only]
    sklearn_rows = min(args.sklearn_rows or args.rows, args.rows)
    try:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import SGDClassifier
    except ImportError:
        SGDClassifier = None

    rng = np.random.default_rng(SEED)
    X = rng.standard_normal((args.rows, DIM), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, args.rows)
    threads = args.threads or os.environ.get("OPENBLAS_NUM_THREADS") or "default (all)"
    print(f"load average before start: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs "
          "(other processes skew timings; the ratios are measured side by side)")
    print(f"BLAS threads: {threads}")
    print(f"data: {args.rows} x {DIM} float32, {NUM_CLASSES} classes, batch {BATCH_SIZE}, "
          f"{math.ceil(args.rows / BATCH_SIZE)} steps/epoch, medians of {args.repeats} interleaved rounds")
    if SGDClassifier is None:
        print("scikit-learn not installed (pip install -e '.[bench]'): sklearn columns skipped")
    elif sklearn_rows < args.rows:
        print(f"sklearn timed on the first {sklearn_rows} rows and scaled by {args.rows / sklearn_rows:.2f} (per row)")

    header = (f"{'loss':12s} {'reg':10s} {'linclass s':>10s} {'bare s':>7s} {'/bare':>6s} {'goal':>5s} "
              f"{'overlap':>7s} {'/overlap':>8s} "
              f"{'sklearn s':>9s} {'speedup':>8s} {'goal':>5s}")
    print()
    print(header)
    print("-" * len(header))
    bare_ratios, speedups = [], []
    for loss, reg in combos:
        with_sklearn = SGDClassifier is not None and loss in SKLEARN_LOSS
        ours, bare, overlapped, theirs = [], [], [], []
        for round_ in range(args.repeats):
            if round_ % 2:
                bare.append(bare_gemm_epoch(X))
                overlapped.append(bare_gemm_epoch(X, overlap=True))
                ours.append(linclass_epoch(X, y, loss, reg))
            else:
                ours.append(linclass_epoch(X, y, loss, reg))
                overlapped.append(bare_gemm_epoch(X, overlap=True))
                bare.append(bare_gemm_epoch(X))
            if with_sklearn:
                model = SGDClassifier(loss=SKLEARN_LOSS[loss], penalty=SKLEARN_PENALTY[reg], alpha=1e-4, max_iter=1,
                                      tol=None, shuffle=True, random_state=SEED)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter=1 always "fails to converge"
                    theirs.append(timed(lambda model=model: model.fit(X[:sklearn_rows], y[:sklearn_rows]))
                                  * args.rows / sklearn_rows)
        ratio = statistics.median(o / b for o, b in zip(ours, bare))
        overlap_ratio = statistics.median(o / b for o, b in zip(ours, overlapped))
        bare_ratios.append(ratio)
        row = (f"{loss:12s} {reg:10s} {statistics.median(ours):10.3f} {statistics.median(bare):7.3f} {ratio:6.2f} "
               f"{verdict(ratio <= BARE_GOAL):>5s} {statistics.median(overlapped):7.3f} {overlap_ratio:8.2f} ")
        if with_sklearn:
            speedup = statistics.median(t / o for t, o in zip(theirs, ours))
            speedups.append(speedup)
            row += f"{statistics.median(theirs):9.3f} {speedup:8.1f} {verdict(speedup >= SKLEARN_GOAL):>5s}"
        else:
            row += f"{'n/a':>9s} {'n/a':>8s} {'':>5s}"
        print(row, flush=True)
    print()
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"goal: an epoch <= {BARE_GOAL}x its bare GEMMs: worst {max(bare_ratios):.2f}x -> "
          f"{verdict(max(bare_ratios) <= BARE_GOAL)}")
    if speedups:
        print(f"goal: an epoch >= {SKLEARN_GOAL:g}x faster than SGDClassifier: worst {min(speedups):.1f}x -> "
              f"{verdict(min(speedups) >= SKLEARN_GOAL)}")


if __name__ == "__main__":
    main()
