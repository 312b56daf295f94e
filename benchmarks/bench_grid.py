"""Benchmark the local queue: the 8-combination grid as DVC queue experiments with 1 and with 2 workers
(`linclass grid --jobs J`, what `make grid-parallel` runs), side by side with what bounds it on this machine:
two trainings at once against one (the cores' shared memory bandwidth and caches).

Not a test. Run: .venv/bin/python benchmarks/bench_grid.py [--epochs 20] [--repeats 1] [--link] [--serial]
                                                        [--features]

Data: the real CIFAR-10 archive in ../shared/data when it is there (49,000 training images), else a
synthetic archive in the same layout (noted in the output). Each grid runs in its own fresh copy of the
project (git init + commit), so that DVC's run-cache of one cannot serve another; download and preprocess
run first and are not timed. The grid is the 8 pixel combinations (grid.features=[]); --features adds the
features experiment of conf/ (one more experiment, which trains the 8 features models).
Timed: the whole `linclass grid` command, in three phases read from its output as it comes:
  set-up   the settings checked, the data stages and the MLflow store, the experiments queued (one
           `dvc exp run --queue` each);
  queue    `dvc exp run --run-all -j J` until every experiment has finished: the only phase the workers share;
  after    the table, then the whole pipeline once from DVC's run-cache (evaluate and the studies: the
           experiment grid-all).
Every train stage runs with one BLAS thread (train.blas_threads=1), as in the pipeline. Per experiment:
its training (the MLflow run of its train stage, start to end) and the rest of the queue phase's worker time
(queue x workers / experiments - training: DVC's copy of the project, composing params, restoring the data,
the stage's Python start-up, committing). --link: the copies' DVC checkouts link the project's cache
(cache.type hardlink) instead of copying the data into each. --serial: also a plain `dvc repro` of the 8
train stages.

CPU: the cores the whole machine keeps busy in the queue phase (CPU seconds of every process / seconds; run it on an
otherwise idle machine). One worker that keeps c cores busy bounds 2 workers on 2 cores to at most 2 / c times
faster, whatever the queue does.

Contention: the 2nd epoch of train_sgd on the grid's data shape (49,000 x 3,072 uint8, batch 200, one BLAS
thread), alone and as two processes at once, interleaved: 2 workers can be at most 2 / (at-once / alone)
times faster than 1 on two cores, whatever the queue does.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from common import BIN, ROOT, SHARED_CIFAR, SHARED_CIFAR_MD5, environment, load, make_project, run

from linclass.orchestration.sweep import conf_grid

GRID = [f"{loss}-{reg}" for loss in ("svm", "softmax") for reg in ("none", "l1", "l2", "elasticnet")]

EPOCH = """
import json, sys, time
import numpy as np
from linclass.core.pixels import Pixels
from linclass.core.sgd import train_sgd
rows = int(sys.argv[1])
rng = np.random.default_rng(0)
X = Pixels(rng.integers(0, 256, (rows, 3072), dtype=np.uint8), rng.random(3072).astype(np.float32) * 255, 255.0)
y = rng.integers(0, 10, rows)
stamps = []
train_sgd(X, y, loss="softmax", regularizer="l2", strength=1e-4, learning_rate=1e-7, batch_size=200, epochs=3,
          seed=0, on_epoch=lambda epoch, history: stamps.append(time.perf_counter()))
print(json.dumps(stamps[1] - stamps[0]))
"""


def epochs_at_once(count: int, rows: int, env: dict) -> float:
    """Median seconds of the 2nd epoch in `count` processes started together."""
    procs = [subprocess.Popen([sys.executable, "-c", EPOCH, str(rows)], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(count)]
    return statistics.median(json.loads(proc.communicate()[0]) for proc in procs)


def contention(rows: int, repeats: int, env: dict) -> tuple[float, float]:
    env = {**env, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    alone, together = [], []
    for _ in range(repeats):
        alone.append(epochs_at_once(1, rows, env))
        together.append(epochs_at_once(2, rows, env))
    return statistics.median(alone), statistics.median(together)


def fresh_project(dest: Path, overrides: list[str], link: bool) -> Path:
    """A git + DVC copy with params for the data, data preprocessed, the MLflow store created."""
    project = make_project(dest, overrides)
    if link:
        project.dvc("config", "--local", "cache.type", "hardlink,symlink,copy")
    project.dvc("repro", "preprocess")
    project.run(BIN / "python", "-m", "linclass.cli", "store")
    return dest


def trainings(project: Path) -> list[float]:
    """Seconds of every training run in the copy's store (start to end of the MLflow run)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("linclass-cifar10")
    runs = client.search_runs([experiment.experiment_id], max_results=1000) if experiment else []
    return [(r.info.end_time - r.info.start_time) / 1000 for r in runs if r.info.end_time]


PHASES = ("set-up", "queue", "after")


def busy() -> float:
    """CPU seconds the whole machine has spent busy (every core, every process) so far."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - times.iowait


def time_grid(project: Path, jobs: int, overrides: list[str], env: dict) -> dict[str, float]:
    """Seconds of each phase of `linclass grid --jobs J` (PHASES), of the whole command ("wall"), and the cores
    the machine kept busy on average in the queue phase ("cores": CPU seconds / seconds, all processes)."""
    cmd = [str(BIN / "python"), "-m", "linclass.cli", "grid", "--jobs", str(jobs), *overrides]
    start = time.perf_counter()
    marks, cpu = {}, {}
    lines = []
    # unbuffered: each line arrives when printed (a pipe would hold them all until the command exits)
    with subprocess.Popen(cmd, cwd=project, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "queue" not in marks and re.match(r"\d+ experiments, \d+ at a time", line):
                marks["queue"], cpu["queue"] = time.perf_counter(), busy()
            elif "after" not in marks and line.startswith("queue done in"):
                marks["after"], cpu["after"] = time.perf_counter(), busy()
    end = time.perf_counter()
    if proc.returncode != 0 or len(marks) != 2:
        sys.exit(f"error: {' '.join(cmd)} exited {proc.returncode} in {project}\n{''.join(lines[-40:])}")
    return {"set-up": marks["queue"] - start, "queue": marks["after"] - marks["queue"], "after": end - marks["after"],
            "wall": end - start, "cores": (cpu["after"] - cpu["queue"]) / (marks["after"] - marks["queue"])}


def time_serial(project: Path, env: dict) -> float:
    start = time.perf_counter()
    run([BIN / "dvc", "repro", *(f"train@{name}" for name in GRID)], project, env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="train.epochs (default: conf/'s)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds of 1 and 2 workers")
    parser.add_argument("--link", action="store_true", help="the queue's checkouts link the cache (hardlink)")
    parser.add_argument("--serial", action="store_true", help="also a plain `dvc repro` of the 8 train stages")
    parser.add_argument("--features", action="store_true", help="also the features experiment of conf/'s grid")
    parser.add_argument("--contention-repeats", type=int, default=5)
    args = parser.parse_args()
    env = environment()

    with tempfile.TemporaryDirectory(prefix="bench-grid-") as tmp:
        base = Path(tmp)
        if SHARED_CIFAR.exists():
            data, rows = [f"data.url={SHARED_CIFAR.as_uri()}", f"data.md5={SHARED_CIFAR_MD5}"], 49_000
            print(f"data: real CIFAR-10 ({SHARED_CIFAR})")
        else:
            from linclass.data.synthetic import make_synthetic_cifar10

            archive = base / "synthetic.tar.gz"
            md5 = make_synthetic_cifar10(archive, n_train=10_000, n_test=1_000, seed=0)
            data, rows = [f"data.url={archive.as_uri()}", f"data.md5={md5}"], 9_000
            print(f"NOTE: {SHARED_CIFAR} not found: synthetic CIFAR-10-shaped data (10,000 training images); the "
                  "ratio says less about the real grid")
        overrides = data + ([f"train.epochs={args.epochs}"] if args.epochs else []) + \
            ([] if args.features else ["grid.features=[]"])
        print(f"overrides: {' '.join(overrides[2:]) or '(none: conf/ defaults)'}; "
              f"checkouts {'linked' if args.link else 'copied (DVC default)'}; {load()}\n")

        alone, together = contention(rows, args.contention_repeats, env)
        print(f"one SGD epoch ({rows:,} rows): alone {alone:.3f} s, two at once {together:.3f} s each -> "
              f"{together / alone:.2f}x slower; 2 workers can be at most {2 * alone / together:.2f}x 1 worker  "
              f"({load()})")

        experiments = len(GRID) + (0 if not args.features else len(conf_grid(ROOT / "conf", overrides)["features"]))
        phases: dict[int, list[dict[str, float]]] = {1: [], 2: []}
        walls: dict[str, list[float]] = {}
        train: dict[str, list[float]] = {}
        for repeat in range(args.repeats):
            for jobs in (1, 2):
                project = fresh_project(base / f"r{repeat}-jobs{jobs}", overrides, args.link)
                label = f"{jobs} worker(s)"
                phases[jobs].append(time_grid(project, jobs, overrides, env))
                walls.setdefault(label, []).append(phases[jobs][-1]["queue"])
                train.setdefault(label, []).extend(trainings(project))
                times = ", ".join(f"{k} {phases[jobs][-1][k]:.1f} s" for k in (*PHASES, "wall"))
                times += f"; the queue phase kept {phases[jobs][-1]['cores']:.2f} cores busy"
                print(f"  round {repeat + 1}, {label}: {times}  ({load()})", flush=True)
                shutil.rmtree(project)
            if args.serial:
                project = fresh_project(base / f"r{repeat}-serial", overrides, args.link)
                walls.setdefault("serial dvc repro", []).append(time_serial(project, env))
                train.setdefault("serial dvc repro", []).extend(trainings(project))
                print(f"  round {repeat + 1}: serial `dvc repro`: {walls['serial dvc repro'][-1]:.1f} s", flush=True)
                shutil.rmtree(project)

    print(f"\n`linclass grid` of {experiments} experiments, medians of {args.repeats} round(s)  ({load()})")
    print(f"  {'':12s}" + "".join(f"{name:>9s}" for name in (*PHASES, "wall")))
    for jobs, rounds in phases.items():
        print(f"  {jobs} worker(s) " + "".join(f"{statistics.median(r[k] for r in rounds):8.1f}s"
                                            for k in (*PHASES, "wall")))
    print(f"\nthe queue phase, per experiment  ({load()})")
    print(f"  {'':20s} {'queue':>8s} {'training':>9s} {'other per experiment':>21s} {'CPU per experiment':>19s}")
    cores = {jobs: statistics.median(r["cores"] for r in rounds) for jobs, rounds in phases.items()}
    for label, values in walls.items():
        wall, trained = statistics.median(values), statistics.median(train[label])
        workers = 2 if label.startswith("2") else 1
        cpu = f"{cores[workers] * wall / experiments:18.1f}s" if not label.startswith("serial") else ""
        print(f"  {label:20s} {wall:7.1f}s {trained:8.1f}s {wall * workers / experiments - trained:20.1f}s {cpu}")
    one, two = statistics.median(walls["1 worker(s)"]), statistics.median(walls["2 worker(s)"])
    whole = [statistics.median(r["wall"] for r in phases[jobs]) for jobs in (1, 2)]
    print(f"2 workers are {one / two:.2f}x 1 worker in the queue phase (the trainings alone allow "
          f"{2 * alone / together:.2f}x; 1 worker already keeps {cores[1]:.2f} cores busy, so on 2 cores 2 workers "
          f"can be at most {2 / cores[1]:.2f}x); the whole command {whole[0] / whole[1]:.2f}x")


if __name__ == "__main__":
    main()
