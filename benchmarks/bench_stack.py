"""The team stack's costs: its start time, its memory, and a training run logged to it vs the local sqlite store.

    .venv/bin/python benchmarks/bench_stack.py [--repeats 5] [--epochs 10]

Starts a private stack (python -m linclass.orchestration.services up, in a temporary folder, on free ports),
prepares a copy of the project on the synthetic archive (1,000 training images), then runs the same
train stage (`python pipeline/train.py --loss softmax --regularizer l2`) alternately against the local
sqlite store and the stack, and prints the medians. The difference is what logging through the
server costs (params, per-epoch and per-step metrics, the dataset, ~14 artifacts incl. 10 PNGs).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import environment, free_port, make_project


def services(env: dict, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "linclass.cli", "services", *args], env=env, check=True,
                          capture_output=True, text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    from linclass.data.synthetic import make_synthetic_cifar10

    base = Path(tempfile.mkdtemp(prefix="linclass-bench-stack-", dir="/tmp"))
    base.chmod(0o755)
    env = {**os.environ, "LINCLASS_SERVICES_DIR": str(base / "services"), "LINCLASS_MLFLOW_PORT": str(free_port()),
           "LINCLASS_PG_PORT": str(free_port())}
    try:
        first = time.monotonic()
        services(env, "up")
        first = time.monotonic() - first
        services(env, "down")
        again = time.monotonic()
        services(env, "up")
        again = time.monotonic() - again
        idle = services(env, "status")

        archive = base / "cifar-10-python.tar.gz"
        md5 = make_synthetic_cifar10(archive, n_train=1100, n_test=200, seed=0)
        project = make_project(base / "project", (f"data.url={archive.as_uri()}", f"data.md5={md5}",
                                                  "preprocess.val_size=100", f"train.epochs={args.epochs}",
                                                  "train.batch_size=50"), environment())
        project.dvc("repro", "preprocess")
        user = dict(line.removeprefix("export ").split("=", 1) for line in
                    (base / "services/users/admin.env").read_text().split("\n") if line)
        user = {k: v.strip("'") for k, v in user.items()}
        train = [sys.executable, "pipeline/train.py", "--loss", "softmax", "--regularizer", "l2"]
        stage_env = {**project.env, "PYTHONPATH": "src", "OPENBLAS_NUM_THREADS": "1"}
        times: dict[str, list[float]] = {"sqlite": [], "stack": []}
        for _ in range(args.repeats):
            for store, extra in (("sqlite", {}), ("stack", user)):
                start = time.monotonic()
                project.run(*train, env={**stage_env, **extra})
                times[store].append(time.monotonic() - start)
        busy = services(env, "status")
    finally:
        subprocess.run([sys.executable, "-m", "linclass.cli", "services", "down"], env=env, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)

    sqlite, stack = statistics.median(times["sqlite"]), statistics.median(times["stack"])
    print(f"stack start: {first:.1f} s the first time (initdb, schema), {again:.1f} s later")
    print("memory (RSS), idle:\n  " + idle.strip().replace("\n", "\n  "))
    print("memory (RSS), after the runs:\n  " + busy.strip().replace("\n", "\n  "))
    print(f"train stage ({args.epochs} epochs, 1,000 images), median of {args.repeats} interleaved runs:")
    print(f"  local sqlite store  {sqlite:6.2f} s   {json.dumps([round(t, 2) for t in times['sqlite']])}")
    print(f"  team stack          {stack:6.2f} s   {json.dumps([round(t, 2) for t in times['stack']])}")
    print(f"  logging to the stack costs {stack - sqlite:+.2f} s a run ({stack / sqlite:.2f}x)")


if __name__ == "__main__":
    main()
