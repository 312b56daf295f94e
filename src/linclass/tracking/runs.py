"""MLflow runs that end honestly: where the store is, its experiments, one run per model or study.

Default store: `sqlite:///<absolute project root>/mlflow.db` with artifacts in `<root>/mlartifacts`.
The URI is absolute so a stage that DVC runs in a temporary copy of the project
(`dvc exp run --queue` / `--temp`, under `<root>/.dvc/tmp/exps/`) logs to the same store.
`MLFLOW_TRACKING_URI` (a team server) wins over the config's `tracking.uri`, which wins over the default.

Every run is tagged with where it was made (host, project root, process, and the DVC experiment name
when DVC runs it as an experiment), so that the MLflow UI can be filtered by experiment, a run whose
process died is found and marked KILLED (linclass.tracking.store.reap), and a stage looking up "the
run that trained these weights" prefers the one made from this project copy.

Training runs go to the experiment `tracking.experiment` (MLFLOW_EXPERIMENT_NAME, when set, wins), study and report
runs to `<experiment>-studies`.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import mlflow
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from tenacity import RetryError, retry, stop_after_attempt, stop_after_delay, wait_fixed, wait_incrementing

from linclass.redact import redact_url
from linclass.settings import Tracking
from linclass.tracking.signals import deferred_in_store_calls
from linclass.tracking.store import (
    STORE_CREATION,
    StoreError,
    artifact_root,
    check_store,
    keep_private,
    process_tags,
    quiet,
    reap,
    store_lock,
)
from linclass.tracking.ui import EXPERIMENT_TAGS

# Set by the Ray backend for the points of one task attempt (<sweep id>/<attempt>): the runs of an attempt
# lost with its node are told apart from those of its retry (linclass.orchestration.ray_backend.settle_runs).
SWEEP_ATTEMPT = "LINCLASS_SWEEP_ATTEMPT"
STUDIES_SUFFIX = "-studies"  # study and report runs live in "<experiment>-studies", apart from training
# Fail within seconds, not minutes, when a tracking server does not answer (MLflow's defaults retry 7
# times with backoff and wait 120 s a request). A user's own setting wins.
CLIENT_ENVIRONMENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                      "MLFLOW_HTTP_REQUEST_TIMEOUT": "20", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                      # with a tracking server, every run's end printed two links ("View run", "View experiment"):
                      # `make ui` and the table of make repro say where the runs are
                      "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


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




def check_access(uri: str, experiment: str) -> None:
    """For an http(s) store: read the experiment with the user's credentials before any work.

    A wrong password (401) or no permission on the experiment (403), or only READ on it, raises a one-line
    TrackingError; a missing experiment is fine: setup() creates it.
    """
    if not uri.startswith(("http://", "https://")):
        return
    user, where = os.environ.get("MLFLOW_TRACKING_USERNAME"), redact_url(uri)
    try:
        found = MlflowClient(uri).get_experiment_by_name(experiment)
    except MlflowException as exc:
        if exc.error_code == "UNAUTHENTICATED":
            who = f"user {user!r}" if user else "MLFLOW_TRACKING_TOKEN" if os.environ.get("MLFLOW_TRACKING_TOKEN") \
                else "no user and no token"
            raise TrackingError(f"MLflow server {where} rejected the credentials of {who} (HTTP 401): check "
                                "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (the team stack's logins) or "
                                "MLFLOW_TRACKING_TOKEN (the token of `make server`)") from None
        if exc.error_code == "PERMISSION_DENIED":
            raise TrackingError(f"user {user!r} has no permission on MLflow experiment {experiment!r} at {where} "
                                "(HTTP 403): ask its owner for one, or log to your own: "
                                "export MLFLOW_EXPERIMENT_NAME=<a name>") from None
        if "OperationalError" in str(exc) or " 503" in str(exc):   # MLflow's text: retries, a URL, a pool's name
            raise TrackingError(f"MLflow server {where} cannot read experiment {experiment!r}: its database is not "
                                "reachable (HTTP 503); on the team stack's machine `make services-up` starts what "
                                "is down (make services-status says what)") from None
        raise TrackingError(f"MLflow server {where} cannot read experiment {experiment!r}: "
                            f"{redact_url(' '.join(str(exc).split()))[:300]}") from None
    if found is not None and user is not None and _may_only_read(uri, user, found.experiment_id):
        raise TrackingError(f"user {user!r} may only read MLflow experiment {experiment!r} at {where} (READ): "
                            "ask its owner for EDIT, or log to your own: export MLFLOW_EXPERIMENT_NAME=<a name>")


def _may_only_read(uri: str, user: str, experiment_id: str) -> bool:
    """True when the server's basic-auth app lists READ as the user's grant on this experiment."""
    try:
        response = requests.get(f"{uri.rstrip('/')}/api/3.0/mlflow/users/current/permissions", timeout=10,
                                auth=(user, os.environ.get("MLFLOW_TRACKING_PASSWORD", "")))
        mine = response.json() if response.ok else {}
    except (requests.RequestException, ValueError):   # no auth app, or an older one: the write will tell
        return False
    grants = {g.get("permission") for g in mine.get("permissions", [])
              if g.get("resource_type") == "experiment" and g.get("resource_pattern") == experiment_id}
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
    for key, value in CLIENT_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    root = project_root(root)
    uri = resolve_tracking_uri(configured_uri, root)
    check_reachable(uri)
    check_access(uri, experiment)
    with store_lock(uri), quiet(STORE_CREATION):   # the first stage makes the store's tables
        check_store(uri)  # before MLflow opens it: MLflow makes a new store in an empty file
        point_mlflow_at(uri)
        client = MlflowClient(uri)
        try:
            experiment_id = _experiment_id(client, experiment, artifact_root(uri, root))
        except MlflowException as exc:
            raise TrackingError(f"cannot use MLflow experiment {experiment!r} at {redact_url(uri)}: "
                                f"{redact_url(str(exc).splitlines()[0])}") from None
        keep_private(uri)
    reap(client, [experiment_id])
    return experiment_id


@retry(stop=stop_after_attempt(5), wait=wait_incrementing(0.2, 0.2), reraise=True)
def _experiment_id(client: MlflowClient, experiment: str, artifact_location: str | None) -> str:
    """The experiment's id, created if it does not exist (two creators at once: the loser reads it)."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return client.create_experiment(experiment, artifact_location=artifact_location, tags=EXPERIMENT_TAGS)
    for key, value in EXPERIMENT_TAGS.items():   # an experiment made before the tags existed
        if found.tags.get(key) != value:
            client.set_experiment_tag(found.experiment_id, key, value)
    return found.experiment_id


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
    for tag, variable in (("dvc_exp_name", "DVC_EXP_NAME"), ("dvc_exp_baseline_rev", "DVC_EXP_BASELINE_REV"),
                          ("sweep_attempt", SWEEP_ATTEMPT)):
        if os.environ.get(variable):
            tags[tag] = os.environ[variable]
    return tags


def end_run(status: str, wait: float | None = None) -> None:
    """End the active run with `status`; while the tracking server is down (restarting), keep trying
    for `wait` seconds (LINCLASS_END_RUN_WAIT, default 60) so that the run is not left RUNNING."""
    wait = float(os.environ.get("LINCLASS_END_RUN_WAIT", "60")) if wait is None else wait
    active = mlflow.active_run()
    try:
        mlflow.end_run(status=status)
        return
    except Exception as exc:  # noqa: BLE001 (MlflowException, or the HTTP client's own errors)
        error: BaseException = exc
    if active is not None:   # mlflow.end_run forgets the active run before it sets the status: retry on the run
        try:
            retry(stop=stop_after_delay(wait), wait=wait_fixed(1.0))(MlflowClient().set_terminated)(
                active.info.run_id, status)
            return
        except RetryError as exc:
            error = exc.last_attempt.exception() or error
    raise TrackingError(f"could not mark the MLflow run {status} at {redact_url(mlflow.get_tracking_uri())} "
                        f"within {wait:g} s: {redact_url(str(error).splitlines()[0])[:300]}") from None


@contextlib.contextmanager
def tracked_run(experiment_id: str, run_name: str, tags: Mapping[str, str] | None = None,
                run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that ends FINISHED on success, KILLED on SIGINT/SIGTERM and FAILED on an error.

    Never left RUNNING: the status is set before the exception propagates.
    """
    with deferred_in_store_calls():
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


@contextlib.contextmanager
def study_run(tracking: Tracking, run_name: str, stage: str, description: str, kind: str = "study") -> Iterator[str]:
    """The MLflow run of a study or report stage, in the studies experiment (set up, tagged, ended
    honestly); yields its run id. `description`: one sentence, the run's description in the MLflow UI
    (the tag mlflow.note.content)."""
    experiment_id = setup(studies_experiment(tracking.experiment_name()), tracking.uri)
    tags = {"kind": kind, "dvc_stage": stage, "git_commit": git_commit(), "mlflow.note.content": description}
    with tracked_run(experiment_id, run_name, tags) as active:
        yield active.info.run_id


def _quoted(value: str) -> str:
    return f'"{value}"' if "'" in value else f"'{value}'"


def find_run(experiment_id: str, tags: Mapping[str, str]) -> str | None:
    """The newest run of the experiment carrying all `tags`, or None.

    A run made from this project copy (same host and project root) wins over a newer one made
    elsewhere: two clones that train identical weights into one store each find their own run.
    """
    client = MlflowClient()
    here = {k: v for k, v in context_tags().items() if k in ("host", "project_root", "sweep_attempt")}
    for extra in (here, {}):
        query = " and ".join(f"tags.`{k}` = {_quoted(str(v))}" for k, v in {**tags, **extra}.items())
        runs = client.search_runs([experiment_id], filter_string=query,
                                  order_by=["attributes.start_time DESC"], max_results=1)
        if runs:
            return runs[0].info.run_id
    return None




def reap_all(tracking: Tracking) -> tuple[str, list[str]]:
    """Mark KILLED every RUNNING run of this host whose process is gone, in every experiment of the store;
    return (the store's URI, redacted, the runs' ids). Every stage does it for its experiment at its start."""
    uri = resolve_tracking_uri(tracking.uri, project_root())
    check_reachable(uri)
    with store_lock(uri):
        check_store(uri)
        client = MlflowClient(uri)
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    return redact_url(uri), reap(client, experiment_ids)


def prepare_store(tracking: Tracking) -> str:
    """Create the store and the training and studies experiments (once, before several pipelines log to
    it at the same time); return a line naming them and the link to the training runs in the UI."""
    from linclass.tracking.ui import set_runs_view, ui_url

    experiment = tracking.experiment_name()
    experiment_id = setup(experiment, tracking.uri)
    set_runs_view(experiment_id)
    setup(studies_experiment(experiment), tracking.uri)
    return (f"MLflow store {redact_url(mlflow.get_tracking_uri())}: experiment {experiment!r} "
            f"(id {experiment_id}) ready; its runs in the UI: {ui_url(experiment_id)}")
