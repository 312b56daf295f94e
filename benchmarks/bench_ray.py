"""Benchmark the Ray sweep backend: a sweep on a 1-node and on a 2-node Ray cluster (one CPU per node, loopback
addresses), where a point's time goes, and what the MLflow server receives.

Not a test. Run: .venv/bin/python benchmarks/bench_ray.py [--repeats 3] [--points 4] [--train 5000] [--epochs 10]
                                                       [--real]   (`make bench-ray` does this)

Set-up (not timed): a real MLflow server on 127.0.0.1 (sqlite, artifacts served), a folder as the team's DVC
remote, a bare git repository as the git remote, a copy of this project with a synthetic archive in the
CIFAR-10 layout (--train images; --real: the real archive in ../shared/data, 49,000 training images, 20 epochs
unless --epochs), and two Ray clusters that stay up for the whole benchmark, as a team's cluster does: one
node (127.0.0.6) and two nodes (127.0.0.7, 127.0.0.8), each node with a work folder of its own.
First, one sweep on each cluster's fresh nodes (clone, data pulled, warm interpreter started): shown apart.
Then `--repeats` rounds, 1 and 2 nodes interleaved, each sweep with a seed of its own (train.seed) so that
DVC's run-cache never serves a point: every point trains. Timed: `run_sweep` (what `make sweep BACKEND=ray`
runs) from the driver's checks to the pulled experiments and settled runs.
Per point: its own `dvc exp run` (`run`) plus its share of its task's set-up (`checkout`: the commit, `data`:
the data stages' outputs, `warm`: starting the warm interpreter) and push (`push`: experiments, new run-cache
entries); its training is its MLflow run (start to end of the train stage's run); its overhead is the sum
minus the training. Requests: the MLflow server's access log lines during each sweep (per point, the busiest
second, the kinds of request).
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import SHARED_CIFAR, SHARED_CIFAR_MD5, free_port, load, make_project_with_remotes, mlflow_server

from linclass.orchestration import cluster as ray_cluster
from linclass.orchestration.ray_backend import run_sweep
from linclass.orchestration.sweep import sweep_points

NODES = {1: ("127.0.0.6", ()), 2: ("127.0.0.7", ("127.0.0.8",))}
SHARES = ("checkout", "data", "warm", "push")
ACCESS = re.compile(r'^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) INFO:\s+\S+ - "(\w+) (\S+) HTTP')


def start_clusters(base: Path, sizes: list[int]) -> dict[int, ray_cluster.Cluster]:
    clusters = {}
    try:
        for nodes in sizes:
            head, workers = NODES[nodes]
            clusters[nodes] = ray_cluster.start(head, workers, port=free_port(head), node_envs={
                ip: {"LINCLASS_RAY_WORKDIR": str(base / "nodes" / ip)} for ip in (head, *workers)})
    except BaseException:
        for started in clusters.values():
            ray_cluster.stop(started)
        raise
    return clusters


def training_seconds(url: str, run_ids: list[str]) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    infos = {run_id: client.get_run(run_id).info for run_id in run_ids if run_id}
    return {run_id: (info.end_time - info.start_time) / 1000 for run_id, info in infos.items()}


def requests(log: Path, offset: int) -> list[tuple[str, str]]:
    """(second, 'METHOD /path') of every request the server logged after `offset` bytes."""
    with open(log, errors="replace") as f:
        f.seek(offset)
        return [(m.group(1), f"{m.group(2)} {m.group(3).split('?')[0]}") for line in f if (m := ACCESS.match(line))]


def server_cpu(server) -> float:
    """CPU seconds used so far by the MLflow server's processes (the server and its workers)."""
    import psutil

    total = 0.0
    root = psutil.Process(server.pid)
    for process in (root, *root.children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) if folder.exists() else 0


def one_sweep(cluster, points, overrides: list[str], project, url: str, server) -> dict:
    server_log = server.log
    offset = server_log.stat().st_size
    cpu = server_cpu(server.proc)
    stores = {"MLflow artifacts": server.log.parent / "artifacts", "DVC remote": project.path.parent / "dvc-remote",
              "git remote": project.path.parent / "origin.git"}
    before = {name: folder_bytes(folder) for name, folder in stores.items()}
    os.environ["MLFLOW_TRACKING_URI"] = url
    start = time.perf_counter()
    results = run_sweep(points, overrides, root=project.path, address=cluster.address, log=lambda line: None)
    wall = time.perf_counter() - start
    failed = [r for r in results if not r["ok"]]
    if failed:
        sys.exit(f"{len(failed)} points failed: {failed[0]['error']} (log: {failed[0].get('log')})")
    train = training_seconds(url, [r["run_id"] for r in results])
    for result in results:
        result["train"] = train.get(result["run_id"], float("nan"))
        result["wall"] = sum(result["seconds"].values())
    time.sleep(1)   # the access log's last lines
    spans = [r["span"] for r in results if r.get("span") and r["span"][1]]
    nodes_phase = max(end for _, end in spans) - min(begin for begin, _ in spans) if spans else float("nan")
    return {"wall": wall, "results": results, "requests": requests(server_log, offset), "nodes_phase": nodes_phase,
            "server_cpu": server_cpu(server.proc) - cpu, "nodes_used": sorted({r["node"] for r in results}),
            "bytes": {name: folder_bytes(folder) - before[name] for name, folder in stores.items()}}


def describe_requests(sweeps: list[dict], points: int) -> list[str]:
    seen = [request for sweep in sweeps for request in sweep["requests"]]
    walls = [sweep["wall"] for sweep in sweeps]
    per_second = collections.Counter(second for sweep in sweeps for second, _ in sweep["requests"])
    kinds = collections.Counter(kind for _, kind in seen).most_common(6)
    cpu = sum(sweep["server_cpu"] for sweep in sweeps)
    return [f"  MLflow server: {len(seen) / len(sweeps) / points:.1f} requests a point, {len(seen) / sum(walls):.1f}/s "
            f"on average over the sweeps, {max(per_second.values(), default=0)} in the busiest second; "
            f"{cpu / len(sweeps) / points:.2f} s of its CPU a point "
            f"({1000 * cpu / max(len(seen), 1):.0f} ms a request)",
            "  most frequent: " + ", ".join(f"{kind} {count / len(sweeps) / points:.1f}" for kind, count in kinds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--points", type=int, default=4, help="points per sweep (learning rates x 2 strengths)")
    parser.add_argument("--train", type=int, default=5000, help="synthetic training images")
    parser.add_argument("--epochs", type=int, default=None, help="default 10 (synthetic), 20 (--real)")
    parser.add_argument("--real", action="store_true", help="the real CIFAR-10 archive in ../shared/data")
    parser.add_argument("--nodes", type=int, nargs="+", choices=sorted(NODES), default=sorted(NODES),
                        help="cluster sizes to run (default: 1 and 2)")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    if args.real:
        if not SHARED_CIFAR.exists():
            sys.exit(f"--real needs {SHARED_CIFAR}")
        data = [f"data.url={SHARED_CIFAR.as_uri()}", f"data.md5={SHARED_CIFAR_MD5}"]
        label, epochs = "real CIFAR-10 (49,000 training images)", args.epochs or 20
    else:
        from linclass.data.synthetic import make_synthetic_cifar10

        archive = base / "cifar-10-python.tar.gz"
        md5 = make_synthetic_cifar10(archive, n_train=args.train, n_test=500, seed=0)
        data = [f"data.url={archive.as_uri()}", f"data.md5={md5}", "preprocess.val_size=500"]
        label, epochs = f"synthetic, {args.train - 500} training images", args.epochs or 10
    overrides = [*data, f"train.epochs={epochs}"]
    learning_rates = [0.01 * (i + 1) for i in range((args.points + 1) // 2)]
    points = sweep_points("svm", "l2", learning_rates, [1e-3, 1e-2])[:args.points]
    print(f"{len(points)} points (svm-l2, {epochs} epochs, {label}); 1 CPU per node; {args.repeats} interleaved "
          f"rounds; {load()}", flush=True)

    with mlflow_server(base / "mlflow") as server:
        url = server.url
        project = make_project_with_remotes(base, overrides)
        clusters = start_clusters(base, args.nodes)
        try:
            first = {}
            for nodes, cluster in clusters.items():
                first[nodes] = one_sweep(cluster, points, [*overrides, f"train.seed={900 + nodes}"], project, url,
                                         server)
                print(f"  first sweep on fresh nodes, {nodes} node(s): {first[nodes]['wall']:.1f} s  ({load()})",
                      flush=True)
            sweeps: dict[int, list[dict]] = {nodes: [] for nodes in clusters}
            for repeat in range(args.repeats):
                for nodes, cluster in clusters.items():
                    done = one_sweep(cluster, points, [*overrides, f"train.seed={100 * repeat + nodes}"], project,
                                     url, server)
                    sweeps[nodes].append(done)
                    print(f"  round {repeat + 1}, {nodes} node(s) {'+'.join(done['nodes_used'])}: {done['wall']:.1f} s "
                          f"for {len(points)} points  ({load()})", flush=True)
        finally:
            for started in clusters.values():
                ray_cluster.stop(started)

    walls = {nodes: statistics.median(s["wall"] for s in done) for nodes, done in sweeps.items()}
    print("\nsweep wall time, median: " + ", ".join(f"{n} node(s) {w:.1f} s" for n, w in walls.items())
          + f"  ({load()})")
    if len(walls) == 2:
        print(f"2 nodes are {walls[1] / walls[2]:.2f}x ({len(points) / walls[1] * 60:.1f} vs "
              f"{len(points) / walls[2] * 60:.1f} points/min)")
    phases = {nodes: statistics.median(s["nodes_phase"] for s in done) for nodes, done in sweeps.items()}
    print("of which the nodes' part (first group's start to last group's end), median: "
          + ", ".join(f"{n} node(s) {p:.1f} s" for n, p in phases.items())
          + (f" -> 2 nodes are {phases[1] / phases[2]:.2f}x there; the driver's own part "
             f"{walls[1] - phases[1]:.1f} s and {walls[2] - phases[2]:.1f} s" if len(phases) == 2 else ""))
    for nodes in sweeps:
        results = [r for sweep in sweeps[nodes] for r in sweep["results"]]
        steps = {step: statistics.median(r["seconds"].get(step, 0.0) for r in results) for step in ("run", *SHARES)}
        wall, train = statistics.median(r["wall"] for r in results), statistics.median(r["train"] for r in results)
        overhead = statistics.median(r["wall"] - r["train"] for r in results)
        print(f"{nodes} node(s), per point, median s: " + ", ".join(f"{k} {v:.2f}" for k, v in steps.items())
              + f"; wall {wall:.2f}, training (MLflow run) {train:.2f}")
        print(f"  per point overhead {overhead:.2f} s")
        print("\n".join(describe_requests(sweeps[nodes], len(points))))
        grown = {name: statistics.median(s["bytes"][name] for s in sweeps[nodes]) / len(points) / 1e3
                 for name in sweeps[nodes][0]["bytes"]}
        print("  stored a point: " + ", ".join(f"{name} {kb:.0f} kB" for name, kb in grown.items()))
    for nodes, done in first.items():
        results = done["results"]
        print(f"first sweep on fresh nodes, {nodes} node(s): {done['wall']:.1f} s; per point overhead "
              f"{statistics.median(r['wall'] - r['train'] for r in results):.2f} s (" + ", ".join(
                  f"{k} {statistics.median(r['seconds'].get(k, 0.0) for r in results):.2f}" for k in SHARES) + ")")


if __name__ == "__main__":
    main()
