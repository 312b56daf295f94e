"""Many experiments at once with DVC's queue: the loss x regularizer grid, or a learning rate x
regularization strength sweep of one combination, selected on the validation split.

    python -m linclass.plumbing.sweep grid [--jobs 2] [override ...]
    python -m linclass.plumbing.sweep sweep --loss softmax --regularizer l2 \\
        --learning-rates 0.01,0.02,0.05 --strengths 1e-4,1e-3,1e-2 [--jobs 2] [override ...]
    python -m linclass.plumbing.sweep table [--prefix sweep-softmax-l2-] [--csv sweeps/softmax-l2.csv]

A sweep writes its table to sweeps/<loss>-<regularizer>.csv (replacing the one of an earlier sweep of that
combination); the stage `hyperparameter_map` draws it as a learning rate x strength heat map
(`dvc repro hyperparameter_map`, or `dvc repro` for the report too).

`override`s are Hydra overrides shared by every point (e.g. data.url=... data.md5=... train.epochs=5).

Each point is one DVC experiment, `dvc exp run --queue -n <name> -S <override> ... <target>`: DVC
composes conf/ with the overrides into that experiment's params.yaml and later runs the target and
what it needs (download, preprocess: restored from the cache) in a copy of the project under
.dvc/tmp/exps/. A grid point trains its combination (target train@<loss>-<reg>); `make grid-parallel`
then runs `dvc repro` in the workspace, which takes all 8 trained models from DVC's run-cache and
evaluates them together. A sweep point also evaluates (target evaluate), so that its table shows the
test accuracy next to the validation accuracy that selects.
`dvc queue start -j N` runs N experiments at once. Every train stage runs with train.blas_threads
BLAS threads (1 by default), so N workers keep N cores busy without oversubscribing them and the
results are bit-identical to a serial run.

Once, before the workers start: params.yaml is composed with the shared overrides and the data
stages run in the workspace (the experiments then restore their outputs from DVC's run-cache instead
of preprocessing again), and the MLflow store and experiment are created (two processes cannot
safely create a fresh sqlite store at the same time). Every stage logs to the project's store, also
from inside .dvc/tmp/exps/ (see linclass.plumbing.tracking.project_root), tagged with its experiment's name.

Queueing a point replaces an earlier experiment of the same name on this commit (names carry only
the loss, regularizer, learning rate and strength). A point that DVC has already trained with the
same code, data and params is not trained again: its train stage comes from the run-cache, and its
MLflow run is that earlier run (evaluation still adds its test accuracy there).

The table comes from `dvc exp show --json`, not from MLflow: DVC knows exactly which experiments
belong to this grid or sweep (by name, on this commit), with the params that made them and the
metrics they wrote, under the names that `dvc exp apply` takes. MLflow holds the same runs, tagged
`dvc_exp_name`, with their curves, for the UI.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

GRID_LOSSES = ("svm", "softmax")
GRID_REGULARIZERS = ("none", "l1", "l2", "elasticnet")
FINAL_STATES = ("Success", "Failed")


class SweepError(RuntimeError):
    """The queue could not run; the message is one line and says what to do."""


@dataclass(frozen=True)
class Point:
    """One experiment: its DVC name, the Hydra overrides that make it and the stage it runs up to."""
    name: str
    overrides: tuple[str, ...]
    target: str


def grid_points(losses: Iterable[str] = GRID_LOSSES,
                regularizers: Iterable[str] = GRID_REGULARIZERS) -> list[Point]:
    """One experiment per (loss, regularizer), each training only that combination."""
    regularizers = list(regularizers)
    return [Point(f"grid-{loss}-{reg}", (f"grid.losses=[{loss}]", f"grid.regularizers=[{reg}]"),
                  f"train@{loss}-{reg}")
            for loss in losses for reg in regularizers]


def sweep_points(loss: str, regularizer: str, learning_rates: Sequence[float],
                 strengths: Sequence[float]) -> list[Point]:
    """One experiment per (learning rate, strength) of the combination loss-regularizer."""
    for name, values in (("learning rate", learning_rates), ("strength", strengths)):
        if not values:
            raise ValueError(f"no {name} values given; give at least one, e.g. 0.01,0.02")
    return [Point(f"sweep-{loss}-{regularizer}-lr{lr:g}-s{strength:g}",
                  (f"grid.losses=[{loss}]", f"grid.regularizers=[{regularizer}]",
                   f"loss.{loss}.learning_rate={lr!r}", f"regularizer.{regularizer}.strength={strength!r}"),
                  "evaluate")
            for lr in learning_rates for strength in strengths]


def parse_floats(text: str, what: str) -> list[float]:
    """'0.01,0.02,1e-3' -> [0.01, 0.02, 0.001]; a bad item raises ValueError naming it."""
    values = []
    for item in text.split(","):
        try:
            values.append(float(item))
        except ValueError:
            raise ValueError(f"{what}: {item.strip()!r} is not a number; give comma-separated "
                             f"numbers, e.g. 0.01,0.02") from None
        if not values[-1] > 0:
            raise ValueError(f"{what}: {item.strip()!r} is not > 0")
    return values


# ---- talking to DVC ----

def _dvc() -> str:
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.exists() else (shutil.which("dvc") or "dvc")


def dvc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run([_dvc(), *args], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise SweepError(f"dvc {' '.join(args[:3])} failed: {detail[-1] if detail else proc.returncode}")
    return proc


@dataclass(frozen=True)
class Task:
    """One row of `dvc queue status`."""
    id: str
    name: str
    state: str       # Queued | Running | Success | Failed


def queue_status() -> tuple[list[Task], int]:
    """The tasks that `dvc queue status` lists, and the number of queue workers alive."""
    tasks, workers = [], 0
    for line in dvc("queue", "status").stdout.splitlines():
        fields = line.split()   # "1affd57  grid-svm-none  08:43 AM  Running"
        if line.startswith("Worker status:"):   # "Worker status: 1 active, 1 idle"
            workers = sum(int(f) for f in fields if f.isdigit())
        elif len(fields) >= 3 and fields[0] != "Task" and fields[-1] in (*FINAL_STATES, "Queued", "Running"):
            tasks.append(Task(fields[0], fields[1], fields[-1]))
    return tasks, workers


def prepare(overrides: Sequence[str]) -> None:
    """Compose params.yaml, run the data stages and create the MLflow store, once, before the workers."""
    from linclass.plumbing import tracking
    from linclass.plumbing.config import load_params, write_params

    try:
        write_params(overrides=overrides)
    except Exception as exc:  # Hydra's override and composition errors
        raise SweepError(f"cannot compose conf/ with {' '.join(overrides)}: "
                         f"{str(exc).splitlines()[0]}") from None
    print(f"params.yaml composed from conf/{' with ' + ' '.join(overrides) if overrides else ''}")
    proc = subprocess.run([_dvc(), "repro", "preprocess"], env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if proc.returncode != 0:
        raise SweepError("the data stages failed (dvc repro preprocess); fix them before queueing experiments")
    cfg = load_params()["tracking"]
    experiment_id = tracking.setup(cfg["experiment"], cfg["uri"])
    print(f"MLflow store {tracking.mlflow.get_tracking_uri()}: "
          f"experiment {cfg['experiment']!r} (id {experiment_id})")


def enqueue(points: Sequence[Point], overrides: Sequence[str]) -> set[str]:
    """Queue one experiment per point; an earlier experiment of the same name (on this commit) is replaced.

    Returns the ids of the tasks that were in the queue before (finished ones, kept for `dvc queue logs`).
    """
    tasks, _ = queue_status()
    busy = sorted(task.name for task in tasks if task.state not in FINAL_STATES)
    if busy:
        raise SweepError(f"the DVC queue already has unfinished experiments ({', '.join(busy)}); "
                         "wait for them or remove them (`dvc queue remove --queued`)")
    existing = set(dvc("exp", "ls", "--name-only").stdout.split())
    replaced = [p.name for p in points if p.name in existing]
    if replaced:
        dvc("exp", "remove", *replaced)
        print(f"replaced earlier experiments: {', '.join(replaced)}")
    for point in points:
        sets = [arg for override in (*overrides, *point.overrides) for arg in ("-S", override)]
        dvc("exp", "run", "--queue", "-n", point.name, *sets, point.target)
        print(f"queued {point.name}: {' '.join(point.overrides)}")
    return {task.id for task in tasks}


@dataclass
class QueueResult:
    states: dict[str, str]      # experiment name -> Success | Failed
    most_running: int           # the most experiments seen running at the same time


def run_queue(points: Sequence[Point], jobs: int, earlier_tasks: Iterable[str] = (),
              timeout: float | None = None, poll: float = 2.0) -> QueueResult:
    """Start `jobs` workers; wait until every point's experiment (a task not in `earlier_tasks`) finished."""
    earlier_tasks = set(earlier_tasks)
    names = [p.name for p in points]
    # The workers outlive `dvc queue start`: they must not inherit pipes that someone waits on.
    started = subprocess.run([_dvc(), "queue", "start", "-j", str(jobs)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if started.returncode != 0:
        raise SweepError(f"dvc queue start -j {jobs} failed (exit {started.returncode}); try it by hand")
    print(f"{len(names)} experiments, {jobs} at a time "
          "(follow with `dvc queue status`, `dvc queue logs <name>`)")
    start = no_worker_since = time.monotonic()
    most_running = 0
    try:
        while True:
            tasks, workers = queue_status()
            states = {task.name: task.state for task in tasks if task.id not in earlier_tasks}
            mine = {name: states.get(name, "Queued") for name in names}
            most_running = max(most_running, sum(state == "Running" for state in mine.values()))
            if all(state in FINAL_STATES for state in mine.values()):
                print(f"queue done in {time.monotonic() - start:.0f} s; at most {most_running} ran at once")
                return QueueResult(mine, most_running)
            now = time.monotonic()
            if workers:
                no_worker_since = now
            elif now - no_worker_since > 60:
                raise SweepError("experiments are still queued but no DVC queue worker is running; "
                                 "start them again with `dvc queue start -j N`")
            if timeout is not None and now - start > timeout:
                raise SweepError(f"the queue did not finish within {timeout:g} s")
            time.sleep(poll)
    except BaseException:
        dvc("queue", "stop", "--kill", check=False)   # never leave workers running behind us
        raise


# ---- reading the results ----

def _combination(params: dict) -> tuple[str, str] | None:
    grid = params.get("grid", {})
    losses, regs = grid.get("losses") or [], grid.get("regularizers") or []
    return (losses[0], regs[0]) if len(losses) == 1 and len(regs) == 1 else None


def experiment_rows(exp_show: list, prefix: str) -> list[dict]:
    """One row per DVC experiment whose name starts with `prefix`, from `dvc exp show --json`."""
    rows = []
    for baseline in exp_show:
        for experiment in baseline.get("experiments") or []:
            name = experiment.get("name") or ""
            revs = experiment.get("revs") or []
            if not name.startswith(prefix) or not revs or not revs[0].get("data"):
                continue
            data = revs[0]["data"]
            params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
            combination = _combination(params)
            if combination is None:
                continue
            loss, reg = combination
            model = f"{loss}-{reg}"
            metrics = data.get("metrics") or {}
            trained = (metrics.get(f"metrics/train/{model}.json") or {}).get("data") or {}
            tested = ((metrics.get("metrics/test.json") or {}).get("data") or {}).get(model) or {}
            rows.append({"experiment": name, "model": model,
                         "learning_rate": params["loss"][loss]["learning_rate"],
                         "strength": params["regularizer"][reg]["strength"],
                         "epochs": params["train"]["epochs"],
                         "train_accuracy": trained.get("train_accuracy"),
                         "val_accuracy": trained.get("val_accuracy"),
                         "test_accuracy": tested.get("test_accuracy")})
    return sorted(rows, key=lambda row: (-(row["val_accuracy"] if row["val_accuracy"] is not None else -1),
                                         row["experiment"]))


def results_table(prefix: str) -> list[dict]:
    return experiment_rows(json.loads(dvc("exp", "show", "--json").stdout), prefix)


def print_table(rows: list[dict], prefix: str) -> None:
    import pandas as pd

    title = f"experiments {prefix}*" if prefix else "experiments"
    if not rows:
        print(f"{title}: none finished")
        return
    print(f"\n{title}, sorted by validation accuracy (selection never looks at the test accuracy)")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    best = rows[0]
    print(f"\nbest on validation: {best['experiment']} ({best['model']}, learning_rate={best['learning_rate']}, "
          f"strength={best['strength']}): val {best['val_accuracy']}, test {best['test_accuracy']}")
    print(f"restore it into the workspace with `dvc exp apply {best['experiment']}`; in the MLflow UI, "
          f"filter runs by tags.dvc_exp_name LIKE '{prefix}%'")


TABLE_COLUMNS = ("experiment", "model", "learning_rate", "strength", "epochs", "train_accuracy", "val_accuracy",
                 "test_accuracy")


def write_table(rows: list[dict], path: Path) -> Path:
    """The rows as CSV (TABLE_COLUMNS, sorted by learning rate then strength), written atomically."""
    import pandas as pd

    from linclass.files import atomic_file

    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS)).sort_values(["learning_rate", "strength"])
    with atomic_file(path) as tmp:
        table.to_csv(tmp, index=False)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m linclass.plumbing.sweep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    grid = sub.add_parser("grid", help="every loss x regularizer combination, one experiment each")
    sweep = sub.add_parser("sweep", help="learning rate x strength of one combination")
    sweep.add_argument("--loss", required=True)
    sweep.add_argument("--regularizer", required=True)
    sweep.add_argument("--learning-rates", required=True, help="comma-separated, e.g. 0.01,0.02,0.05")
    sweep.add_argument("--strengths", required=True, help="comma-separated, e.g. 1e-4,1e-3,1e-2")
    for command in (grid, sweep):
        command.add_argument("--jobs", "-j", type=int, default=2, help="experiments at a time (default 2)")
        command.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
        command.add_argument("overrides", nargs="*", help="Hydra overrides shared by every experiment")
    table = sub.add_parser("table", help="print the results of earlier experiments")
    table.add_argument("--prefix", default="", help="experiment names starting with this (default: all)")
    table.add_argument("--csv", type=Path, default=None, help="also write the table to this CSV file")
    args = parser.parse_args(argv)

    try:
        if args.command == "table":
            rows = results_table(args.prefix)
            print_table(rows, args.prefix)
            if args.csv is not None:
                print(f"table written to {write_table(rows, args.csv)}")
            return 0
        if args.jobs < 1:
            raise ValueError(f"--jobs={args.jobs} is not allowed; give 1 or more")
        if args.command == "grid":
            points, prefix = grid_points(), "grid-"
        else:
            from linclass.plumbing.config import KNOWN_LOSSES, KNOWN_REGULARIZERS

            if args.loss not in KNOWN_LOSSES or args.regularizer not in KNOWN_REGULARIZERS:
                raise ValueError(f"unknown combination {args.loss}-{args.regularizer}; losses: "
                                 f"{', '.join(KNOWN_LOSSES)}; regularizers: {', '.join(KNOWN_REGULARIZERS)}")
            points = sweep_points(args.loss, args.regularizer,
                                  parse_floats(args.learning_rates, "--learning-rates"),
                                  parse_floats(args.strengths, "--strengths"))
            prefix = f"sweep-{args.loss}-{args.regularizer}-"
        prepare(args.overrides)
        earlier_tasks = enqueue(points, args.overrides)
        result = run_queue(points, args.jobs, earlier_tasks, args.timeout)
        rows = results_table(prefix)
        print_table(rows, prefix)
        if args.command == "sweep" and rows:
            from linclass.plumbing.paths import SWEEPS

            path = write_table(rows, SWEEPS / f"{args.loss}-{args.regularizer}.csv")
            print(f"table written to {path}: `dvc repro hyperparameter_map` draws it as a heat map")
        failed = sorted(name for name, state in result.states.items() if state != "Success")
        if failed:
            print(f"error: {len(failed)} experiment(s) failed: {', '.join(failed)} "
                  f"(see `dvc queue logs <name>`)", file=sys.stderr)
            return 1
        return 0
    except (SweepError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
