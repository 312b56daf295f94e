"""What a train stage's MLflow logging costs, the old way against the new, in one process.

A real train stage (the defaults: 40 epochs x 245 steps) logs 3 per-step curves of 9,800 values.
Old: every value, synchronously (29,400 metric rows). New: window means, at most 1,000 points a
curve (2,940 rows), written by a helper thread while the pictures are drawn. For the two asynchronous
ways (MLflow's async queue, which the stage used before, and the stage's own helper thread) the time
until the run has ended is shown too: MLflow's queue polls once a second, and ending the run waits for
that poll. Also: the store set-up (once per process) and the MLflow Model (pyfunc, explicit requirements).
Medians of interleaved repeats, each into a fresh run of one temporary sqlite store.

    .venv/bin/python benchmarks/bench_logging.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

STEPS = 40 * 245  # the defaults: 40 epochs x 245 steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    t0 = time.perf_counter()
    from mlflow.tracking import MlflowClient

    from linclass.tracking import records, registry, runs
    imported = time.perf_counter() - t0
    root = Path(tempfile.mkdtemp(prefix="bench-logging-"))
    t0 = time.perf_counter()
    experiment_id = runs.setup("bench", f"sqlite:///{root / 'mlflow.db'}", root=root)
    set_up = time.perf_counter() - t0
    client = MlflowClient()
    curves = {k: np.random.default_rng(i).random(STEPS) for i, k in enumerate(("data_loss", "reg_loss", "total_loss"))}
    rng = np.random.default_rng(0)
    W, b = (rng.standard_normal((10, 3072)) * 1e-3).astype(np.float32), np.zeros(10, np.float32)
    mean = rng.random(3072).astype(np.float32) * 255
    example = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    names = [f"class{i}" for i in range(10)]

    def old(run_id):
        client.log_batch(run_id, metrics=[m for k, v in curves.items()
                                          for m in records.history_metrics(k, v, range(1, STEPS + 1))])

    def new_sync(run_id):
        metrics = []
        for key, values in curves.items():
            steps, means = records.curve_points(values)
            metrics += records.history_metrics(key, means, steps)
        client.log_batch(run_id, metrics=metrics)

    def chart_metrics():
        metrics = []
        for key, values in curves.items():
            steps, means = records.curve_points(values)
            metrics += records.history_metrics(key, means, steps)
        return metrics

    def mlflow_async(run_id, _background):  # MLflow's async queue: an operation to wait for
        return client.log_batch(run_id, metrics=chart_metrics(), synchronous=False).wait

    def helper_thread(run_id, background):  # what the stage does now
        return background.submit(client.log_batch, run_id, metrics=chart_metrics()).result

    def model(run_id):
        registry.log_classifier(W, b, names, "softmax", example=example, mean_image=mean, scale=255.0)

    synchronous: dict[str, Callable[[str], Any]] = {
        "old: 29,400 rows sync": old, "new: 2,940 rows sync": new_sync, "MLflow Model (pyfunc)": model}
    asynchronous: dict[str, Callable[[str, ThreadPoolExecutor], Callable[[], Any]]] = {
        "MLflow async queue": mlflow_async, "helper thread": helper_thread}
    times: dict[str, list[float]] = {k: [] for k in synchronous}
    times.update({f"{k}: {what}": [] for k in asynchronous for what in ("submit", "+wait", "+end run")})
    with ThreadPoolExecutor(1) as background:
        for _ in range(args.repeats):
            for label, fn in synchronous.items():
                with runs.tracked_run(experiment_id, label) as run:
                    t0 = time.perf_counter()
                    fn(run.info.run_id)
                    times[label].append(time.perf_counter() - t0)
            for label, submit in asynchronous.items():
                with runs.tracked_run(experiment_id, label) as run:
                    t0 = time.perf_counter()
                    wait = submit(run.info.run_id, background)
                    times[f"{label}: submit"].append(time.perf_counter() - t0)
                    wait()
                    times[f"{label}: +wait"].append(time.perf_counter() - t0)
                times[f"{label}: +end run"].append(time.perf_counter() - t0)
    print(f"import linclass.tracking (runs, records, registry): {imported:.2f} s; store set-up (once): {set_up:.2f} s")
    base = statistics.median(times["old: 29,400 rows sync"])
    for label, values in times.items():
        median = statistics.median(values)
        print(f"{label:32s} median {median:6.2f} s  ({median / base:5.2f} x old)")


if __name__ == "__main__":
    main()
