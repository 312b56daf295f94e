"""The grid and sweeps across a Ray cluster: one Ray task per point, results back as DVC experiments
and MLflow runs.

    linclass grid --backend ray [--address HOST:PORT] [override ...]
    linclass sweep --backend ray --loss softmax --regularizer l2 --learning-rates 0.01,0.02,0.05 \\
        --strengths 1e-4,1e-3,1e-2 [--address HOST:PORT] [override ...]

The points are those of the local queue (linclass.orchestration.sweep.Point: a name, Hydra overrides, a DVC
target), and so is the table.

On the driver, once: compose params.yaml with the shared overrides, run the data stages, push their
outputs and the run-cache to the team's DVC remote (`dvc push --run-cache`), and create the MLflow
experiment on the team's tracking server. The commit being swept must be on the git remote `origin`
(the workers clone it from there) and the code must be committed.

Each point is one task (one CPU; retried on another node when its node dies) that, on its node:
clones the commit into a folder of its own, fetches the run-cache from the DVC remote, runs
`dvc exp run --pull -n <name> -S <override> ... <target>` (download and preprocess are restored from
the run-cache and their outputs pulled from the remote: a node never downloads the data set), logs
to the tracking server, and pushes the experiment back with `dvc exp push -f --run-cache origin <name>`.
Every step runs in a process group of its own with a small watchdog process beside it: if the task's
worker dies (its node is going away), the watchdog stops the step, so an orphaned training cannot
finish a second MLflow run after the point was retried elsewhere.

The driver waits on the futures (ray.wait), pulls the experiments (`dvc exp pull --run-cache`), keeps
exactly one FINISHED MLflow run per point (a run left behind by an attempt whose node died is set
KILLED and tagged `superseded`), and prints the table of the local queue.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from linclass.orchestration.cluster import DEFAULT_ADDRESS
from linclass.orchestration.sweep import dvc_executable

MAX_RETRIES = 3       # attempts after the first when a node dies (application errors are not retried)
ERROR_TAIL = 4000


class RaySweepError(RuntimeError):
    """The sweep cannot start; the message is one line and says what to do."""


# ---- on a node: one point ----

# Beside every step: waits for "done" on stdin; EOF without it means the task's worker died, so it
# stops the step's process group (SIGTERM: a training run ends KILLED; SIGKILL after 10 s).
WATCHDOG = """
import os, signal, sys, time
if sys.stdin.read() != "done":
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 0)):
        try:
            os.killpg(int(sys.argv[1]), sig)
        except ProcessLookupError:
            break
        time.sleep(wait)
"""


def _step(cmd: list[str], cwd: Path, env: dict, log: Path) -> tuple[int, str]:
    """Run one command in its own process group, output appended to `log`; (exit code, its output)."""
    with open(log, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        start = out.tell()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, process_group=0)
    watchdog = subprocess.Popen([sys.executable, "-c", WATCHDOG, str(proc.pid)], stdin=subprocess.PIPE,
                                text=True)
    code = proc.wait()
    watchdog.communicate("done")
    with open(log) as out:
        out.seek(start)
        return code, out.read()


def _error_line(output: str) -> str:
    """The stage's own one-line error if it printed one, else DVC's or git's, else the last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for marker in ("error:", "ERROR:", "fatal:"):
        found = [line for line in lines if line.startswith(marker)]
        if found:
            return found[0] if marker == "error:" else found[-1]
    return lines[-1] if lines else "no output"


def run_point(spec: dict) -> dict:
    """Clone, fetch, run and push one point on this node (the body of the Ray task).

    spec: name, overrides, target, commit, git_url, dvc_remote, sweep_id, env (added to the steps'
    environment), workdir (None: $LINCLASS_RAY_WORKDIR or <tmp>/linclass-ray).
    Returns name, ok, error, node, folder (the clone: the project_root tag of its MLflow run),
    seconds per step.
    """
    import ray

    base = Path(spec.get("workdir") or os.environ.get("LINCLASS_RAY_WORKDIR")
                or Path(tempfile.gettempdir(), "linclass-ray"))
    folder = base / spec["sweep_id"] / f"{spec['name']}-{uuid.uuid4().hex[:8]}"
    repo = (folder / "repo").resolve()
    folder.mkdir(parents=True)
    log = folder / "log.txt"
    env = {**os.environ, **spec["env"], "DVC_NO_ANALYTICS": "1"}
    for inherited in ("DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        env.pop(inherited, None)
    dvc = str(Path(sys.executable).parent / "dvc") if (Path(sys.executable).parent / "dvc").exists() else "dvc"
    sets = [arg for override in spec["overrides"] for arg in ("-S", override)]
    steps = [
        ("clone", ["git", "clone", "--quiet", "--no-checkout", spec["git_url"], str(repo)], folder),
        ("clone", ["git", "checkout", "--quiet", "--detach", spec["commit"]], repo),
        ("pull", [dvc, "remote", "add", "--local", "--force", "--default", "sweep", spec["dvc_remote"]], repo),
        ("pull", [dvc, "fetch", "--run-cache"], repo),
        ("run", [dvc, "exp", "run", "--pull", "-n", spec["name"], *sets, spec["target"]], repo),
        ("push", [dvc, "exp", "push", "--force", "--run-cache", "origin", spec["name"]], repo),
    ]
    result = {"name": spec["name"], "ok": False, "error": None, "node": ray.util.get_node_ip_address(),
              "folder": str(repo), "log": str(log), "seconds": {}}
    for what, cmd, cwd in steps:
        start = time.monotonic()
        code, output = _step(cmd, cwd, env, log)
        result["seconds"][what] = result["seconds"].get(what, 0.0) + time.monotonic() - start
        if code != 0:
            result["error"] = f"{what} failed: {_error_line(output)}"
            return result      # the folder stays, with log.txt, for a look
    result["ok"] = True
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):   # the sweep's folder, once its last point is done
        folder.parent.rmdir()
    return result


# ---- on the driver ----

def _run(cmd: list[str], root: Path, what: str, quiet: bool = True) -> str:
    """Run a driver-side command; stages find this environment's `python` first on PATH."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=quiet, text=True)
    if proc.returncode != 0:
        detail = _error_line(f"{proc.stdout or ''}\n{proc.stderr or ''}") if quiet else f"exit {proc.returncode}"
        raise RaySweepError(f"{what} failed: {detail}")
    return proc.stdout or ""


def _absolute(url: str, relative_to: Path) -> str:
    """A local path (relative to `relative_to`) made absolute, so that every node finds it; URLs unchanged."""
    if "://" in url or (":" in url.split("/")[0] and not url.startswith("/")):   # scheme or scp-like host:path
        return url
    return str((relative_to / url).resolve())


def check_commit(root: Path) -> tuple[str, str]:
    """(commit, git URL) of HEAD, which must be committed and on the remote `origin`."""
    git_url = _absolute(_run(["git", "remote", "get-url", "origin"], root,
                             "finding the git remote 'origin' (the workers clone from it)").strip(), root)
    commit = _run(["git", "rev-parse", "HEAD"], root, "git rev-parse HEAD").strip()
    changed = [line[3:] for line in _run(["git", "status", "--porcelain", "--untracked-files=no"], root,
                                         "git status").splitlines()
               if line[3:] not in ("params.yaml", "dvc.lock") and not line[3:].startswith("sweeps/")]
    if changed:
        raise RaySweepError(f"uncommitted changes to {', '.join(changed)}: the workers clone commit "
                            f"{commit[:7]}; commit them and push (git push origin HEAD), or stash them")
    _run(["git", "fetch", "--quiet", "origin"], root, f"git fetch origin ({git_url})")
    if not _run(["git", "branch", "-r", "--contains", commit], root, "git branch -r").strip():
        raise RaySweepError(f"commit {commit[:7]} is not on the git remote origin ({git_url}): "
                            "push it first (git push origin HEAD)")
    return commit, git_url


def default_dvc_remote(root: Path) -> str:
    """The default DVC remote's URL (a folder made absolute, so that every node finds it), checked reachable."""
    from linclass.orchestration import remote

    try:
        found = remote.find_remote(root)
        remote.check_reachable(found, "push")
    except remote.RemoteError as exc:
        raise RaySweepError(f"{exc} (the nodes get their data from the default DVC remote)") from None
    return found.url


def tracking_server(params: dict) -> str:
    """The http(s) MLflow server every node logs to: MLFLOW_TRACKING_URI, else tracking.uri."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params["tracking"]["uri"] or ""
    if not uri.startswith(("http://", "https://")):
        raise RaySweepError(f"tracking store {uri or 'sqlite (the default)'!r} is not reachable from other "
                            "machines: start a server (`make server HOST=0.0.0.0`) and export "
                            "MLFLOW_TRACKING_URI=http://<host>:5000")
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as response:
            response.read(64)
    except (urllib.error.URLError, OSError) as exc:
        raise RaySweepError(f"MLflow server {uri} does not answer ({getattr(exc, 'reason', exc)}); "
                            "start it (`make server`)") from None
    return uri


def mlflow_experiment(uri: str, name: str) -> str:
    """Create the experiment before the tasks do (parallel creations race); return its id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name)


def git_identity(root: Path) -> tuple[str, str]:
    """The driver's git name and email, for the experiment commits the nodes make."""
    proc = subprocess.run(["git", "var", "GIT_COMMITTER_IDENT"], cwd=root, capture_output=True, text=True)
    ident = re.match(r"(.*) <(.*)>", proc.stdout.strip()) if proc.returncode == 0 else None
    return (ident.group(1), ident.group(2)) if ident else ("linclass ray sweep", "linclass@localhost")


def check_ray(address: str, timeout: float = 5) -> None:
    """A one-line error, within seconds, when nothing listens at the Ray head's HOST:PORT."""
    host, _, port = address.rpartition(":")
    if address == "auto" or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RaySweepError(f"no Ray cluster answers at {address} ({exc.strerror or exc}): start one "
                            "(`make cluster-up`) or set RAY_ADDRESS=<head>:<port>") from None


def prepare(root: Path, overrides: Sequence[str], address: str, log: Callable[[str], None] = print) -> dict:
    """Everything the tasks need, checked and in place before the first one starts."""
    commit, git_url = check_commit(root)
    dvc_remote = default_dvc_remote(root)
    from linclass.config import write_params

    params = write_params(conf_dir=root / "conf", path=root / "params.yaml", overrides=list(overrides))
    uri = tracking_server(params)
    check_ray(address)
    log(f"commit {commit[:7]} from {git_url}; data from DVC remote {dvc_remote}; MLflow server {uri}")
    _run([dvc_executable(), "repro", "preprocess"], root, "the data stages (dvc repro preprocess)", quiet=False)
    _run([dvc_executable(), "push", "--run-cache"], root, f"dvc push --run-cache (to {dvc_remote})")
    experiment_id = mlflow_experiment(uri, params["tracking"]["experiment"])
    name, email = git_identity(root)
    return {"commit": commit, "git_url": git_url, "dvc_remote": dvc_remote, "tracking_uri": uri,
            "experiment_id": experiment_id,
            "env": {"MLFLOW_TRACKING_URI": uri, "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
                    "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}}


def settle_runs(results: list[dict], sweep_id: str, uri: str, experiment_id: str) -> None:
    """One FINISHED MLflow run per point: the run of the attempt that returned stays, a run of an
    attempt that died with its node (RUNNING, or even FINISHED before the node died) is set KILLED.

    Adds to each result `run_id` (None: its training came from DVC's run-cache, its run is an earlier
    one) and `superseded` (the run ids set KILLED).
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    for result in results:
        runs = client.search_runs([experiment_id], max_results=1000, filter_string=(
            f"tags.dvc_exp_name = '{result['name']}' and tags.project_root LIKE '%/{sweep_id}/%'"))
        kept = [run for run in runs if result["ok"] and run.data.tags.get("project_root") == result["folder"]]
        result["run_id"] = kept[0].info.run_id if kept else None
        result["superseded"] = []
        for run in runs:
            if run in kept or run.info.status in ("FAILED", "KILLED"):
                continue
            client.set_tag(run.info.run_id, "superseded", "its attempt was lost with its node; the point "
                           f"was retried (run {result['run_id'] or 'of the retry'})")
            client.set_terminated(run.info.run_id, "KILLED")
            result["superseded"].append(run.info.run_id)


def describe(result: dict) -> str:
    seconds = ", ".join(f"{k} {v:.1f} s" for k, v in result.get("seconds", {}).items())
    where = f" on {result['node']}" if result.get("node") else ""
    return (f"{result['name']}: {'done' if result['ok'] else 'FAILED'}{where}"
            f"{f' ({seconds})' if seconds else ''}{'' if result['ok'] else ': ' + str(result['error'])}")


def run_sweep(points: Sequence, overrides: Sequence[str] = (), *, root: str | Path = ".",
              address: str | None = None, workdir: str | None = None,
              log: Callable[[str], None] = print) -> list[dict]:
    """Run every point (a linclass.orchestration.sweep.Point) as a Ray task; pull the experiments; one result per point."""
    import ray

    root = Path(root).resolve()
    address = address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    setup = prepare(root, overrides, address, log)
    sweep_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    if __name__ != "__main__":   # ship this module's code with the task: nodes may run an older install
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(run_point)
        common = {key: setup[key] for key in ("commit", "git_url", "dvc_remote", "env")}
        futures = {task.remote({**common, "name": p.name, "overrides": [*overrides, *p.overrides],
                                "target": p.target, "sweep_id": sweep_id, "workdir": workdir}): p
                   for p in points}
        log(f"sweep {sweep_id}: {len(points)} points on {len(ray.nodes())} Ray node(s), "
            f"{ray.cluster_resources().get('CPU', 0):g} CPUs")
        results, pending, start = [], list(futures), time.monotonic()
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayError as exc:   # retries used up, or the cluster went away
                lines = [line for line in str(exc).splitlines() if line.strip()]
                result = {"name": futures[done[0]].name, "ok": False, "node": None,
                          "error": f"{type(exc).__name__}: {lines[0] if lines else ''}"[:ERROR_TAIL]}
            results.append(result)
            log(f"[{len(results)}/{len(points)} at {time.monotonic() - start:.0f} s] {describe(result)}")
    finally:
        ray.shutdown()
    finished = [r["name"] for r in results if r["ok"]]
    if finished:
        _run([dvc_executable(), "exp", "pull", "--force", "--run-cache", "origin", *finished], root,
             "dvc exp pull (the experiments from the git remote origin)")
    settle_runs(results, sweep_id, setup["tracking_uri"], setup["experiment_id"])
    order = {p.name: i for i, p in enumerate(points)}
    return sorted(results, key=lambda r: order[r["name"]])
