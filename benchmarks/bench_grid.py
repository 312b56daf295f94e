"""Benchmark the parallel grid: wall time of the 8 train stages as DVC queue experiments with 1 and
with 2 workers (`python -m linclass.orchestration.sweep grid --jobs J`, what `make grid-parallel` runs), and for
reference a plain serial `dvc repro` of the same 8 stages.

Not a test. Run: .venv/bin/python benchmarks/bench_grid.py [--epochs 20] [--jobs 1 2] [--no-serial]

Data: the real CIFAR-10 archive in ../shared/data when it is there (default training settings of
conf/, 49,000 training images), else a synthetic archive in the same layout (noted in the output).
Each measurement runs in its own fresh copy of the project (git init + commit), so that DVC's
run-cache of one cannot serve another; download and preprocess run first and are not timed. Timed:
queueing the 8 experiments + running them until the queue is empty (or the serial `dvc repro`).
Every train stage runs with one BLAS thread (train.blas_threads=1), as in the pipeline.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import BIN, PROJECT_FILES, ROOT, SHARED_CIFAR, SHARED_CIFAR_MD5  # noqa: E402  (one list of the project's files)

GRID = [f"{loss}-{reg}" for loss in ("svm", "softmax") for reg in ("none", "l1", "l2", "elasticnet")]


def environment() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", DVC_NO_ANALYTICS="1",
               GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@localhost",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@localhost")
    return env


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


def fresh_project(dest: Path, overrides: list[str], env: dict) -> Path:
    """A git + DVC copy of this project with params composed from conf/ + overrides, data preprocessed."""
    for name in PROJECT_FILES:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / name, target)
    run(["git", "init", "-q", "-b", "main"], dest, env)
    run([str(BIN / "python"), "-m", "linclass.cli", "config", *overrides], dest, env)
    run(["git", "add", "-A"], dest, env)
    run(["git", "commit", "-qm", "bench"], dest, env)
    run([str(BIN / "dvc"), "repro", "preprocess"], dest, env)
    run([str(BIN / "python"), "-m", "linclass.cli", "store"], dest, env)
    return dest


def time_queue(project: Path, jobs: int, overrides: list[str], env: dict) -> float:
    start = time.perf_counter()
    out = run([str(BIN / "python"), "-m", "linclass.cli", "grid", "--jobs", str(jobs), *overrides], project, env)
    seconds = time.perf_counter() - start
    most = [line for line in out.splitlines() if "ran at once" in line]
    print(f"  {most[0] if most else ''}")
    return seconds


def time_serial(project: Path, env: dict) -> float:
    start = time.perf_counter()
    run([str(BIN / "dvc"), "repro", *(f"train@{name}" for name in GRID)], project, env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="train.epochs (default: conf/'s)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-serial", action="store_true", help="skip the plain `dvc repro` reference")
    args = parser.parse_args()
    env = environment()

    with tempfile.TemporaryDirectory(prefix="bench-grid-") as tmp:
        tmp = Path(tmp)
        if SHARED_CIFAR.exists():
            data = [f"data.url={SHARED_CIFAR.as_uri()}", f"data.md5={SHARED_CIFAR_MD5}"]
            print(f"data: real CIFAR-10 ({SHARED_CIFAR})")
        else:
            from linclass.data.synthetic import make_synthetic_cifar10

            archive = tmp / "synthetic.tar.gz"
            md5 = make_synthetic_cifar10(archive, n_train=10_000, n_test=1_000, seed=0)
            data = [f"data.url={archive.as_uri()}", f"data.md5={md5}"]
            print(f"NOTE: {SHARED_CIFAR} not found: synthetic CIFAR-10-shaped data (10,000 training "
                  "images); the ratio says less about the real grid")
        overrides = data + ([f"train.epochs={args.epochs}"] if args.epochs else [])
        print(f"overrides: {' '.join(overrides[2:]) or '(none: conf/ defaults)'}; {os.cpu_count()} cores\n")

        results = {}
        if not args.no_serial:
            project = fresh_project(tmp / "serial", overrides, env)
            results["serial dvc repro"] = time_serial(project, env)
            print(f"serial `dvc repro` of the 8 train stages: {results['serial dvc repro']:.1f} s")
            shutil.rmtree(project)
        for jobs in args.jobs:
            project = fresh_project(tmp / f"jobs{jobs}", overrides, env)
            results[f"{jobs} worker(s)"] = seconds = time_queue(project, jobs, overrides, env)
            print(f"queue, {jobs} worker(s): {seconds:.1f} s")
            shutil.rmtree(project)

    print("\nwall time of the 8-combination grid")
    for name, seconds in results.items():
        print(f"  {name:20s} {seconds:7.1f} s")
    if "1 worker(s)" in results and "2 worker(s)" in results:
        print(f"speed-up of 2 workers over 1: {results['1 worker(s)'] / results['2 worker(s)']:.2f}x")
    if "serial dvc repro" in results and "2 worker(s)" in results:
        print(f"speed-up of 2 workers over serial dvc repro: "
              f"{results['serial dvc repro'] / results['2 worker(s)']:.2f}x")


if __name__ == "__main__":
    main()
