"""Benchmark the Ray sweep backend: wall time of one sweep on a 1-node and on a 2-node Ray cluster
(one CPU per node, loopback addresses), and where a point's time goes: clone + pull + push (the
overhead of running it away from the driver) against its training.

Not a test. Run: .venv/bin/python benchmarks/bench_ray.py [--repeats 3] [--points 4] [--train 5000] [--epochs 10]

Set-up (not timed): a real MLflow server on 127.0.0.1 (sqlite, artifacts served), a folder as the
team's DVC remote, a bare git repository as the git remote, and a copy of this project with a
synthetic archive in the CIFAR-10 layout (--train images; --real: the real archive in ../shared).
Timed: `run_sweep` (what `make sweep BACKEND=ray` runs) from the driver's data check to the pulled
experiments, with 1 and 2 nodes interleaved, `--repeats` times. Each sweep gets a seed of its own
(train.seed), so that DVC's run-cache never serves a point: every point trains.
Per point: clone (git clone + checkout), pull (`dvc fetch --run-cache`), run (`dvc exp run --pull`:
composing params, restoring download + preprocess from the run-cache with their outputs pulled from
the remote, train, evaluate, DVC's commits), push (`dvc exp push --run-cache`); the training itself is
the MLflow run's duration (start to end of the train stage's run).

Measured on the shared 2-core machine (load 7-11 from other jobs, so the ratio is noisy): 4 points,
5,000 synthetic images, 10 epochs: 1 node 170.5 s, 2 nodes 141.0 s (1.21x); per point clone 0.2 s,
pull 4.2 s, run 37.1 s, push 3.8 s, of which training 4.8 s.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import (  # noqa: E402
    MLFLOW_SERVER_ENV,
    SHARED_CIFAR,
    SHARED_CIFAR_MD5,
    env_for_pipeline,
    free_port,
    make_project_with_remotes,
    mlflow_server_cmd,
    serving,
)

from linclass.orchestration import cluster as ray_cluster  # noqa: E402
from linclass.orchestration.ray_backend import run_sweep  # noqa: E402
from linclass.orchestration.sweep import sweep_points  # noqa: E402

HEAD, WORKER = "127.0.0.6", "127.0.0.7"


@contextlib.contextmanager
def mlflow_server(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serving(mlflow_server_cmd(folder, port), url, folder / "server.log", env={**env_for_pipeline(), **MLFLOW_SERVER_ENV}):
        yield url


def training_seconds(url: str, run_ids: list[str]) -> list[float]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    runs = [client.get_run(run_id).info for run_id in run_ids if run_id]
    return [(run.end_time - run.start_time) / 1000 for run in runs]


def one_sweep(nodes: int, points, overrides: list[str], project, url: str) -> dict:
    workers = (WORKER,) if nodes == 2 else ()
    cluster = ray_cluster.start(HEAD, workers, port=free_port(HEAD))
    try:
        os.environ["MLFLOW_TRACKING_URI"] = url
        start = time.perf_counter()
        results = run_sweep(points, overrides, root=project.path, address=cluster.address, log=lambda line: None)
        wall = time.perf_counter() - start
    finally:
        ray_cluster.stop(cluster)
    failed = [r for r in results if not r["ok"]]
    if failed:
        sys.exit(f"{len(failed)} points failed: {failed[0]['error']}")
    return {"wall": wall, "results": results, "train": training_seconds(url, [r["run_id"] for r in results]),
            "nodes_used": sorted({r["node"] for r in results})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--points", type=int, default=4, help="points per sweep (learning rates x 2 strengths)")
    parser.add_argument("--train", type=int, default=5000, help="synthetic training images")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--real", action="store_true", help="the real CIFAR-10 archive in ../shared/data")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    if args.real:
        if not SHARED_CIFAR.exists():
            sys.exit(f"--real needs {SHARED_CIFAR}")
        data = [f"data.url={SHARED_CIFAR.as_uri()}", f"data.md5={SHARED_CIFAR_MD5}"]
        label = "real CIFAR-10 (49,000 training images)"
    else:
        from linclass.data.synthetic import make_synthetic_cifar10

        archive = base / "cifar-10-python.tar.gz"
        md5 = make_synthetic_cifar10(archive, n_train=args.train, n_test=500, seed=0)
        data = [f"data.url={archive.as_uri()}", f"data.md5={md5}", "preprocess.val_size=500"]
        label = f"synthetic, {args.train - 500} training images"
    overrides = [*data, f"train.epochs={args.epochs}"]
    learning_rates = [0.01 * (i + 1) for i in range((args.points + 1) // 2)]
    points = sweep_points("svm", "l2", learning_rates, [1e-3, 1e-2])[:args.points]
    print(f"{len(points)} points (svm-l2, {args.epochs} epochs, {label}); 1 CPU per node; "
          f"{args.repeats} interleaved repeats; machine load {os.getloadavg()[0]:.1f}")

    with mlflow_server(base / "mlflow") as url:
        project = make_project_with_remotes(base, overrides)
        walls: dict[int, list[float]] = {1: [], 2: []}
        steps: dict[str, list[float]] = {}
        for repeat in range(args.repeats):
            for nodes in (1, 2):
                seed = [f"train.seed={100 * repeat + nodes}"]
                done = one_sweep(nodes, points, overrides + seed, project, url)
                walls[nodes].append(done["wall"])
                for result in done["results"]:
                    for step, seconds in result["seconds"].items():
                        steps.setdefault(step, []).append(seconds)
                steps.setdefault("train (MLflow run)", []).extend(done["train"])
                print(f"  repeat {repeat + 1}, {nodes} node(s) {'+'.join(done['nodes_used'])}: "
                      f"{done['wall']:.1f} s for {len(points)} points")

    one, two = statistics.median(walls[1]), statistics.median(walls[2])
    print(f"\nsweep wall time, median: 1 node {one:.1f} s, 2 nodes {two:.1f} s -> 2 nodes are {one / two:.2f}x "
          f"the throughput of 1 ({len(points) / one * 60:.1f} vs {len(points) / two * 60:.1f} points/min)")
    print("per point, median seconds:")
    medians = {step: statistics.median(values) for step, values in steps.items()}
    for step, value in medians.items():
        print(f"  {step:<20} {value:6.1f}")
    overhead = medians["clone"] + medians["pull"] + medians["push"]
    print(f"  overhead clone + pull + push = {overhead:.1f} s against {medians['train (MLflow run)']:.1f} s of "
          f"training ({overhead / medians['train (MLflow run)']:.2f}x); the rest of `run` "
          f"({medians['run'] - medians['train (MLflow run)']:.1f} s) is DVC restoring the data, evaluate, "
          "and DVC's bookkeeping")


if __name__ == "__main__":
    main()
