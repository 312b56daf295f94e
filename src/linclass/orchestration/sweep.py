"""Many experiments at once with DVC's queue: the loss x regularizer grid of conf/, or a learning rate x
regularization strength sweep of one combination, selected on the validation split.

    linclass grid [--jobs 2] [override ...]
    linclass sweep --loss softmax --regularizer l2 --learning-rates 0.01,0.02,0.05 --strengths 1e-4,1e-3,1e-2
    linclass table [--prefix sweep-softmax-l2-lr] [--csv sweeps/softmax-l2.csv]

A sweep writes its table to sweeps/<loss>-<regularizer>.csv (replacing the one of an earlier sweep of that
combination); the stage `hyperparameter_map` draws it as a learning rate x strength heat map
(`dvc repro hyperparameter_map`, or `dvc repro` for the report too).

`override`s are Hydra overrides shared by every point (e.g. train.epochs=5). The workspace's
params.yaml is never changed: each experiment's params.yaml is composed by DVC in its own copy.

What DVC does itself, in its own syntax:
- the sweep is one command, DVC expands the product and names the points <name>-1, <name>-2, ...:
      dvc exp run --queue -n sweep-softmax-l2 -S 'grid.losses=[softmax]' -S 'grid.regularizers=[l2]' \\
          -S 'loss.softmax.learning_rate=0.01,0.05' -S 'regularizer.l2.strength=1e-4,1e-3' evaluate
- the queue runs JOBS at a time: `dvc exp run --run-all -j JOBS` (which also waits and shows the logs).
The grid is queued point by point (`dvc exp run --queue -n grid-svm-l2 -S 'grid.losses=[svm]'
-S 'grid.regularizers=[l2]' train@svm-l2`): DVC 3.67 expands a sweep over grid.* with the stage
index of its first point, so the other points' train@ stages are "not found". Each kind of features is
one more point, `grid-features-<kind>` (the stage train_features@<kind>: every combination on them).

What DVC lacks, done here once before the workers start: the data stages run once (the experiments
restore them from DVC's run-cache instead of preprocessing again), and the MLflow store and experiment
are created (two processes cannot safely create a fresh sqlite store at the same time). Afterwards the
table: the experiments read from `dvc exp show --json`, sorted by validation accuracy, with the
`dvc exp apply` command for the best. After the grid, `make grid-parallel` assembles the whole
pipeline from DVC's run-cache (every train stage restored; evaluation and the studies run): `dvc repro`
in the workspace, or with OVERRIDES the experiment `grid-all` (so params.yaml stays as committed).

Every train stage runs with train.blas_threads BLAS threads (1 by default), so N workers keep N cores
busy and the results are bit-identical to a serial run. Every stage logs to the project's MLflow
store, also from inside .dvc/tmp/exps/ (see linclass.tracking.runs.project_root), tagged with its
experiment's name (`dvc_exp_name`).

Points (`Point`: a name, its Hydra overrides, the DVC target) describe the same experiments one by
one for backends that run them elsewhere (linclass.orchestration.ray_backend).
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from tenacity import retry, stop_after_attempt, wait_fixed

from linclass.orchestration.processes import end_processes

DATA_KEYS = ("data.", "preprocess.", "data=", "preprocess=")
UNFINISHED = ("queued", "running")


class SweepError(RuntimeError):
    """The queue could not run; the message is one line and says what to do."""


@dataclass(frozen=True)
class Point:
    """One experiment: its DVC name, the Hydra overrides that make it and the stage it runs up to."""
    name: str
    overrides: tuple[str, ...]
    target: str


def conf_grid(conf_dir: str | Path = "conf", overrides: Iterable[str] = ()) -> dict[str, list[str]]:
    """grid.losses, grid.regularizers and grid.features as conf/ declares them (with `overrides`)."""
    from linclass.config import compose

    grid = compose(conf_dir, overrides)["grid"]
    return {key: list(grid[key]) for key in ("losses", "regularizers", "features")}


def grid_points(losses: Iterable[str] | None = None, regularizers: Iterable[str] | None = None,
                conf_dir: str | Path = "conf", overrides: Iterable[str] = ()) -> list[Point]:
    """One experiment per (loss, regularizer) of conf/'s grid, each training only that combination on the
    pixels; then one per kind of features, training every combination on them (train_features@<kind>)."""
    grid = conf_grid(conf_dir, overrides)
    losses = grid["losses"] if losses is None else list(losses)
    regularizers = grid["regularizers"] if regularizers is None else list(regularizers)
    pixels = [Point(f"grid-{loss}-{reg}", (f"grid.losses=[{loss}]", f"grid.regularizers=[{reg}]"),
                    f"train@{loss}-{reg}")
              for loss, reg in itertools.product(losses, regularizers)]
    whole = (f"grid.losses=[{','.join(losses)}]", f"grid.regularizers=[{','.join(regularizers)}]")
    return pixels + [Point(f"grid-features-{kind}", whole, f"train_features@{kind}") for kind in grid["features"]]


def sweep_points(loss: str, regularizer: str, learning_rates: Sequence[float] | str,
                 strengths: Sequence[float] | str, features: str = "pixels") -> list[Point]:
    """One point per learning rate x strength (comma-separated text, or numbers), the last varying fastest.
    features: the model's input, pixels (loss.<loss>.learning_rate, regularizer.<reg>.strength; grid.features=[]:
    the point trains and evaluates the pixel model alone) or a kind of features (features.learning_rate.<loss>,
    features.strength.<reg>: the point trains that one features model). Each value is checked against the
    setting it becomes."""
    from linclass.settings import (
        LOSS_NAMES,
        REGULARIZER_NAMES,
        FeatureRates,
        FeatureStrengths,
        Losses,
        Regularizers,
    )

    if loss not in LOSS_NAMES or regularizer not in REGULARIZER_NAMES:
        raise ValueError(f"unknown combination {loss}-{regularizer} (--loss, --regularizer; LOSS, REG of make sweep); "
                         f"losses: {', '.join(LOSS_NAMES)}; regularizers: {', '.join(REGULARIZER_NAMES)}")
    check_features(features)
    if features == "pixels":
        rate, strength = f"loss.{loss}.learning_rate", f"regularizer.{regularizer}.strength"
        settings: tuple[Any, Any] = (Losses.model_fields[loss].annotation,
                                     Regularizers.model_fields[regularizer].annotation)
        names = "learning_rate", "strength"
    else:
        rate, strength = f"features.learning_rate.{loss}", f"features.strength.{regularizer}"
        settings = FeatureRates, FeatureStrengths
        names = loss, regularizer
    learning_rates = parse_floats(learning_rates, "--learning-rates (LRS of make sweep)", rate, settings[0], names[0])
    strengths = parse_floats(strengths, "--strengths (STRENGTHS of make sweep)", strength, settings[1], names[1])
    grid = (f"grid.losses=[{loss}]", f"grid.regularizers=[{regularizer}]",
            f"grid.features=[{'' if features == 'pixels' else features}]")
    return [Point(f"{sweep_prefix(loss, regularizer, features)}{lr:g}-s{lam:g}",
                  (*grid, f"{rate}={lr!r}", f"{strength}={lam!r}"), "evaluate")
            for lr, lam in itertools.product(learning_rates, strengths)]


def sweep_prefix(loss: str, regularizer: str, features: str = "pixels") -> str:
    """What the names of one sweep's points begin with: sweep-softmax-l2-lr, sweep-softmax-l2-hog_hist-lr. The
    pixels' is no prefix of the features' (sweep-softmax-l2- was: a sweep on the pixels replaced the experiments of
    the features sweep of the same combination)."""
    return f"sweep-{loss}-{regularizer}{'' if features == 'pixels' else f'-{features}'}-lr"


def parse_floats(values: Sequence[float] | str, what: str, key: str, section: Any, name: str) -> list[float]:
    """'0.01,0.02,1e-3' (or numbers) -> [0.01, 0.02, 0.001], each a valid value of the setting `key` (field
    `name` of `section`); a bad or missing value raises ValueError naming it."""
    from linclass.settings import check

    if isinstance(values, str):
        items, values = values.split(","), []
        for item in items:
            try:
                values.append(float(item))
            except ValueError:
                raise ValueError(f"{what}: {item.strip()!r} is not a number; give comma-separated "
                                 f"numbers, e.g. 0.01,0.02") from None
    if not values:
        raise ValueError(f"{what}: no values given; give at least one, e.g. 0.01,0.02")
    for value in values:
        try:
            check(section, **{name: value})
        except ValueError as exc:
            raise ValueError(f"{what}: {key}{str(exc).removeprefix(name)}") from None
    return list(values)


# ---- talking to DVC ----

def shown_dvc() -> str:
    """dvc as a user types it here: .venv/bin/dvc when that is the one used (the venv need not be active)."""
    with contextlib.suppress(ValueError):
        return str(Path(dvc_executable()).relative_to(Path.cwd()))
    return "dvc"


def dvc_executable() -> str:
    """This environment's dvc (beside its python), else the one on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.exists() else (shutil.which("dvc") or "dvc")


def dvc_command(root: Path | None = None) -> list[str]:
    """How to start dvc: from the warm interpreter that serves this workspace (`root`, default the working
    directory) while there is one ($LINCLASS_WARM_SOCKET: linclass grid and sweep start it; about 0.6 s less a
    command), else this environment's dvc."""
    client = Path(root or "", "src", "linclass", "orchestration", "warm_client.py")
    if os.environ.get("LINCLASS_WARM_SOCKET") and client.exists():
        return [sys.executable, "-I", "-S", str(client), "-m", "dvc"]
    return [dvc_executable()]


def run_command(cmd: list[str], what: str, cwd: str | Path | None = None, capture: bool = True, check: bool = True,
                timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run a command (with capture=False its output goes straight to ours: the queue's logs, as progress), this
    environment's bin/ first on PATH (a stage in a copy without .venv finds its python); SweepError
    `<what> failed: <error_line>` when it fails and `check`. With `timeout`, a command that has not ended by then
    is killed and counts as failed (exit -9)."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=capture, text=True, env=env, stdin=subprocess.DEVNULL,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        proc = subprocess.CompletedProcess(cmd, -signal.SIGKILL, "", f"no answer within {timeout:g} s")
    if check and proc.returncode != 0:
        detail = error_line(f"{proc.stdout}\n{proc.stderr}") if capture else f"exit {proc.returncode}"
        raise SweepError(f"{what} failed: {detail}")
    return proc


def dvc(*args: str, check: bool = True, capture: bool = True,
        timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run dvc (dvc_command) in the working directory: run_command()."""
    return run_command([*dvc_command(), *args], f"dvc {' '.join(args[:3])}", capture=capture, check=check,
                       timeout=timeout)


def error_line(output: str) -> str:
    """The one line that says what went wrong: a stage's own `error:` line, else DVC's first 'ERROR:' (without
    it), else git's last `fatal:`, else the last line of the output that is not DVC's support link."""
    from linclass.redact import redact_url

    lines = [line.strip() for line in output.splitlines()]
    lines = [line for line in lines if line and not line.startswith("Having any troubles? Hit us up at https://dvc.org")]
    own = [line for line in lines if line.startswith("error:")]
    errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR")]
    fatal = [line for line in lines if line.startswith("fatal:")][-1:]
    return redact_url((own or errors or fatal or lines[-1:] or ["no output"])[0])


def experiment_states(exp_show: list) -> dict[str, str]:
    """Experiment name -> queued | running | success | failed, from `dvc exp show --json`."""
    return {experiment.get("name") or experiment["revs"][0]["rev"][:7]:
            (experiment.get("executor") or {}).get("state") or "success"
            for baseline in exp_show for experiment in baseline.get("experiments") or []}


# `dvc exp show` (DVC 3.67) can hang for good on a lock of its index while queue workers commit: it is
# killed after this many seconds and asked again.
EXP_SHOW_TIMEOUT = 60.0


@retry(stop=stop_after_attempt(3), wait=wait_fixed(1), reraise=True)
def exp_show(rev: str | None = None, every_baseline: bool = False) -> list:
    """`dvc exp show --json`: the experiments of HEAD, or of the commit `rev`; with `every_baseline`, of HEAD and
    of every commit that has experiments (--all-commits reads every commit: over a minute on 500 of them)."""
    revs = [rev] if rev else [head(), *(base for base, _ in experiment_refs())] if every_baseline else []
    return json.loads(dvc("exp", "show", "--json", *(arg for r in dict.fromkeys(revs) for arg in ("--rev", r)),
                          timeout=EXP_SHOW_TIMEOUT).stdout)


def experiment_refs() -> list[tuple[str, str]]:
    """(baseline commit, name) of every DVC experiment: its git ref is refs/exps/<2 hex>/<38 hex>/<name>."""
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], capture_output=True,
                          text=True).stdout.split()
    return [("".join(parts[2:4]), parts[4]) for parts in (ref.split("/") for ref in refs) if len(parts) == 5]


def head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def prepare(overrides: Sequence[str]) -> None:
    """Check the overrides, run the data stages and create the MLflow store, once, before the workers: the
    experiments restore the data stages from the run-cache. Data settings that differ from params.yaml are
    prepared in a temporary copy, so params.yaml stays as it is."""
    from linclass.config import compose
    from linclass.settings import Tracking

    def set_up_store(experiment: str, uri: str | None) -> tuple[str, str]:
        import mlflow  # its import (seconds) overlaps the data stages too

        from linclass.redact import redact_url
        from linclass.tracking.runs import setup

        return setup(experiment, uri), redact_url(mlflow.get_tracking_uri())

    params = compose("conf", overrides)   # also checks every setting
    experiment = Tracking(**params["tracking"]).experiment_name()
    with ThreadPoolExecutor(1) as background:   # the store is set up while DVC prepares the data
        store = background.submit(set_up_store, experiment, params["tracking"]["uri"])
        if any(o.lstrip("+~").startswith(DATA_KEYS) for o in overrides):
            dvc("exp", "run", "--temp", "-n", "data-prep", *set_args(overrides), "preprocess", capture=False)
            dvc("exp", "remove", "data-prep", check=False)
        else:
            dvc("repro", "preprocess", capture=False)
        experiment_id, uri = store.result()
    print(f"MLflow store {uri}: experiment {experiment!r} (id {experiment_id})")


def set_args(overrides: Iterable[str]) -> list[str]:
    """The overrides as `dvc exp run` takes them: -S o1 -S o2 ..."""
    return [arg for override in overrides for arg in ("-S", override)]


def clear_earlier(prefix: str) -> None:
    """Refuse to mix with unfinished experiments; remove the earlier ones whose names begin with `prefix` (this
    commit: those of the same grid or sweep, whatever their points were)."""
    states = experiment_states(exp_show())
    busy = sorted(name for name, state in states.items() if state in UNFINISHED)
    if busy:
        raise SweepError(f"the DVC queue already has unfinished experiments ({', '.join(busy)}); "
                         "wait for them or remove them (`dvc queue remove --queued`)")
    earlier = sorted(name for name in states if name.startswith(prefix))
    if earlier:
        dvc("exp", "remove", *earlier)
        print(f"replaced earlier experiments: {', '.join(earlier)}")


FINAL_STATES = ("success", "failed")


def run_queue(jobs: int, expected: Sequence[str], baseline: str, check: float = 30.0, grace: float = 20.0) -> float:
    """`dvc exp run --run-all -j jobs`, its output as progress; returns once every `expected` experiment
    has finished (its state in `dvc exp show --json --rev baseline` is success or failed: a commit made
    meanwhile moves HEAD, and `dvc exp show` alone lists the experiments of HEAD only).

    DVC 3.67's --run-all can keep waiting on an idle queue worker after the last experiment finished
    (seen in CI: every experiment done, the command never returning). So the states are looked at too,
    every `check` seconds (not more often: one `dvc exp show` costs 1-2 s of CPU, taken from the trainings
    on a machine the workers keep busy); once all are final, --run-all gets `grace` seconds to return,
    then its workers are stopped. An idle worker can also outlive a --run-all that returned:
    stop_leftover_workers.
    """
    start = time.monotonic()
    proc = subprocess.Popen([dvc_executable(), "exp", "run", "--run-all", "-j", str(jobs)],
                            env={**os.environ, "DVC_NO_ANALYTICS": "1"},
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=check)
                break   # --run-all returned
            shown = dvc("exp", "show", "--json", "--rev", baseline, check=False, timeout=EXP_SHOW_TIMEOUT)
            # (failed: DVC's repository lock while a worker commits, or a hang; asked again)
            if shown.returncode == 0 and all(experiment_states(json.loads(shown.stdout)).get(name) in FINAL_STATES
                                             for name in expected):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=grace)
                break
    finally:
        if proc.poll() is None:   # never leave workers running behind us
            dvc("queue", "stop", "--kill", check=False)
            for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, None)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=wait)
                    break
        stop_leftover_workers()
    return time.monotonic() - start


def queue_workers(root: str | Path = ".") -> list[int]:
    """pids of the DVC queue workers (`dvc exp queue-worker ...`) working in this repository."""
    root = Path(root).resolve()
    return [process.pid for process in psutil.process_iter(["cmdline", "cwd"])
            if "queue-worker" in (process.info["cmdline"] or [])
            and any(os.path.basename(a) == "dvc" for a in process.info["cmdline"])
            and process.info["cwd"] and Path(process.info["cwd"]) == root]


def stop_leftover_workers(root: str | Path = ".", wait: float = 10.0) -> list[int]:
    """End the queue workers that outlived --run-all; returns their pids.

    Every experiment of ours is final by now, so a worker left is idle. DVC 3.67 does not always end it:
    one was seen idle for good, invisible to `dvc queue status` (so `dvc queue stop` cannot reach it),
    with the forked copy of --run-all that waits for it still holding our standard output.
    """
    pids = queue_workers(root)
    leftover = [process for process in psutil.process_iter() if process.pid in pids]
    end_processes(leftover, wait)
    return [process.pid for process in leftover]


# ---- reading the results ----

TEST_KEYS = ("test_accuracy", "test_accuracy_low", "test_accuracy_high")
VAL_KEYS = ("val_accuracy", "val_accuracy_low", "val_accuracy_high")


def _data(section: dict | None, name: str) -> dict:
    """The data of the file `name` in a section of `dvc exp show --json` (params, metrics); {} when it has none."""
    return ((section or {}).get(name) or {}).get("data") or {}


def evaluated(trained: dict, tested: dict) -> dict:
    """The test accuracy and its interval of a model, only if they were measured on these very weights.

    trained: its metrics/train/<model>.json; tested: its entry of metrics/test.json. An experiment that ran only
    train@<model> (a grid point) carries the metrics/test.json of its baseline commit, made with other weights:
    their md5 differs (or is missing) and nothing is returned.
    """
    if not tested or not trained.get("weights_md5") or tested.get("weights_md5") != trained["weights_md5"]:
        return {key: None for key in TEST_KEYS}
    return {key: tested.get(key) for key in TEST_KEYS}


def model_metrics(metrics: dict, loss: str, reg: str, kind: str) -> tuple[str, dict | None, dict]:
    """(model name, what its train stage measured, its test accuracy: `evaluated`) from a revision's metrics
    (`dvc exp show --json`): metrics/train/<loss>-<reg>.json on the pixels, its entry of metrics/train/<kind>.json
    on features."""
    model = f"{loss}-{reg}" if kind == "pixels" else f"{loss}-{reg}-{kind}"
    if kind == "pixels":
        trained = _data(metrics, f"metrics/train/{model}.json") or None
    else:
        trained = _data(metrics, f"metrics/train/{kind}.json").get(model)
    return model, trained, evaluated(trained or {}, _data(metrics, "metrics/test.json").get(model) or {})


def own_rate_and_strength(params: dict, loss: str, reg: str, kind: str) -> tuple:
    """The learning rate and strength a model trained with: the loss's and regularizer's on the pixels, the
    `features.*` ones on features."""
    if kind == "pixels":
        return (((params.get("loss") or {}).get(loss) or {}).get("learning_rate"),
                ((params.get("regularizer") or {}).get(reg) or {}).get("strength"))
    features = params.get("features") or {}
    return (features.get("learning_rate") or {}).get(loss), (features.get("strength") or {}).get(reg)


def experiment_rows(exp_show: list, prefix: str, features: str = "pixels") -> list[dict]:
    """One row per DVC experiment whose name starts with `prefix` and that trained one combination, from
    `dvc exp show --json`: its model on `features` (pixels, or a kind of features), its settings, validation
    accuracy with its 95% interval, and the test accuracy only where the experiment evaluated the model it
    trained (else None: see `evaluated`)."""
    rows = []
    for baseline in exp_show:
        for experiment in baseline.get("experiments") or []:
            name, revs = experiment.get("name") or "", experiment.get("revs") or []
            if not name.startswith(prefix) or not revs or not revs[0].get("data"):
                continue
            params, metrics = _data(revs[0]["data"].get("params"), "params.yaml"), revs[0]["data"].get("metrics") or {}
            grid = params.get("grid", {})
            losses, regs = grid.get("losses") or [], grid.get("regularizers") or []
            if len(losses) != 1 or len(regs) != 1:
                continue
            model, trained, test = model_metrics(metrics, losses[0], regs[0], features)
            rate, strength = own_rate_and_strength(params, losses[0], regs[0], features)
            trained = trained or {}
            rows.append({"experiment": name, "model": model, "learning_rate": rate, "strength": strength,
                         "epochs": params["train"]["epochs"],
                         "val_size": (params.get("preprocess") or {}).get("val_size"),
                         "train_accuracy": trained.get("train_accuracy"),
                         **{key: trained.get(key) for key in VAL_KEYS}, **test})
    return sorted(rows, key=lambda row: (-(row["val_accuracy"] if row["val_accuracy"] is not None else -1),
                                         row["experiment"]))


def _revisions(exp_show: list):
    """(label, data, params, metrics) of the workspace, each baseline commit and each experiment, from
    `dvc exp show --json`."""
    for baseline in exp_show:
        label = "workspace" if baseline.get("rev") == "workspace" else (baseline.get("name") or baseline["rev"][:7])
        revisions = [(label, baseline.get("data") or {})]
        for experiment in baseline.get("experiments") or []:
            revs = experiment.get("revs") or [{}]
            revisions.append((experiment.get("name") or revs[0].get("rev", "")[:7], revs[0].get("data") or {}))
        for label, data in revisions:
            yield label, data, _data(data.get("params"), "params.yaml"), data.get("metrics") or {}


def revision_models(params: dict) -> list[tuple[str, str, str]]:
    """(kind, loss, regularizer) of every model a revision's grid trains: on the pixels, then on each features."""
    grid = params.get("grid") or {}
    return [(kind, loss, reg) for kind in ["pixels", *(grid.get("features") or [])]
            for loss in grid.get("losses") or [] for reg in grid.get("regularizers") or []]


def comparison_rows(exp_show: list) -> list[dict]:
    """One row per trained model of every revision, on the pixels and on each kind of features: the model, its
    input (`features`), its effective settings, validation and test accuracy with their 95% intervals (the
    test ones only where that revision evaluated these weights). Weights that several revisions hold (the
    workspace an experiment was applied to, a model the experiment did not retrain) are one row, whose
    `revision` names them all."""
    rows: list[dict] = []
    by_weights: dict[tuple, dict] = {}
    for label, _, params, metrics in _revisions(exp_show):
        for kind, loss, reg in revision_models(params):
            model, trained, test = model_metrics(metrics, loss, reg, kind)
            if not trained:
                continue
            settings = {k: v for k, v in (params.get("train") or {}).items() if k != "blas_threads"}
            settings.update((params.get("loss") or {}).get(loss) or {})
            settings.update((params.get("regularizer") or {}).get(reg) or {})
            settings.update(zip(("learning_rate", "strength"), own_rate_and_strength(params, loss, reg, kind)))
            settings["val_size"] = (params.get("preprocess") or {}).get("val_size")
            weights = (model, trained.get("weights_md5") or label)
            if weights in by_weights:   # the same weights, so the same settings and validation accuracy
                by_weights[weights]["revision"] += f", {label}"
                if by_weights[weights]["test_accuracy"] is None:
                    by_weights[weights].update(test)
                continue
            by_weights[weights] = {"revision": label, "combination": model, "features": kind, **settings,
                                   **{key: trained.get(key) for key in VAL_KEYS}, **test}
            rows.append(by_weights[weights])
    return rows


def held_by(rows: list[dict], revision: str) -> list[dict]:
    """The rows of comparison_rows whose weights `revision` holds."""
    return [row for row in rows if revision in row["revision"].split(", ")]


def with_interval(value, low, high) -> str:
    """'0.4218 [0.4082, 0.4355]'; the accuracy alone when the interval is unknown; '-' when there is none."""
    if value is None or value != value:
        return "-"
    if low is None or high is None or low != low or high != high:
        return f"{value:.4f}"
    return f"{value:.4f} [{low:.4f}, {high:.4f}]"


def accuracy_columns(table):
    """The table with `val_accuracy (95%)` and `test_accuracy (95%)` in place of the three columns of each."""
    for split in ("val", "test"):
        keys = [f"{split}_accuracy{end}" for end in ("", "_low", "_high")]
        texts = [with_interval(*(row.get(k) for k in keys)) for row in table.to_dict("records")]
        at = list(table.columns).index(keys[0])
        table = table.drop(columns=keys)
        table.insert(at, f"{split}_accuracy (95%)", texts)
    return table


def differing(table, fixed: list[str]) -> list[str]:
    """The columns of `table` but `fixed` whose values differ between its rows (a missing one counts as a value)."""
    return [c for c in table.columns if c not in fixed and table[c].astype(str).nunique(dropna=False) > 1]


NOT_EVALUATED = ("test_accuracy '-': not evaluated with these weights (an experiment that ran only train@..., "
                 "whose metrics/test.json belongs to the models of its baseline)")


def print_comparison(rows: list[dict], title: str | None = None) -> None:
    """The rows with only the settings that differ between them, best validation accuracy first."""
    import pandas as pd

    if not rows:
        print("nothing trained yet: run `make repro` (or an experiment) first")
        return
    table = pd.DataFrame(rows)
    fixed = ["revision", "combination", *VAL_KEYS, *TEST_KEYS]
    differ = differing(table, fixed)
    same = [c for c in table.columns if c not in fixed and c not in differ]
    table = table.sort_values(["val_accuracy", "revision"], ascending=[False, True], na_position="last")
    table = accuracy_columns(table[[*fixed[:2], *differ, *fixed[2:]]])
    if title:
        print(f"\n{title}")
    # '-' where a model has no such setting (a softmax model has no delta), not pandas' NaN
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-"))
    print(f"(the same everywhere: {', '.join(same) or 'nothing'}; sorted by validation accuracy; "
          "[low, high]: 95% Wilson interval)")
    if any(row["test_accuracy"] is None for row in rows):
        print(NOT_EVALUATED)


# the settings `linclass experiments` shows when they differ between its rows (`make settings` names them)
EXPERIMENT_SETTINGS = re.compile(r"(?:grid\..*|train\.(?:epochs|batch_size|lr_decay)|loss\..*|regularizer\..*"
                                 r"|features\.(?:learning_rate|strength)\..*|preprocess\.(?:val_size|max_train))")


def own_champion(params: dict, metrics: dict) -> tuple[str, dict] | None:
    """The champion of metrics/champion.json and its validation and test accuracy (VAL_KEYS, TEST_KEYS) if that
    revision's evaluate chose it among its own models: its metrics/test.json holds exactly the models of its grid,
    each measured on the weights it trained. A point of the grid (train@<model> only) carries its baseline's
    champion.json and test.json, chosen among other models (or other weights): None."""
    chosen = _data(metrics, "metrics/champion.json").get("champion")
    models = {model: (trained or {}, test) for model, trained, test in
              (model_metrics(metrics, loss, reg, kind) for kind, loss, reg in revision_models(params))}
    if (not chosen or chosen not in models or set(_data(metrics, "metrics/test.json")) != set(models)
            or any(test["test_accuracy"] is None for _, test in models.values())):
        return None
    trained, test = models[chosen]
    return chosen, {**{key: trained.get(key) for key in VAL_KEYS}, **test}


def experiment_summary_rows(exp_show: list) -> list[dict]:
    """One row per revision (`make experiments`): its name, when it was made, its champion with the champion's
    validation and test accuracy and 95% intervals (the names of `linclass compare`; '-' where the revision did
    not evaluate its own models: own_champion), and its settings (EXPERIMENT_SETTINGS, dotted as in params.yaml)."""
    from linclass.config import flatten

    rows = []
    for label, data, params, metrics in _revisions(exp_show):
        if not params and not metrics:
            continue
        champion, accuracies = own_champion(params, metrics) or ("-", dict.fromkeys((*VAL_KEYS, *TEST_KEYS)))
        settings = {key: value for key, value in flatten(params).items() if EXPERIMENT_SETTINGS.fullmatch(key)}
        rows.append({"revision": label, "created": (data.get("timestamp") or "")[:16].replace("T", " ") or "-",
                     "champion": champion, **accuracies, **settings})
    return rows


NO_CHAMPION = ("champion '-': that revision did not evaluate its own models (not yet, or its results are not "
               "committed; or a point of make grid-parallel, which trains one model and carries its baseline's "
               "metrics/champion.json: grid-all evaluates them together)")


def print_experiments(rows: list[dict]) -> None:
    """The rows (DVC's order: the workspace, each commit and its experiments), with only the settings that differ."""
    import pandas as pd

    if not rows:
        print("no experiment yet: run `make repro` (or an experiment) first")
        return
    table = pd.DataFrame(rows)
    fixed = ["revision", "created", "champion", *VAL_KEYS, *TEST_KEYS]
    differ = differing(table, fixed)
    table = accuracy_columns(table[[*fixed, *differ]])
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-"))
    print("([low, high]: the champion's 95% Wilson interval; every model of each revision: linclass compare)")
    if any(row["champion"] == "-" for row in rows):
        print(NO_CHAMPION)


def check_features(features: str) -> None:
    """ValueError (one line) unless `features` names a model's input: pixels or a kind of features."""
    from linclass.settings import FEATURE_KINDS

    if features != "pixels" and features not in FEATURE_KINDS:
        raise ValueError(f"unknown input --features {features!r}; allowed: pixels, {', '.join(FEATURE_KINDS)}")


def results_table(prefix: str, features: str = "pixels") -> list[dict]:
    check_features(features)
    return experiment_rows(exp_show(), prefix, features)


def elsewhere(prefix: str) -> str:
    """' on this commit; 4 on commit 02d6c06 (...)' when experiments of that prefix exist on other commits:
    `dvc exp show` (and so this table) lists only those of HEAD, and committing the sweep's table, as the
    docs advise, moves HEAD away from them."""
    current = head()
    counts = Counter(base[:7] for base, name in experiment_refs() if name.startswith(prefix) and base != current)
    if not counts:
        return ""
    where = ", ".join(f"{n} on commit {rev}" for rev, n in counts.items())
    first = next(iter(counts))
    return (f" on this commit; {where} (`{shown_dvc()} exp show --rev {first}` lists them, "
            f"or `git checkout {first}` then this command)")


def print_table(rows: list[dict], prefix: str, best: bool = True) -> None:
    """The rows, best on validation first; with `best`, the best one and how to keep it (a grid's points are
    not the grid: its features models are another experiment, and grid-all evaluates them all together)."""
    import pandas as pd

    title = f"experiments {prefix}*" if prefix else "experiments"
    if not rows:
        print(f"{title}: none finished{elsewhere(prefix)}")
        return
    print(f"\n{title}, sorted by validation accuracy (selection never looks at the test accuracy; "
          "[low, high]: 95% Wilson interval)")
    table = accuracy_columns(pd.DataFrame(rows))
    # four decimals, as the other accuracies (with the settings' .4g, 0.37896 showed as 0.379 beside 0.4073)
    table["train_accuracy"] = [f"{v:.4f}" if pd.notna(v) else "-" for v in table["train_accuracy"]]
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    top = rows[0]
    if best:
        test = (with_interval(*(top[k] for k in TEST_KEYS)) if top["test_accuracy"] is not None
                else "not evaluated in this experiment")
        print(f"\nbest on validation: {top['experiment']} ({top['model']}, learning_rate={top['learning_rate']}, "
              f"strength={top['strength']}): val {with_interval(*(top[k] for k in VAL_KEYS))}, test {test}")
    if any(row["test_accuracy"] is None for row in rows):
        print(NOT_EVALUATED)
    if best:
        print(f"keep it: {shown_dvc()} exp apply {top['experiment']}")
    print(f"in the MLflow UI, filter runs by tags.dvc_exp_name LIKE '{prefix}%' (a point that DVC took from its "
          "run-cache trained nothing: its run is the one of its first training)")


TABLE_COLUMNS = ("experiment", "model", "learning_rate", "strength", "epochs", "val_size", "train_accuracy",
                 *VAL_KEYS, *TEST_KEYS)


def write_table(rows: list[dict], path: Path) -> Path:
    """The rows as CSV (TABLE_COLUMNS, sorted by learning rate then strength), written atomically."""
    import pandas as pd

    from linclass.files import atomic_file

    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS)).sort_values(["learning_rate", "strength"])
    with atomic_file(path) as tmp:
        table.to_csv(tmp, index=False)
    return path


def run_points(points: Sequence[Point], prefix: str, overrides: Sequence[str], jobs: int) -> list[str]:
    """Queue the points as DVC experiments (replacing earlier ones of the same `prefix`), run them `jobs` at a
    time, and return the names of those that failed. The workspace's params.yaml is never changed."""
    prepare(overrides)
    clear_earlier(prefix)
    baseline = head()   # the experiments' commit, whatever is committed while they run
    for point in points:
        dvc("exp", "run", "--queue", "-n", point.name, *set_args((*overrides, *point.overrides)), point.target)
        print(f"queued {point.name}: {' '.join(point.overrides)}")
    expected = [point.name for point in points]
    print(f"{len(expected)} experiments, {jobs} at a time: dvc exp run --run-all -j {jobs} "
          "(follow with `dvc queue status`, `dvc queue logs <name>`)")
    seconds = run_queue(jobs, expected, baseline)
    states = experiment_states(exp_show(baseline))
    print(f"queue done in {seconds:.0f} s")
    return [f"{name} (see `dvc queue logs {name}`)" for name in expected if states.get(name) != "success"]
