"""MLflow tracking: where the store is, one run per model, histories in batches, honest run status.

Default store: `sqlite:///<absolute project root>/mlflow.db` with artifacts in `<root>/mlartifacts`.
The URI is absolute so a stage that DVC runs in a temporary copy of the project
(`dvc exp run --queue` / `--temp`, under `<root>/.dvc/tmp/exps/`) logs to the same store.
`MLFLOW_TRACKING_URI` (a team server) wins over the config's `tracking.uri`, which wins over the default.

Every run is tagged with where it was made (host, project root, and the DVC experiment name when
DVC runs it as an experiment), so that the MLflow UI can be filtered by experiment and so that a
stage looking up "the run that trained these weights" prefers the one made from this project copy.

Training runs go to the experiment `tracking.experiment`, study and report runs to
`<experiment>-studies`; both are tagged for the UI's machine-learning view. A training run logs its
own settings as params (training_params) and its per-step curves at chart resolution (curve_points).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import base64
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np

# Fail within seconds, not minutes, when a tracking server does not answer (MLflow's defaults
# retry 7 times with backoff and wait 120 s a request). A user's own setting wins.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
# Stage logs get one line per event, not a progress bar per artifact download.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from linclass.plumbing.redact import redact_url  # noqa: E402,F401  (tracking.redact_url: its users' name)
from linclass.plumbing.store import (StoreError, artifact_root, check_store, process_tags,  # noqa: E402
                                     reap, store_lock)

# The MLflow UI opens an experiment with this tag in its classic machine-learning view (runs, charts,
# models), not the GenAI one (traces, judges, prompts).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
STUDIES_SUFFIX = "-studies"  # study and report runs live in "<experiment>-studies", apart from training
MAX_CURVE_POINTS = 1000  # per-step curves in MLflow: window means, at most this many points a curve


class TrackingError(StoreError):
    """The tracking store cannot be used; the message is one line and says what to do."""


def project_root(cwd: str | Path | None = None) -> Path:
    """The project's root, also from inside a DVC temporary experiment copy (<root>/.dvc/tmp/exps/...).

    Without `cwd`, DVC's own answer wins: it sets DVC_ROOT for every stage it runs, to the parent
    project's root for queued and --temp experiments.
    """
    if cwd is None and os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path(cwd or os.getcwd()).resolve()
    parts = here.parts
    for i in range(len(parts) - 2):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return here


def resolve_tracking_uri(configured: str | None, root: str | Path) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if configured:
        return configured
    return f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def point_mlflow_at(uri: str) -> None:
    """mlflow.set_tracking_uri, without its export of the URI to MLFLOW_TRACKING_URI: in this process that
    variable would then win over the next store asked for explicitly (resolve_tracking_uri reads it first)."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before




def check_access(uri: str, experiment: str, timeout: float = 10.0) -> None:
    """For an http(s) store: read the experiment with the user's credentials before any work.

    A wrong password (401) or no permission on the experiment (403) raises a one-line TrackingError;
    a missing experiment (404) is fine: setup() creates it.
    """
    if not uri.startswith(("http://", "https://")):
        return
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    query = urllib.parse.urlencode({"experiment_name": experiment})
    request = urllib.request.Request(f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/get-by-name?{query}")
    if user is not None:
        token = f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(token).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            found = json.loads(response.read() or b"{}").get("experiment", {})
        if user is not None and _may_only_read(uri, request.get_header("Authorization"), found, timeout):
            raise TrackingError(f"user {user!r} may only read MLflow experiment {experiment!r} at {redact_url(uri)} "
                                "(READ): ask its owner for EDIT, or set tracking.experiment to your own")
    except urllib.error.HTTPError as exc:
        body = b""
        with contextlib.suppress(OSError, AttributeError):
            body = exc.read()
        exc.close()
        where = redact_url(uri)
        if exc.code == 401:
            who = f"user {user!r}" if user else "no user (MLFLOW_TRACKING_USERNAME is not set)"
            raise TrackingError(f"MLflow server {where} rejected the credentials of {who} (HTTP 401): "
                                "check MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD") from None
        if exc.code == 403:
            raise TrackingError(f"user {user!r} has no permission on MLflow experiment {experiment!r} at {where} "
                                "(HTTP 403): ask its owner for one, or set tracking.experiment to your own") from None
        if exc.code != 404:
            try:
                message = str(json.loads(body).get("message", ""))
            except (ValueError, AttributeError, TypeError):
                message = ""
            down = " (its database is not reachable)" if "OperationalError" in message else ""
            detail = redact_url(" ".join(message.split()))[:300]
            raise TrackingError(f"MLflow server {where} cannot read experiment {experiment!r}{down}: "
                                f"HTTP {exc.code} {detail}".rstrip()) from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise TrackingError(f"MLflow tracking server {redact_url(uri)} did not answer "
                            f"({getattr(exc, 'reason', exc)})") from None


def _may_only_read(uri: str, authorization: str, experiment: dict, timeout: float) -> bool:
    """True when the server's basic-auth app lists READ as the user's grant on this experiment."""
    request = urllib.request.Request(f"{uri.rstrip('/')}/api/3.0/mlflow/users/current/permissions",
                                     headers={"Authorization": authorization})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            mine = json.loads(response.read() or b"{}")
    except (urllib.error.URLError, OSError, ValueError):   # no auth app, or an older one: the write will tell
        return False
    grants = {g.get("permission") for g in mine.get("permissions", [])
              if g.get("resource_type") == "experiment" and g.get("resource_pattern") == experiment.get("experiment_id")}
    return not mine.get("is_admin") and grants == {"READ"}


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """For an http(s) store: raise TrackingError unless the server answers /health within `timeout`."""
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read(64)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"MLflow tracking server {redact_url(uri)} did not answer within {timeout:g} s ({reason}); "
            "start it (`make server`) or unset MLFLOW_TRACKING_URI") from None


def setup(experiment: str, configured_uri: str | None = None, root: str | Path | None = None) -> str:
    """Point MLflow at the store, create the database and the experiment if needed; return its id.

    Safe to call from several processes at once (a sqlite store is created under a file lock; a lost
    creation race re-reads the experiment). Runs of this host whose process is gone are marked KILLED.
    """
    root = project_root(root)
    uri = resolve_tracking_uri(configured_uri, root)
    check_reachable(uri)
    check_access(uri, experiment)
    with store_lock(uri):
        check_store(uri)  # before MLflow opens it: MLflow makes a new store in an empty file
        point_mlflow_at(uri)
        client = MlflowClient(uri)
        experiment_id = _experiment_id(client, experiment, artifact_root(uri, root), uri)
    reap(client, [experiment_id])
    return experiment_id


def _experiment_id(client: MlflowClient, experiment: str, artifact_location: str | None, uri: str) -> str:
    for attempt in range(5):
        try:
            found = client.get_experiment_by_name(experiment)
            if found is not None:
                _tag_kind(client, found)
                return found.experiment_id
            return client.create_experiment(experiment, artifact_location=artifact_location,
                                            tags=EXPERIMENT_TAGS)
        except mlflow.exceptions.MlflowException as exc:
            if attempt == 4:
                raise TrackingError(f"cannot use MLflow experiment {experiment!r} at {redact_url(uri)}: "
                                    f"{redact_url(str(exc).splitlines()[0])}") from None
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _tag_kind(client: MlflowClient, experiment) -> None:
    """Tag an experiment made before EXPERIMENT_TAGS existed (one cheap call, only then)."""
    for key, value in EXPERIMENT_TAGS.items():
        if experiment.tags.get(key) != value:
            client.set_experiment_tag(experiment.experiment_id, key, value)


# The runs table as the training experiment opens with ?viewStateShareKey=linclass (a "shared view" of
# the MLflow UI, kept as an experiment tag): the accuracies and the settings that differ between runs,
# best on validation first. Without it the table shows no metric and no param until they are picked.
RUNS_VIEW_KEY = "linclass"
RUNS_VIEW = {
    "selectedColumns": ["attributes.`Models`",
                        *(f"metrics.`{m}`" for m in ("val_accuracy", "test_accuracy", "train_accuracy")),
                        *(f"params.`{p}`" for p in ("loss", "regularizer", "strength", "learning_rate",
                                                    "epochs", "batch_size"))],
    "orderByKey": "metrics.`val_accuracy`", "orderByAsc": False,
}


def set_runs_view(experiment_id: str) -> None:
    """Store RUNS_VIEW in the training experiment (only if it is not there yet).

    Two stages doing this at once can collide; the view is a convenience, so that costs a warning only.
    """
    client, key, value = MlflowClient(), f"mlflow.sharedViewState.{RUNS_VIEW_KEY}", json.dumps(RUNS_VIEW)
    try:
        if client.get_experiment(experiment_id).tags.get(key) != value:
            client.set_experiment_tag(experiment_id, key, value)
    except mlflow.exceptions.MlflowException as exc:
        print(f"warning: the MLflow runs view was not stored: {str(exc).splitlines()[0]}", file=sys.stderr)


def ui_url(experiment_id: str, base: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI page of the training runs: machine-learning view, RUNS_VIEW's columns."""
    return (f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={RUNS_VIEW_KEY}"
            "&workflowType=machine_learning")


def studies_experiment(experiment: str) -> str:
    """The experiment of the study and report runs that go with the training runs of `experiment`."""
    return experiment + STUDIES_SUFFIX


def git_commit(root: str | Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root or os.getcwd(),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def context_tags() -> dict[str, str]:
    """Where this run is made: host, project root and, under `dvc exp run`, the DVC experiment."""
    tags = {"host": socket.gethostname(), "project_root": str(project_root()), **process_tags()}
    for tag, variable in (("dvc_exp_name", "DVC_EXP_NAME"), ("dvc_exp_baseline_rev", "DVC_EXP_BASELINE_REV")):
        if os.environ.get(variable):
            tags[tag] = os.environ[variable]
    return tags


def history_metrics(key: str, values, steps=None, timestamp_ms: int | None = None) -> list[Metric]:
    """One Metric per value; NaN values (e.g. no validation set) are skipped."""
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    steps = range(len(values)) if steps is None else steps
    return [Metric(key, float(v), ts, int(s)) for s, v in zip(steps, values) if v == v]


def curve_points(values) -> tuple[np.ndarray, np.ndarray]:
    """A per-step curve (N,) at chart resolution: (steps (K,), means (K,)), K <= MAX_CURVE_POINTS.

    Consecutive steps are averaged in windows of ceil(N / MAX_CURVE_POINTS); a window's step is its
    last step (1-based). With N <= MAX_CURVE_POINTS every value is kept as it is.
    """
    values = np.asarray(values, dtype=np.float64)
    width = max(1, -(-len(values) // MAX_CURVE_POINTS))
    starts = np.arange(0, len(values), width)
    ends = np.minimum(starts + width, len(values))
    if width == 1:
        return ends, values
    return ends, np.add.reduceat(values, starts) / (ends - starts)


def training_params(params: Mapping, loss: str, regularizer: str) -> dict[str, object]:
    """The effective settings of one training run, flat and with plain names (MLflow's params).

    Only what this run used: its regularizer's strength (and beta for elastic net), its loss's delta
    (SVM losses), the SGD settings, the preprocessing and the data's md5. The same names for every
    combination, so that the runs of a grid and of a sweep line up in MLflow's parallel coordinates.
    """
    train, reg_cfg = params["train"], params["regularizer"][regularizer]
    flat: dict[str, object] = {"loss": loss, "regularizer": regularizer, "strength": reg_cfg["strength"]}
    if regularizer == "elasticnet":
        flat["beta"] = reg_cfg["beta"]
    if "delta" in params["loss"][loss]:
        flat["delta"] = params["loss"][loss]["delta"]
    flat["learning_rate"] = params["loss"][loss]["learning_rate"]
    for key in ("lr_decay", "epochs", "batch_size", "init_scale", "seed", "l1_step"):
        flat[key] = train[key]
    pre = params["preprocess"]
    flat.update(val_size=pre["val_size"], max_train=pre["max_train"], preprocess_seed=pre["seed"],
                scale=pre["scale"])
    if params.get("data", {}).get("md5"):
        flat["data_md5"] = params["data"]["md5"]
    return flat


def params_hash(flat: Mapping[str, object]) -> str:
    """8 hex digits that identify a set of settings (run names, tags)."""
    text = json.dumps({k: str(v) for k, v in flat.items()}, sort_keys=True)
    return hashlib.md5(text.encode()).hexdigest()[:8]


def scalar_metrics(values: Mapping[str, float], step: int = 0) -> list[Metric]:
    """{'test_accuracy': 0.4} -> one Metric each (NaN skipped)."""
    ts = int(time.time() * 1000)
    return [Metric(k, float(v), ts, step) for k, v in values.items() if v == v]


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that `finally` blocks and run status still happen."""


# An exception raised half-way through an MLflow call can leave its sqlite transaction open, holding the
# database lock: setting the run KILLED then fails and the run stays RUNNING. So a signal that arrives
# inside store code is raised when the outermost store call returns; a second signal is raised at once.
STORE_MODULES = ("mlflow", "sqlalchemy", "sqlite3", "alembic", "requests", "urllib3")
_pending_signals: list[int] = []


def _outermost_store_frame(frame):
    """The store frame that will return to our code, if `frame` is inside a store call; else None."""
    outermost = None
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] in STORE_MODULES:
        outermost, frame = frame, frame.f_back
    return outermost


def _raise_pending():
    sys.setprofile(None)
    first = _pending_signals[0]
    _pending_signals.clear()
    if first == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(f"received signal {signal.Signals(first).name}")


def _on_signal(signum, frame):
    """SIGINT/SIGTERM -> KeyboardInterrupt/Terminated, now or when the current store call returns."""
    _pending_signals.append(signum)
    store_frame = _outermost_store_frame(frame) if len(_pending_signals) == 1 else None
    if store_frame is None:
        _raise_pending()

    def raise_when_it_returns(f, event, arg):
        if event == "return" and f is store_frame:
            _raise_pending()

    sys.setprofile(raise_when_it_returns)


def end_run(status: str, wait: float | None = None) -> None:
    """End the active run with `status`; while the tracking server is down (restarting), keep trying
    for `wait` seconds (LINCLASS_END_RUN_WAIT, default 60) so that the run is not left RUNNING."""
    wait = float(os.environ.get("LINCLASS_END_RUN_WAIT", "60")) if wait is None else wait
    deadline = time.monotonic() + wait
    active = mlflow.active_run()
    try:
        mlflow.end_run(status=status)
        return
    except Exception as exc:  # noqa: BLE001 (MlflowException, or the HTTP client's own errors)
        error = exc
    # mlflow.end_run forgets the active run before it sets the status: retry on the run itself
    while active is not None and time.monotonic() < deadline:
        time.sleep(1.0)
        try:
            MlflowClient().set_terminated(active.info.run_id, status)
            return
        except Exception as exc:  # noqa: BLE001
            error = exc
    raise TrackingError(f"could not mark the MLflow run {status} at {redact_url(mlflow.get_tracking_uri())} "
                        f"within {wait:g} s: {redact_url(str(error).splitlines()[0])[:300]}") from None


@contextlib.contextmanager
def tracked_run(experiment_id: str, run_name: str, tags: Mapping[str, str] | None = None,
                run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that ends FINISHED on success, KILLED on SIGINT/SIGTERM and FAILED on an error.

    Never left RUNNING: the status is set before the exception propagates.
    """
    _pending_signals.clear()
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            if run_id is not None:
                run = mlflow.start_run(run_id=run_id)
            else:
                run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags={
                    k: redact_url(str(v)) for k, v in {**context_tags(), **dict(tags or {})}.items()})
        except KeyboardInterrupt:  # the signal came while the run was being created
            if mlflow.active_run() is not None:
                end_run("KILLED")
            raise
        try:
            yield run
        except KeyboardInterrupt:
            end_run("KILLED")
            raise
        except BaseException as exc:
            with contextlib.suppress(Exception):   # the server may be the thing that failed
                mlflow.set_tag("error", redact_url(f"{type(exc).__name__}: {exc}")[:5000])
            end_run("FAILED")
            raise
        else:
            end_run("FINISHED")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def study_run(params: Mapping, run_name: str, stage: str, kind: str = "study") -> Iterator[str]:
    """The MLflow run of a study or report stage, in the studies experiment (set up, tagged, ended
    honestly); yields its run id."""
    experiment_id = setup(studies_experiment(params["tracking"]["experiment"]), params["tracking"]["uri"])
    tags = {"kind": kind, "dvc_stage": stage, "git_commit": git_commit()}
    with tracked_run(experiment_id, run_name, tags) as active:
        yield active.info.run_id


def log_dataset(data_cfg: Mapping[str, object], num_train: int, num_val: int, attempts: int = 5) -> None:
    """Log the archive (its URL and md5) as the active run's training input.

    MLflow's database store looks the dataset up, then inserts it: two runs logging the same new
    dataset at the same moment (a parallel grid, two pipelines on one store) make the slower one fail
    on the unique (experiment, name, digest) key. Its transaction is rolled back, so trying again
    finds the dataset the other one inserted and only links it.
    """
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    dataset = MetaDataset(HTTPDatasetSource(redact_url(str(data_cfg["url"]))), name=str(data_cfg["name"]),
                          digest=str(data_cfg["md5"])[:16])
    tags = {"md5": str(data_cfg["md5"]), "train_images": str(num_train), "val_images": str(num_val)}
    for attempt in range(attempts):
        try:
            mlflow.log_input(dataset, context="training", tags=tags)
            return
        except mlflow.exceptions.MlflowException as exc:
            message = str(exc).lower()
            if attempt == attempts - 1 or not ("unique" in message or "duplicate" in message):
                raise
            time.sleep(0.1 * (attempt + 1))


def _quoted(value: str) -> str:
    return f'"{value}"' if "'" in value else f"'{value}'"


def find_run(experiment_id: str, tags: Mapping[str, str]) -> str | None:
    """The newest run of the experiment carrying all `tags`, or None.

    A run made from this project copy (same host and project root) wins over a newer one made
    elsewhere: two clones that train identical weights into one store each find their own run.
    """
    client = MlflowClient()
    here = {k: v for k, v in context_tags().items() if k in ("host", "project_root")}
    for extra in (here, {}):
        query = " and ".join(f"tags.`{k}` = {_quoted(str(v))}" for k, v in {**tags, **extra}.items())
        runs = client.search_runs([experiment_id], filter_string=query,
                                  order_by=["attributes.start_time DESC"], max_results=1)
        if runs:
            return runs[0].info.run_id
    return None


if __name__ == "__main__":
    # `python -m linclass.plumbing.tracking`: create the store and the experiment of params.yaml once, before
    # several pipelines log to it at the same time. `... tracking reap`: mark KILLED every RUNNING run of
    # this host whose process is gone (setup() does it for the experiment at every stage's start).
    from linclass.plumbing.config import load_params

    try:
        tracking_cfg = load_params()["tracking"]
        if sys.argv[1:] == ["reap"]:
            uri = resolve_tracking_uri(tracking_cfg["uri"], project_root())
            check_reachable(uri)
            with store_lock(uri):
                check_store(uri)
                client = MlflowClient(uri)
                experiment_ids = [e.experiment_id for e in client.search_experiments()]
            killed = reap(client, experiment_ids)
            print(f"MLflow store {uri}: {len(killed)} run(s) whose process is gone marked KILLED "
                  f"{' '.join(killed)}".rstrip())
        else:
            experiment_id = setup(tracking_cfg["experiment"], tracking_cfg["uri"])
            set_runs_view(experiment_id)
            setup(studies_experiment(tracking_cfg["experiment"]), tracking_cfg["uri"])
            print(f"MLflow store {mlflow.get_tracking_uri()}: experiment {tracking_cfg['experiment']!r} "
                  f"(id {experiment_id}) ready; its runs in the UI (make ui): {ui_url(experiment_id)}")
    except (StoreError, ValueError) as exc:
        sys.exit(f"error: {' '.join(str(exc).split())}")
