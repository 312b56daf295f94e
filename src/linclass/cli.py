"""`linclass`: one command for what people do around the pipeline (the make targets call it).

    linclass config [OVERRIDE ...]      compose conf/ into params.yaml (checked)      make params
    linclass settings [PREFIX]          every setting: type, range, default, meaning
    linclass repro                      the whole pipeline in the workspace            make repro
    linclass exp [OVERRIDE ...]         one experiment in the workspace               make exp SET=...
    linclass grid / sweep ...           many experiments through DVC's queue or Ray   make grid-parallel / sweep
    linclass table / compare / experiments   the results side by side
    linclass ui / server / store / reap      MLflow                                 make ui / server / reap
    linclass services / cluster ...     the team stack, a Ray cluster on this machine
    linclass push / pull                the team's DVC remote                         make push / pull
    linclass lecture                    the lecture's worked examples, computed        make lecture

Every command checks its input first: a bad value is one line (`error: ...`) and exit status 1 (2 for a bad
or missing option), before anything runs or is written. `--help` at every level only prints.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]}, help=__doc__.splitlines()[0])
services_app = typer.Typer(no_args_is_help=True, help="The team stack: PostgreSQL, MLflow with logins, a DVC remote.")
cluster_app = typer.Typer(no_args_is_help=True, help="A Ray cluster on this machine (loopback addresses).")
app.add_typer(services_app, name="services")
app.add_typer(cluster_app, name="cluster")

Overrides = Annotated[list[str] | None, typer.Argument(help="Hydra overrides, e.g. train.epochs=5 "
                                                                 "regularizer.l2.strength=0.01", show_default=False)]
WORKSPACE_LOCK = Path(".dvc", "tmp", "linclass-workspace.lock")
WARM_LOG = Path(".dvc", "tmp", "linclass-warm.log")


class Failed(RuntimeError):
    """A command that ran and failed: its own output said why; exit with its status."""

    def __init__(self, status: int):
        super().__init__(f"exit {status}")
        self.status = status


def at_project_root() -> None:
    """RuntimeError (one line) unless the working folder is a linclass project's root: nothing is created elsewhere."""
    missing = [name for name in ("dvc.yaml", "conf", ".dvc") if not Path(name).exists()]
    if missing:
        raise RuntimeError(f"{Path.cwd()} is not the root folder of a linclass project (no {', '.join(missing)}): "
                           "cd there first")


@contextlib.contextmanager
def one_pipeline_at_a_time() -> Iterator[int]:
    """The workspace's lock, without waiting: a second pipeline in this workspace refuses at once, before
    it touches params.yaml (DVC takes its own lock only after writing params.yaml). It is an flock on the open
    file yielded, which dvc_foreground hands to DVC: the lock holds while DVC runs, even after a `kill -9` of this
    process leaves DVC running (in a process group of its own). filelock gives no way to hand its lock on."""
    import fcntl

    at_project_root()
    WORKSPACE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(WORKSPACE_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError("another pipeline runs in this workspace; wait for it to end, or run experiments "
                               "side by side through the queue (linclass grid / linclass sweep)") from None
        yield fd
    finally:
        os.close(fd)


def _interrupted(signum, frame):
    raise KeyboardInterrupt   # SIGTERM, SIGHUP (a closed terminal): stop DVC as Ctrl-C does


def _unheard(signum, frame):
    """SIGINT while linclass starts DVC, where linclass inherited it ignored: ignored still (see dvc_foreground)."""


def dvc_foreground(*args: str, env: dict[str, str] | None = None, lock: int | None = None) -> None:
    """Run dvc (this environment's), its output ours, with `env` added to our environment; Failed when it fails.
    DVC inherits the workspace's `lock` (one_pipeline_at_a_time's), if given.

    DVC runs in a process group of its own, and an interrupt of this process (Ctrl-C, SIGINT to its pid, SIGTERM,
    or SIGHUP from a closed terminal) is passed on to that group once as SIGINT, then DVC is waited for: it stops
    its stage and undoes its `git add` of params.yaml and dvc.lock (subprocess.run would kill it 0.25 s later,
    leaving them staged, and `git checkout params.yaml` would then restore the interrupted experiment's
    settings).
    DVC starts with SIGINT at its default even when linclass inherited it ignored (started in the background of a
    script: `linclass exp ... &`), or the SIGINT of a `kill` would not stop it, and linclass would wait for ever: a
    handler of this process, unlike an ignored signal, is the default again in a program it starts."""
    from linclass.orchestration.sweep import dvc_executable

    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, _unheard)
    try:
        proc = subprocess.Popen([dvc_executable(), *args], env={**os.environ, "DVC_NO_ANALYTICS": "1", **(env or {})},
                                process_group=0, pass_fds=() if lock is None else (lock,))
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    stops = {sig: signal.signal(sig, _interrupted) for sig in (signal.SIGTERM, signal.SIGHUP)
             if signal.getsignal(sig) != signal.SIG_IGN}   # under nohup, a hang-up stays ignored
    try:
        status = proc.wait()
    except KeyboardInterrupt:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        proc.wait()
        raise
    finally:
        for sig, handler in stops.items():
            signal.signal(sig, handler)
    if status:
        raise Failed(status)


@contextlib.contextmanager
def warm_stages(threads: int | None = None, dvc: bool = False) -> Iterator[None]:
    """While inside: a warm interpreter (linclass.orchestration.warm) for this workspace and DVC's temporary copies
    of it, named in this process's environment, so that every stage DVC starts from here, and the short dvc
    commands of linclass.orchestration.sweep, start with MLflow, DVC, numpy... imported (about 2 s of CPU a
    stage). Its BLAS has `threads` threads (default: train.blas_threads of params.yaml), the train stages' (the
    other stages run with them too: the same results). With `dvc`, it loads DVC's modules too, for the short dvc
    commands. What it ran, and what it left to a fresh python: WARM_LOG."""
    from linclass.orchestration.warm import serving
    from linclass.plumbing.threads import VARIABLES, blas_threads

    threads = threads or blas_threads()
    env = {**os.environ, **(dict.fromkeys(VARIABLES, str(threads)) if threads else {})}
    WARM_LOG.parent.mkdir(parents=True, exist_ok=True)
    with serving(Path.cwd(), env, WARM_LOG, dvc=dvc) as variables:
        before = {name: os.environ.get(name) for name in variables}
        os.environ.update(variables)
        try:
            yield
        finally:
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def one_value_each(overrides: list[str]) -> None:
    """ValueError (one line, naming the override) for what Hydra's grammar refuses or reads as a sweep: its own
    lines were a lexer's ("LexerNoViableAltException: train..epochs=5 ^ See https://hydra.cc/..."), a sweep's
    ("Ambiguous value ... add --multirun to your command line", a flag linclass has not), or named no key at all
    ("unknown setting ; known: ..."). The schema's checks of config.compose come after this one."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for item in overrides:
        if "=" not in item:
            continue   # config.compose: "'train.epochs' sets nothing" (or a deletion, ~key)
        try:
            override = parser.parse_overrides([item])[0]
        except OverrideParseException:
            raise ValueError(f"{item!r} is not key=value in Hydra's syntax (check its dots, brackets and quotes), "
                             "e.g. train.epochs=5 or grid.losses=[svm,softmax]") from None
        if not override.key_or_group:
            spaces = " (no spaces around '=')" if item.startswith("=") else ""
            raise ValueError(f"{item!r} names no setting{spaces}: allowed key=value, e.g. train.epochs=5 "
                             "(linclass settings lists the keys)")
        if override.is_sweep_override():
            raise ValueError(f"{item} gives several values: an experiment takes one per setting (a list setting: "
                             "key=[a,b]); several values: one make exp each (make sweep: learning rate x strength)")


def checked(overrides: list[str] | None) -> tuple[list[str], dict]:
    """The overrides, and the settings of composing conf/ with them (every setting checked; nothing written): its
    train.blas_threads are the train stages' threads, what their warm interpreter loads."""
    from linclass.config import compose

    overrides = list(overrides or [])
    one_value_each(overrides)
    return overrides, compose("conf", overrides)


def workspace_is(params: dict) -> bool:
    """True when the workspace already is the experiment of `params`: params.yaml holds them as `dvc exp run`
    would write them, and every stage is up to date (`dvc status`), so that DVC would record a copy of it."""
    from omegaconf import OmegaConf

    from linclass.orchestration.sweep import dvc

    try:
        if Path("params.yaml").read_text(encoding="utf-8") != OmegaConf.to_yaml(params):
            return False
    except OSError:
        return False
    return dvc("status", "--quiet", check=False).returncode == 0


# ---- settings ----

@app.command()
def config(overrides: Overrides = None,
           check: Annotated[bool, typer.Option("--check", help="only check; params.yaml stays as it is")] = False):
    """Compose conf/ with OVERRIDES into params.yaml (what DVC does on `dvc exp run -S`), every setting checked."""
    from linclass.config import compose, flatten, load_params, write_params
    from linclass.settings import ConfigError

    one_value_each(list(overrides or []))
    if check:
        compose("conf", overrides or [])
        typer.echo("settings OK" + (f" with {' '.join(overrides)}" if overrides else ""))
        return
    with one_pipeline_at_a_time():
        try:   # params.yaml as it is
            before = flatten(load_params())
        except (OSError, ConfigError):   # missing or unreadable
            before = {}
        after = flatten(write_params(overrides=overrides or []))
    typer.echo("params.yaml written from conf/" + (f" with {' '.join(overrides)}" if overrides else ""))
    # params.yaml can hold settings that conf/ does not (`make exp SET=...` and `dvc exp apply` write it):
    # composing conf/ replaces them, and the stages they feed run again; say which, never silently
    changed = [key for key in after if key in before and before[key] != after[key]]
    for key in changed:
        typer.echo(f"  changed {key}: {before[key]!r} -> {after[key]!r}")


@app.command()
def settings(prefix: Annotated[str, typer.Argument(help="only settings starting with this, e.g. train")] = ""):
    """Every setting: its key, what it allows, its default and what it means."""
    from linclass.settings import Settings, describe

    lines = describe(prefix)
    if not lines:
        sections = ", ".join(name for name in Settings.model_fields if name != "checked")
        raise ValueError(f"no setting starts with {prefix!r}; the sections: {sections}")
    typer.echo("\n".join(lines))


# ---- running the pipeline ----

@app.command()
def repro():
    """Run the whole pipeline in the workspace (dvc repro, stages started warm), then every model's accuracies."""
    with one_pipeline_at_a_time() as lock, warm_stages():
        dvc_foreground("repro", lock=lock)
    print_test_accuracies(Path("metrics/test.json"))


def print_test_accuracies(path: Path, ranking: Path = Path("reports/comparison.csv")) -> None:
    """metrics/test.json as a table: a row per model, best on validation first, tied models in the order of the
    evaluate stage's `ranking` (the grid's; as make compare and the champion's runner-up have them)."""
    import pandas as pd

    from linclass.orchestration.sweep import TEST_KEYS, VAL_KEYS, accuracy_columns

    rows = [{"model": name, **{key: values.get(key) for key in (*VAL_KEYS, *TEST_KEYS)}} for name, values in
            json.loads(path.read_text()).items()]
    try:   # only for ties: without a readable ranking, the table still prints
        order = list(pd.read_csv(ranking)["model"])
    except (OSError, ValueError, KeyError):
        order = []
    rows.sort(key=lambda row: order.index(row["model"]) if row["model"] in order else len(order))
    table = pd.DataFrame(rows).sort_values("val_accuracy", ascending=False, kind="stable")
    typer.echo(f"{path}: [low, high] is the 95% Wilson interval")
    typer.echo(accuracy_columns(table).to_string(index=False))


@app.command()
def exp(overrides: Overrides = None):
    """One experiment in the workspace with OVERRIDES (dvc exp run -S ...), checked first; then its accuracies."""
    if not overrides:
        raise ValueError("an experiment needs settings to change, e.g. linclass exp train.epochs=5 "
                         "(make exp SET='train.epochs=5'); the workspace as it is: linclass repro (make repro)")
    from linclass.orchestration.sweep import set_args

    overrides, params = checked(overrides)
    if workspace_is(params):   # DVC would run nothing and list one more experiment, the same as the workspace
        typer.echo(f"nothing to run: {' '.join(overrides)} gives the workspace's own settings, and its results are "
                   "up to date (make compare shows them); no experiment recorded")
        return
    with one_pipeline_at_a_time() as lock, warm_stages(params["train"]["blas_threads"]):
        try:
            dvc_foreground("exp", "run", *set_args(overrides), lock=lock)
        except (Failed, KeyboardInterrupt):   # params.yaml holds its settings; DVC removed what it began to rebuild
            typer.echo("the workspace holds this experiment's settings and only what it finished; the committed "
                       "results come back with: git checkout params.yaml && make repro (from DVC's run-cache)")
            raise
    # as make repro does (DVC's own last line, "Experiment results have been applied to your workspace", showed
    # no number); beside the earlier runs: make compare
    print_test_accuracies(Path("metrics/test.json"))
    typer.echo("beside the models before it: make compare (linclass compare)")


Backend = Annotated[str, typer.Option(help="local (DVC's queue) or ray (a Ray cluster)")]
Jobs = Annotated[int, typer.Option("--jobs", "-j", min=1, help="experiments at a time (local backend)")]
Address = Annotated[str | None, typer.Option(help="the Ray head HOST:PORT (default $RAY_ADDRESS, else "
                                                     "the cluster of `linclass cluster up`)")]
Summary = Annotated[Path | None, typer.Option(help="also write each point's result (node, seconds, error) "
                                                       "to this JSON file (ray backend)")]
Features = Annotated[str, typer.Option(help="the models' input: pixels, or a kind of features (hog_hist)")]


def check_backend(backend: str) -> None:
    """ValueError (one line) unless `backend` is local or ray; RuntimeError when it is ray and this environment
    has no Ray (a traceback of ModuleNotFoundError, after the warm interpreter had started)."""
    import importlib.util

    if backend not in ("local", "ray"):
        raise ValueError(f"--backend {backend!r}: allowed local, ray")
    if backend == "ray" and importlib.util.find_spec("ray") is None:
        raise RuntimeError("Ray is not installed in this environment: `make .venv/bin/.cluster` installs it (make "
                           "cluster-up and BACKEND=ray with make install it themselves)")


def _points(points, prefix: str, overrides: list[str], backend: str, jobs: int, address: str | None,
            table: Path | None = None, summary: Path | None = None, features: str = "pixels",
            best: bool = True) -> None:
    from linclass.orchestration import sweep

    with one_pipeline_at_a_time():   # the backend was checked by the caller, before the warm interpreter started
        if backend == "ray":
            from linclass.orchestration import ray_backend

            results = ray_backend.run_sweep(points, overrides, address=address)
            if summary is not None:
                summary.write_text(json.dumps(results, indent=1))
            failed = [ray_backend.describe(r) for r in results if not r["ok"]]
        else:
            failed = sweep.run_points(points, prefix, overrides, jobs)
    rows = sweep.results_table(prefix, features)
    sweep.print_table(rows, prefix, best)
    if table is not None and rows:
        typer.echo(f"table written to {sweep.write_table(rows, table)}")
    if failed:
        raise RuntimeError(f"{len(failed)} experiment(s) failed: {'; '.join(failed)}")


@app.command()
def grid(overrides: Overrides = None, jobs: Jobs = 2, backend: Backend = "local", address: Address = None,
         summary: Summary = None):
    """Every loss x regularizer of conf/ as its own experiment, JOBS at a time, then evaluated together.

    The features models of each kind are one more experiment. Then the whole pipeline from DVC's run-cache:
    `dvc repro` (with OVERRIDES: the experiment grid-all, params.yaml untouched), and the table of the grid's
    models with their validation and test accuracy."""
    from linclass.orchestration import sweep

    overrides, params = checked(overrides)
    check_backend(backend)
    threads = params["train"]["blas_threads"]
    with warm_stages(threads, dvc=True):   # also for the queue's experiments and grid-all: DVC's temporary copies
        _points(sweep.grid_points(overrides=overrides), "grid-", overrides, backend, jobs, address, summary=summary,
                best=False)   # the grid's best comes last, of every model of it, grid-all's features models too
        with one_pipeline_at_a_time() as lock:
            if overrides:
                dvc_foreground("exp", "run", "--temp", "-n", "grid-all", *sweep.set_args(overrides), lock=lock)
            else:
                dvc_foreground("repro", lock=lock)
    # the grid's points trained only; here every model of it with its test accuracy, evaluated together
    revision = "grid-all" if overrides else "workspace"
    sweep.print_comparison(sweep.held_by(sweep.comparison_rows(sweep.exp_show()), revision),
                           title=f"the grid, evaluated ({revision}): every model with its validation and test accuracy")


@app.command()
def sweep(loss: Annotated[str, typer.Option(help="svm, squared_svm or softmax")],
          regularizer: Annotated[str, typer.Option(help="none, l1, l2 or elasticnet")],
          learning_rates: Annotated[str, typer.Option(help="comma-separated, e.g. 0.01,0.02,0.05")],
          strengths: Annotated[str, typer.Option(help="comma-separated, e.g. 1e-4,1e-3,1e-2")],
          overrides: Overrides = None, jobs: Jobs = 2, backend: Backend = "local", address: Address = None,
          summary: Summary = None, features: Features = "pixels"):
    """Learning rate x strength of one combination, each an experiment, chosen on validation.

    The table goes to sweeps/<loss>-<regularizer>.csv (on features: sweeps/<loss>-<regularizer>-<kind>.csv),
    its heat map to reports/hyperparameter_map/ and, when the workspace has one, to the report."""
    from linclass.orchestration.sweep import sweep_points, sweep_prefix
    from linclass.plumbing.paths import SWEEPS, lock_stages

    overrides, params = checked(overrides)
    points = sweep_points(loss, regularizer, learning_rates, strengths, features)
    check_backend(backend)
    name = f"{loss}-{regularizer}" if features == "pixels" else f"{loss}-{regularizer}-{features}"
    with warm_stages(params["train"]["blas_threads"], dvc=True):
        _points(points, sweep_prefix(loss, regularizer, features), overrides, backend, jobs, address,
                table=SWEEPS / f"{name}.csv", summary=summary, features=features)
        # its heat map; and the report that shows it, once the workspace has one (--single-item: these two alone,
        # never a stale stage upstream of the report, such as a training)
        with one_pipeline_at_a_time() as lock:
            dvc_foreground("repro", "--single-item", "hyperparameter_map", *report_to_rebuild(lock_stages()),
                           lock=lock)


def report_to_rebuild(lock: dict) -> list[str]:
    """['report'] when the workspace has one to rebuild: dvc.lock names the stage and every input it read
    is here. A fresh clone of a commit with dvc.lock has the lock but none of the outputs before `make pull`:
    the report then failed the sweep ('No such file or directory: .../reports/evaluation', exit 1)."""
    if "report" not in lock:
        return []
    missing = [dep["path"] for dep in lock["report"].get("deps") or []
               if dep["path"] != "reports/hyperparameter_map" and not Path(dep["path"]).exists()]
    if missing:
        typer.echo(f"report not rebuilt: the workspace lacks {', '.join(missing[:3])}"
                   f"{' ...' if len(missing) > 3 else ''} (make pull, or make repro, brings them)")
        return []
    return ["report"]


# ---- the lecture ----

@app.command()
def lecture():
    """The lecture's worked examples (scores, SVM and softmax losses, W against 2W), computed; slide errors named."""
    from linclass.studies.lecture import worked_examples

    typer.echo("\n".join(worked_examples()))


# ---- results ----

@app.command()
def table(prefix: Annotated[str, typer.Option(help="experiment names starting with this")] = "",
          csv: Annotated[Path | None, typer.Option(help="also write the table to this CSV file")] = None,
          features: Features = "pixels"):
    """The experiments of a grid or sweep, best on validation first."""
    from linclass.orchestration import sweep

    at_project_root()
    rows = sweep.results_table(prefix, features)
    if csv is not None and not rows:   # a mistyped prefix would replace a sweep's table with an empty one
        raise RuntimeError(f"no finished experiment{f' named {prefix}*' if prefix else ''}"
                           f"{sweep.elsewhere(prefix)}: {csv} not written")
    sweep.print_table(rows, prefix)
    if csv is not None:
        typer.echo(f"table written to {sweep.write_table(rows, csv)}")


@app.command()
def compare():
    """Every trained model of the workspace and the experiments: settings that differ, val/test accuracy."""
    from linclass.orchestration import sweep

    at_project_root()
    sweep.print_comparison(sweep.comparison_rows(sweep.exp_show()))


@app.command()
def experiments():
    """Each revision (workspace, HEAD and every commit with experiments, each experiment): its champion with
    val/test accuracy, the settings that differ.

    A revision that did not evaluate its own models (a point of the grid) shows no champion. Every model of
    each revision: linclass compare."""
    from linclass.orchestration import sweep

    at_project_root()
    sweep.print_experiments(sweep.experiment_summary_rows(sweep.exp_show(every_baseline=True)))


# ---- MLflow ----

Port = Annotated[int, typer.Option(min=1, max=65535, help="the port to listen on")]


@app.command()
def store():
    """Create the MLflow store and experiments of params.yaml (once, before pipelines share it); print the link."""
    from linclass.tracking.runs import prepare_store

    typer.echo(prepare_store(_params().tracking))


@app.command()
def ui(port: Port = 5000):
    """The MLflow UI on the project's own store (127.0.0.1); prints the link to the training runs."""
    from linclass.settings import Tracking
    from linclass.tracking import serve

    at_project_root()
    serve.ui(_params().tracking if Path("params.yaml").exists() else Tracking(), port)


@app.command()
def server(host: Annotated[str, typer.Option(help="the address to listen on; 0.0.0.0 for the LAN")] = "127.0.0.1",
           port: Port = 5000,
           backend_store: Annotated[str | None, typer.Option(help="any SQLAlchemy URL (default: sqlite in "
                                                                      "mlflow-server/)")] = None,
           artifacts: Annotated[str | None, typer.Option(help="a folder or s3://... (default: "
                                                                  "mlflow-server/artifacts)")] = None):
    """A tracking server that the pipeline and teammates log to; it answers only its token (mlflow-server/token):
    export MLFLOW_TRACKING_URI=http://HOST:PORT MLFLOW_TRACKING_TOKEN=$(cat mlflow-server/token)."""
    from linclass.tracking import serve

    serve.server(host, port, backend_store, artifacts)


@app.command()
def reap():
    """Mark KILLED the MLflow runs of this machine whose process is gone (every stage also does it)."""
    from linclass.tracking.runs import project_root, reap_all, resolve_tracking_uri

    tracking = _params().tracking
    missing = missing_local_store(resolve_tracking_uri(tracking.uri, project_root()))
    if missing is not None:   # MLflow would create an empty store there, to find no run in it
        typer.echo(f"no MLflow store at {missing}: nothing to reap (nothing was created)")
        return
    uri, killed = reap_all(tracking)
    typer.echo(f"MLflow store {uri}: {len(killed)} run(s) whose process is gone marked KILLED: "
               f"{' '.join(killed) or '-'}")


def missing_local_store(uri: str) -> Path | None:
    """The path of a local store (an sqlite file, a file: or plain folder) that does not exist, else None."""
    from urllib.parse import unquote, urlsplit

    from linclass.tracking.store import sqlite_path

    if uri.startswith("sqlite:"):
        path = sqlite_path(uri)
    elif uri.startswith("file:"):
        path = Path(unquote(urlsplit(uri).path))
    elif "://" not in uri:
        path = Path(uri)
    else:
        return None
    return path if path is not None and not path.exists() else None


def _params():
    from linclass.plumbing.stage import stage_params

    at_project_root()
    return stage_params()


# ---- the team: stack, cluster, remote ----

@services_app.command("up")
def services_up():
    """Start whatever part of the stack is not running (generates its secrets once)."""
    from linclass.orchestration import services

    typer.echo(services.up(services.services_dir()))


@services_app.command("down")
def services_down():
    """Stop the stack (data and users are kept)."""
    from linclass.orchestration import services

    services.down(services.services_dir())
    typer.echo(f"stack down (data kept in {services.services_dir()})")


@services_app.command("status")
def services_status():
    """Which parts answer (a real query on the database), and their memory; exit 3 when a part is down."""
    from linclass.orchestration import services

    lines, answering = services.status(services.services_dir())
    typer.echo("\n".join(lines))
    if not answering:
        raise Failed(3)


@services_app.command("add-user")
def services_add_user(name: str, grant: Annotated[list[str] | None, typer.Option(
        help="EXPERIMENT=PERMISSION (READ, EDIT, MANAGE, NO_PERMISSIONS), repeatable")] = None):
    """Create a teammate's account; their variables go to .services/users/NAME.env."""
    from linclass.orchestration import services

    grants = services.parse_grants(grant or [])
    path, created = services.add_user(services.services_dir(), name, grants)
    granted = ", ".join(f"{e}={p}" for e, p in grants)
    typer.echo(f"user {name} created; give them {path} (source it)" if created
               else f"user {name} exists; granted {granted} (password and {path} unchanged)")


@services_app.command("env")
def services_env(user: Annotated[str, typer.Option(help="whose credentials")] = "admin"):
    """Shell lines pointing a clone at the stack: eval "$(linclass services env)"."""
    from linclass.orchestration import services

    typer.echo("\n".join(services.env_lines(services.services_dir(), user)))


@cluster_app.command("up")
def cluster_up(head: Annotated[str, typer.Option(help="head node address")] = "127.0.0.2",
               workers: Annotated[str, typer.Option(help="comma-separated worker addresses")] = "127.0.0.3",
               port: Port = 6390, cpus: Annotated[int, typer.Option(min=1, help="CPUs per node")] = 1):
    """A Ray head and workers on loopback addresses (127.0.0.2 and up: Ray rewrites 127.0.0.1)."""
    from linclass.orchestration import cluster

    check_backend("ray")
    nodes = tuple(ip for ip in workers.split(",") if ip)
    started = cluster.start_checked(head, nodes, port, cpus)
    typer.echo(f"Ray cluster up: head {started.address}, workers {', '.join(nodes) or 'none'}, {cpus} CPU each; "
               f"logs in {started.state_dir}\nuse it: linclass sweep --backend ray ... (or "
               f"RAY_ADDRESS={started.address}); stop it: linclass cluster down")


@cluster_app.command("down")
def cluster_down(port: Port = 6390):
    """Stop the cluster of `linclass cluster up`."""
    from linclass.orchestration import cluster

    found = cluster.Cluster.load(port)
    cluster.stop(found)
    typer.echo(f"Ray cluster {found.address} stopped")


@cluster_app.command("status")
def cluster_status(port: Port = 6390):
    """Its nodes: address, process, up or down, log."""
    from linclass.orchestration import cluster

    typer.echo("\n".join(cluster.status_lines(cluster.Cluster.load(port))))


Remote = Annotated[str | None, typer.Option("--remote", "-r", help="a configured DVC remote (default: the default)")]


@app.command()
def push(remote: Remote = None):
    """Send every cached output and the run-cache to the team's DVC remote (checked first)."""
    from linclass.orchestration.remote import transfer

    transfer("push", ".", remote)


@app.command()
def pull(remote: Remote = None):
    """Get every output and the run-cache from the team's DVC remote (checked first); then dvc status."""
    from linclass.orchestration.remote import transfer

    transfer("pull", ".", remote)


def given_value(param, argv: list[str]) -> str | None:
    """What the command line gave the option `param` (its last occurrence), for the error line: typer's own
    message says what is allowed ("Input should be less than or equal to 65535") but not what was given."""
    names = [*getattr(param, "opts", ()), *getattr(param, "secondary_opts", ())]
    given = None
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                given = argv[i + 1]
            elif name.startswith("--") and arg.startswith(name + "="):
                given = arg[len(name) + 1:]
    return given


def command_path(argv: list[str]) -> str:
    """`linclass` and the (sub)commands that `argv` begins with: linclass services add-user."""
    commands, words = getattr(typer.main.get_command(app), "commands", {}), ["linclass"]
    for word in argv:
        if word not in commands:
            break
        commands = getattr(commands[word], "commands", {})
        words.append(word)
    return " ".join(words)


def main() -> None:
    """The console script: known failures are one line on stderr and exit status 1; a bad or missing option
    is one line too (exit status 2), naming the option, instead of typer's framed usage message."""
    try:
        status = app(standalone_mode=False)
    except typer.TyperException as exc:   # typer's usage errors: a bad value, a missing option, no such command
        message = " ".join(exc.format_message().split())
        if type(exc).__name__ == "NoArgsIsHelpError":   # `linclass` or `linclass services` alone: the help
            if message:
                typer.echo(exc.format_message())
            sys.exit(0)
        ctx = getattr(exc, "ctx", None)   # none for an option without its value (`linclass ui --port`)
        where = ctx.command_path if ctx is not None else command_path(sys.argv[1:])
        listed = "commands" if message.startswith("No such command") else "options"
        given = given_value(getattr(exc, "param", None), sys.argv[1:])
        print(f"error: {message}{'' if given is None else f', not {given!r}'} ({where} -h lists the {listed})",
              file=sys.stderr)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):   # (typer.Abort is a RuntimeError: before the clause below)
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Failed as exc:
        sys.exit(exc.status)
    except (ValueError, RuntimeError, OSError) as exc:   # ConfigError, the modules' own errors, a missing file
        if os.environ.get("LINCLASS_DEBUG"):
            raise
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
