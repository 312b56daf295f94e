"""The grid and sweeps across a Ray cluster: points run in warm workspaces on the nodes, results back as DVC
experiments and MLflow runs.

    linclass grid --backend ray [--address HOST:PORT] [override ...]
    linclass sweep --backend ray --loss softmax --regularizer l2 --learning-rates 0.01,0.02,0.05 \\
        --strengths 1e-4,1e-3,1e-2 [--address HOST:PORT] [override ...]

The points are those of the local queue (linclass.orchestration.sweep.Point: a name, Hydra overrides, a DVC
target), and so is the table. The commit being swept must be on the git remote `origin` (the nodes fetch
it from there) and the code must be committed.

On the driver, once (params.yaml is not written, as with the local queue): the settings are composed in
memory; the data stages run (in the workspace when its params.yaml has the same data settings, else in a
scratch clone of the commit sharing the workspace's DVC cache), their outputs go to the default DVC
remote and their dvc.lock entries go to the nodes with the points; the MLflow experiment is created on
the team's tracking server.

On the nodes, each task runs a group of points (the points are split evenly over the cluster's CPUs, so
that each node's set-up and push are paid once per group), in a warm workspace kept between points and
sweeps under $LINCLASS_RAY_WORKDIR (default <tmp>/linclass-ray-<uid>): per git remote, one DVC cache per node
(outputs linked into the workspaces, not copied) and a few workspace slots (one per task running at once,
held with a file lock), each one clone of the git remote. A task:
1. brings its slot to the commit (git fetch of that commit only when missing, checkout, clean, leaving the
   data and DVC's cache), writes the data stages' lock entries and `dvc pull`s their outputs: missing
   objects come from the remote, present ones are linked; nothing is downloaded twice on a node;
2. makes sure a warm interpreter (linclass.orchestration.warm) serves the slot at this commit: `dvc exp run`
   and every stage it runs then start with MLflow, DVC, pandas and matplotlib already imported;
3. per point, resets the workspace to the commit plus the data lock and runs
   `dvc exp run -n <name> -S <override> ... <target>`, the training logging to the tracking server;
4. pushes the group's experiments with `dvc exp push origin <names>` (their git refs and outputs), and only
   the run-cache entries this group made (a scratch DVC project holding just those, `dvc push --run-cache`).
Every step runs in a process group of its own with a small watchdog process beside it: if the task's worker
dies (its node is going away), the watchdog stops the step, so an orphaned training cannot finish a second
MLflow run after the group was retried elsewhere. A group is retried on another node when its node dies.

The driver waits on the futures and pulls the experiments as groups come back (`dvc exp pull`, one at a time,
each of every group done meanwhile; the run-cache entries with the last), keeps exactly one FINISHED MLflow
run per point (a run left by an attempt whose node died is set KILLED and tagged `superseded`: runs are told
apart by their `sweep_attempt` tag), and prints the table of the local queue.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from linclass.orchestration.cluster import (
    AUTH,
    DEFAULT_ADDRESS,
    ClusterError,
    check_head_is_mine,
    private_folder,
    running,
)
from linclass.orchestration.sweep import dvc_command, error_line, run_command, set_args
from linclass.orchestration.warm import ready

MAX_RETRIES = 3       # attempts after the first when a node dies (application errors are not retried)
ERROR_TAIL = 4000
SLOTS = 16            # workspace slots per node and git remote (tasks at once on one node)
WARM_IDLE = 600.0     # a node's warm interpreter stops after this many seconds without a command
WARM_START = 120.0    # seconds a warm interpreter may take to import its modules
DATA_STAGES = ("download", "preprocess")
SWEEP_ATTEMPT = "LINCLASS_SWEEP_ATTEMPT"   # linclass.tracking.runs.SWEEP_ATTEMPT (not imported: no MLflow here)


class RaySweepError(RuntimeError):
    """The sweep cannot start; the message is one line and says what to do."""


# ---- on a node: a group of points ----

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


class StepFailed(RuntimeError):
    pass


class Workspace:
    """A node's warm workspace slot: a clone of the git remote kept between tasks, its DVC cache shared by the
    node's slots, its warm interpreter, and the log of its steps."""

    def __init__(self, base: Path, slot: Path, env: dict):
        self.base, self.slot, self.repo = base, slot, slot / "repo"
        self.log = slot / "log.txt"
        self.env = env
        self.warm_socket = slot / "warm" / "socket"
        # a DVC project of its own (no git) through which only new run-cache entries are pushed; inside the
        # clone, where the warm interpreter serves DVC (git clean leaves .dvc/ alone)
        self.runs_project = self.repo / ".dvc" / "tmp" / "linclass-runs"
        self.seconds: dict[str, float] = {}

    def run(self, what: str, cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> str:
        """Run one command in its own process group with the WATCHDOG beside it, its output appended to the log;
        that output, or StepFailed naming `what` and its error line."""
        start = time.monotonic()
        env = {**(env or self.env), "LINCLASS_WARM_SOCKET": str(self.warm_socket)}   # used when it answers
        with open(self.log, "a") as out:
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            offset = out.tell()
            proc = subprocess.Popen(cmd, cwd=cwd or self.repo, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, process_group=0)
        watchdog = subprocess.Popen([sys.executable, "-c", WATCHDOG, str(proc.pid)], stdin=subprocess.PIPE, text=True)
        code = proc.wait()
        watchdog.communicate("done")
        with open(self.log) as out:
            out.seek(offset)
            output = out.read()
        self.seconds[what] = self.seconds.get(what, 0.0) + time.monotonic() - start
        if code != 0:
            raise StepFailed(f"{what} failed: {error_line(output)}")
        return output

    def git(self, *args: str) -> str:
        return self.run("checkout", ["git", *args])

    def dvc(self, *args: str, what: str, cwd: Path | None = None) -> str:
        return self.run(what, [*self.python(), "-m", "dvc", *args], cwd=cwd)

    def python(self) -> list[str]:
        """How to start Python here: through the slot's warm interpreter when it serves this commit."""
        client = self.repo / "src/linclass/orchestration/warm_client.py"
        if self.warm_socket.is_socket() and client.exists():
            return [sys.executable, "-I", "-S", str(client)]
        return [sys.executable]

    def sync(self, spec: dict) -> None:
        """The slot at the sweep's commit, with the DVC remote and the node's cache, no experiments left."""
        if not (self.repo / ".git").exists():
            shutil.rmtree(self.repo, ignore_errors=True)
            self.run("checkout", ["git", "clone", "--quiet", "--no-checkout", spec["git_url"], str(self.repo)],
                     cwd=self.slot)
        if subprocess.run(["git", "cat-file", "-e", f"{spec['commit']}^{{commit}}"], cwd=self.repo,
                          capture_output=True).returncode != 0:
            self.git("fetch", "--quiet", "origin", spec["commit"])
        self.git("checkout", "--quiet", "--force", "--detach", spec["commit"])
        self.clean()
        refs = subprocess.run(["git", "for-each-ref", "--format=delete %(refname)", "refs/exps"], cwd=self.repo,
                              capture_output=True, text=True).stdout
        if refs:   # pushed by earlier tasks: the node keeps none
            subprocess.run(["git", "update-ref", "--stdin"], cwd=self.repo, input=refs, text=True, check=True)

    def configure(self, dvc_remote: str) -> None:
        """The node's DVC cache (outputs linked, not copied) and the sweep's DVC remote, set once per slot."""
        stamp = self.repo / ".dvc" / "tmp" / "linclass-configured"
        if stamp.exists() and stamp.read_text() == dvc_remote:
            return
        cache = self.base / "cache"
        cache.mkdir(exist_ok=True)
        for key, value in (("cache.dir", str(cache)), ("cache.type", "reflink,hardlink,symlink,copy")):
            self.dvc("config", "--local", key, value, what="checkout")
        runs = self.runs_project
        if not (runs / ".dvc").exists():
            runs.mkdir(parents=True, exist_ok=True)
            self.dvc("init", "--quiet", "--no-scm", what="checkout", cwd=runs)
        for project in (self.repo, runs):
            self.dvc("remote", "add", "--local", "--force", "--default", "sweep", dvc_remote, what="checkout",
                     cwd=project)
        stamp.write_text(dvc_remote)

    def clean(self) -> None:
        """Back to the commit: outputs and leftovers of earlier points removed; the data and DVC's files kept."""
        self.git("checkout", "--quiet", "--force", "--", ".")
        self.git("clean", "-q", "-f", "-d", "-x", "-e", "/data/", "-e", "/.dvc/")

    def data(self, lock: dict) -> None:
        """The data stages' outputs in place and their entries in dvc.lock, so that `dvc exp run` skips them."""
        import yaml

        path = self.repo / "dvc.lock"
        merged = (yaml.safe_load(path.read_text()) if path.exists() else None) or {"schema": "2.0", "stages": {}}
        merged["stages"] = {**merged.get("stages", {}), **lock}
        path.write_text(yaml.safe_dump(merged, sort_keys=False))
        self.dvc("pull", "--quiet", *lock, what="data")
        self.data_lock = path.read_text()

    def warm(self, commit: str) -> None:
        """A warm interpreter serving this slot at `commit` (started unless one already is)."""
        folder = self.warm_socket.parent
        stamp = folder / "commit"
        alive = self.warm_socket.is_socket() and stamp.exists() and stamp.read_text() == commit
        if alive and _answers(self.warm_socket):
            return
        self.stop_warm()
        if not (self.repo / "src/linclass/orchestration/warm.py").exists():
            return     # a commit from before warm interpreters: plain processes
        start = time.monotonic()
        folder.mkdir(mode=0o700, exist_ok=True)
        folder.chmod(0o700)
        env = {**self.env, "PYTHONPATH": str(self.repo / "src")}
        log = folder / "log.txt"
        offset = log.stat().st_size if log.exists() else 0   # the log is appended to: this start's lines only
        pid = spawn_on_node([sys.executable, "-m", "linclass.orchestration.warm", "--socket", str(self.warm_socket),
                             "--idle", str(WARM_IDLE), "--dvc"], self.repo, env, log)
        (folder / "pid").write_text(str(pid))
        stamp.write_text(commit)
        while not ready(log, offset):   # its modules imported (its socket is there before)
            if not running(pid) or time.monotonic() - start > WARM_START:
                self.stop_warm()
                return     # plain processes; log.txt says why
            time.sleep(0.05)
        self.seconds["warm"] = time.monotonic() - start

    def stop_warm(self) -> None:
        folder = self.warm_socket.parent
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((folder / "pid").read_text()), signal.SIGTERM)
        for name in ("pid", "commit", "socket"):
            (folder / name).unlink(missing_ok=True)

    def point(self, point: dict, attempt: str) -> tuple[bool, str | None, float]:
        """Run one point; (ok, error, seconds)."""
        start = time.monotonic()
        try:
            self.clean()
            (self.repo / "dvc.lock").write_text(self.data_lock)
            self.run("run", [*self.python(), "-m", "dvc", "exp", "run", "-n", point["name"],
                             *set_args(point["overrides"]), point["target"]], env={**self.env, SWEEP_ATTEMPT: attempt})
            return True, None, time.monotonic() - start
        except StepFailed as exc:
            return False, str(exc), time.monotonic() - start

    def push(self, names: list[str], runs_before: set[str]) -> int:
        """The experiments (git refs, outputs), then only the run-cache entries made since `runs_before`; returns
        how many entries that was."""
        self.dvc("exp", "push", "--force", "--no-run-cache", "origin", *names, what="push")
        new = sorted(run_cache_entries(self.base / "cache") - runs_before)
        cache = self.runs_project / ".dvc" / "cache"
        shutil.rmtree(cache / "runs", ignore_errors=True)
        for entry in new:
            target = cache / entry
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(self.base / "cache" / entry, target)
        if new:
            self.dvc("push", "--run-cache", what="push", cwd=self.runs_project)
        return len(new)


def run_cache_entries(cache: Path) -> set[str]:
    """The run-cache entries of a DVC cache, as paths relative to it (runs/<key[:2]>/<key>/<value>)."""
    return {str(path.relative_to(cache)) for path in (cache / "runs").glob("*/*/*")}   # none without the folder


class Keeper:
    """The parent of a node's warm interpreters: a detached Ray actor, one per node, so that they outlive the
    task that started them (Ray stops a worker's child processes when the worker exits) and stop with the
    node's Ray (the keeper's children are stopped with it)."""

    def __init__(self) -> None:
        self.children: dict[int, subprocess.Popen] = {}

    def spawn(self, argv: list[str], cwd: str, env: dict, log: str) -> int:
        self.children = {pid: child for pid, child in self.children.items() if child.poll() is None}   # no zombies
        with open(log, "a") as out:
            child = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT)
        self.children[child.pid] = child
        return child.pid


KEEPER = "linclass-warm-keeper-v1"


def spawn_on_node(argv: list[str], cwd: Path, env: dict, log: Path) -> int:
    """Start a process on this node as a child of the node's keeper (created the first time); its pid."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    keeper = ray.remote(Keeper).options(name=f"{KEEPER}-{node}", namespace="linclass", lifetime="detached",
                                        get_if_exists=True, num_cpus=0, max_restarts=0,
                                        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
    spawned = keeper.spawn.remote(argv, str(cwd), env, str(log))  # type: ignore[attr-defined]
    return ray.get(spawned)


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        return probe.connect_ex(str(path)) == 0


def acquire_slot(base: Path):
    """The first free workspace slot of this node (a file lock held until the task ends)."""
    from filelock import FileLock, Timeout

    for index in range(SLOTS):
        slot = base / f"slot-{index}"
        slot.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(slot / "lock"))
        with contextlib.suppress(Timeout):
            lock.acquire(timeout=0)
            return slot, lock
    raise RuntimeError(f"all {SLOTS} workspace slots of {base} are busy")


def node_base(git_url: str, node: str) -> Path:
    """This node's folder for the sweep's git remote."""
    root = private_folder(Path(os.environ.get("LINCLASS_RAY_WORKDIR")
                               or Path(tempfile.gettempdir(), f"linclass-ray-{os.getuid()}")),
                          "set LINCLASS_RAY_WORKDIR to a folder of your own")
    remote = hashlib.sha256(git_url.encode()).hexdigest()[:12]
    return (root / f"{node}-{remote}").resolve()


def run_group(spec: dict) -> list[dict]:
    """Run a group of points in a warm workspace slot of this node (the body of the Ray task).

    spec: points (name, overrides, target), commit, git_url, dvc_remote, data_lock (dvc.lock entries of the
    data stages), sweep_id, env (added to the steps' environment). The node's folder: $LINCLASS_RAY_WORKDIR,
    else <tmp>/linclass-ray-<uid>. Returns one result per point: name, ok, error, node, folder (the workspace: the
    project_root tag of its MLflow run), attempt (its sweep_attempt tag), seconds (its own `run`, and its
    share of the group's `checkout`, `data`, `warm` and `push`), log, run_cache_pushed (the group's new
    run-cache entries, pushed), span (the group's start and end, seconds since the epoch).
    """
    import ray

    node = ray.util.get_node_ip_address()
    base = node_base(spec["git_url"], node)
    slot, lock = acquire_slot(base)
    attempt = f"{spec['sweep_id']}/{uuid.uuid4().hex[:8]}"
    inherited = ("DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "LINCLASS_WARM_SOCKET", SWEEP_ATTEMPT)
    env = {k: v for k, v in {**os.environ, **spec["env"], "DVC_NO_ANALYTICS": "1"}.items() if k not in inherited}
    workspace = Workspace(base, slot, env)
    results = [{"name": p["name"], "ok": False, "error": None, "node": node, "folder": str(workspace.repo),
                "attempt": attempt, "log": str(workspace.log), "seconds": {}, "span": [time.time(), None]}
               for p in spec["points"]]
    try:
        workspace.log.write_text("")
        try:
            workspace.sync(spec)
            workspace.warm(spec["commit"])
            workspace.configure(spec["dvc_remote"])
            workspace.data(spec["data_lock"])
        except StepFailed as exc:
            for result in results:
                result["error"] = str(exc)
            return results
        runs_before = run_cache_entries(base / "cache")
        for point, result in zip(spec["points"], results):
            result["ok"], result["error"], result["seconds"]["run"] = workspace.point(point, attempt)
        done = [r["name"] for r in results if r["ok"]]
        if done:
            try:
                pushed = workspace.push(done, runs_before)
                for result in results:
                    result["run_cache_pushed"] = pushed   # the group's new run-cache entries
            except StepFailed as exc:
                for result in results:
                    result["ok"], result["error"] = False, result["error"] or str(exc)
        shared = {k: v for k, v in workspace.seconds.items() if k != "run"}
        for result in results:
            result["seconds"].update({k: v / len(results) for k, v in shared.items()})
            result["span"][1] = time.time()   # the group's start and end (wall clock)
        return results
    finally:
        lock.release()


# ---- on the driver ----

def git(cwd: Path, *args: str, what: str | None = None) -> str:
    """A git command's output; SweepError naming `what` (default: the command) when it fails."""
    return run_command(["git", *args], what or f"git {' '.join(args[:2])}", cwd).stdout


def _absolute(url: str, relative_to: Path) -> str:
    """A local path (relative to `relative_to`) made absolute, so that every node finds it; URLs unchanged."""
    if "://" in url or (":" in url.split("/")[0] and not url.startswith("/")):   # scheme or scp-like host:path
        return url
    return str((relative_to / url).resolve())


def check_commit(root: Path) -> tuple[str, str]:
    """(commit, git URL) of HEAD, which must be committed and on the remote `origin`."""
    git_url = _absolute(git(root, "remote", "get-url", "origin",
                            what="finding the git remote 'origin' (the workers clone from it)").strip(), root)
    commit = git(root, "rev-parse", "HEAD").strip()
    changed = [line[3:] for line in git(root, "status", "--porcelain", "--untracked-files=no").splitlines()
               if line[3:] not in ("params.yaml", "dvc.lock") and not line[3:].startswith("sweeps/")]
    if changed:
        raise RaySweepError(f"uncommitted changes to {', '.join(changed)}: the workers clone commit "
                            f"{commit[:7]}; commit them and push (git push origin HEAD), or stash them")
    git(root, "fetch", "--quiet", "origin", what=f"git fetch origin ({git_url})")
    if not git(root, "branch", "-r", "--contains", commit).strip():
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
                            "MLFLOW_TRACKING_URI=http://<host>:5000 MLFLOW_TRACKING_TOKEN=<its mlflow-server/token>")
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


def check_ray(address: str) -> None:
    """A one-line error, within seconds, when `address` is not HOST:PORT, nothing listens there, or another
    account's process does (linclass.orchestration.cluster.check_head_is_mine)."""
    host, _, port = address.rpartition(":")
    if address == "auto":
        raise RaySweepError("address 'auto' is not allowed: Ray then connects to the address written in "
                            "/tmp/ray/ray_current_cluster, a file any account of this machine can write, and sends it "
                            "your Ray token; give the head's HOST:PORT (`linclass cluster up` prints it)")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RaySweepError(f"Ray address {address!r} (--address, or RAY_ADDRESS) is not the head's HOST:PORT with a "
                            f"port of 1-65535, e.g. {DEFAULT_ADDRESS} (`linclass cluster up` prints it)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise RaySweepError(f"no Ray cluster answers at {address} ({exc.strerror or exc}): start one "
                            "(`make cluster-up`) or set RAY_ADDRESS=<head>:<port>") from None
    try:
        check_head_is_mine(host, int(port))   # ray.init sends it this user's token
    except ClusterError as exc:
        raise RaySweepError(str(exc)) from None


def data_stages(root: Path, commit: str, overrides: Sequence[str], params: dict) -> dict:
    """Run the data stages once for the sweep's settings `params`, push their outputs to the default DVC
    remote, and return their dvc.lock entries (the nodes pull those outputs instead of running the stages).

    In the workspace (`dvc repro preprocess`, as the local queue does) when its params.yaml has the same data
    settings; else in a scratch clone of `commit` that shares the workspace's DVC cache (so that they run
    once: DVC restores them from its run-cache the next time). params.yaml is never written.
    """
    import yaml

    from linclass.config import load_params, write_params

    here = load_params(root / "params.yaml") if (root / "params.yaml").exists() else {}
    same = all(here.get(section) == params[section] for section in ("data", "preprocess"))
    dvc = dvc_command(root)
    with tempfile.TemporaryDirectory(prefix="linclass-data-") as scratch:
        where = root
        if not same:
            where = Path(scratch) / "repo"
            cache = (root / run_command([*dvc, "cache", "dir"], "dvc cache dir", root).stdout.strip()).resolve()
            git(root, "clone", "--quiet", "--shared", "--no-checkout", str(root), str(where),
                what="git clone (a scratch copy for the data stages)")
            git(where, "checkout", "--quiet", "--detach", commit, what="git checkout (the scratch copy)")
            if (root / ".dvc" / "config.local").exists():   # remotes' credentials kept out of git
                shutil.copy2(root / ".dvc" / "config.local", where / ".dvc" / "config.local")
            run_command([*dvc, "config", "--local", "cache.dir", str(cache)], "dvc config cache.dir", where)
            write_params(conf_dir=where / "conf", path=where / "params.yaml", overrides=list(overrides))
        run_command([*dvc, "repro", DATA_STAGES[-1]], "the data stages (dvc repro preprocess)", where, capture=False)
        run_command([*dvc, "push", *DATA_STAGES], "dvc push (the data stages' outputs)", where)
        stages = yaml.safe_load((where / "dvc.lock").read_text())["stages"]
        return {name: stages[name] for name in DATA_STAGES}


def prepare(root: Path, overrides: Sequence[str], address: str, log: Callable[[str], None],
            while_data: Callable[[], object]) -> dict:
    """Everything the tasks need, checked and in place before the first one starts. `while_data` (connecting to
    Ray) runs while the data stages run in a helper thread, and so does the MLflow experiment's creation."""
    from linclass.config import compose
    from linclass.settings import Tracking

    commit, git_url = check_commit(root)
    dvc_remote = default_dvc_remote(root)
    params = compose(root / "conf", list(overrides))   # also checks every setting
    uri = tracking_server(params)
    check_ray(address)
    log(f"commit {commit[:7]} from {git_url}; data from DVC remote {dvc_remote}; MLflow server {uri}")
    with ThreadPoolExecutor(1) as helper:   # DVC works in its own processes meanwhile
        data = helper.submit(data_stages, root, commit, overrides, params)
        experiment_id = mlflow_experiment(uri, Tracking(**params["tracking"]).experiment_name())
        while_data()
        data_lock = data.result()
    name, email = git_identity(root)
    env = {"MLFLOW_TRACKING_URI": uri, "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
           "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}
    for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_EXPERIMENT_NAME"):   # `make server`'s token; the user's experiment
        if os.environ.get(name):
            env[name] = os.environ[name]
    return {"commit": commit, "git_url": git_url, "dvc_remote": dvc_remote, "tracking_uri": uri,
            "experiment_id": experiment_id, "data_lock": data_lock, "env": env}


def settle_runs(results: list[dict], sweep_id: str, uri: str, experiment_id: str) -> None:
    """One FINISHED MLflow run per point: the run of the attempt that returned stays, a run of an
    attempt that died with its node (RUNNING, or even FINISHED before the node died) is set KILLED.

    Adds to each result `run_id` (None: its training came from DVC's run-cache, its run is an earlier
    one) and `superseded` (the run ids set KILLED).
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([experiment_id], max_results=10_000,
                              filter_string=f"tags.sweep_attempt LIKE '{sweep_id}/%'")
    by_point: dict[str, list] = {}
    for run in runs:
        by_point.setdefault(run.data.tags.get("dvc_exp_name", ""), []).append(run)
    for result in results:
        found = by_point.get(result["name"], [])
        kept = [run for run in found if result["ok"] and run.data.tags.get("sweep_attempt") == result.get("attempt")]
        result["run_id"] = kept[0].info.run_id if kept else None
        result["superseded"] = []
        for run in found:
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


def _group_results(ray, ref, group: list) -> list[dict]:
    """A finished task's results; one failed result per point when the task itself failed."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:   # retries used up, or the cluster went away
        lines = [line for line in str(exc).splitlines() if line.strip()]
        return [{"name": p.name, "ok": False, "node": None,
                 "error": f"{type(exc).__name__}: {lines[0] if lines else ''}"[:ERROR_TAIL]} for p in group]


def pull_experiments(root: Path, names: list[str], run_cache: bool) -> None:
    """`dvc exp pull` of the experiments from the git remote origin (and the DVC remote's run-cache entries,
    with which a later `dvc repro` restores the points instead of training them again)."""
    run_command([*dvc_command(root), "exp", "pull", "--force", "--run-cache" if run_cache else "--no-run-cache",
                 "origin", *names], "dvc exp pull (the experiments from the git remote origin)", root)


def groups(points: Sequence, slots: int) -> list[list]:
    """The points in `slots` groups of consecutive points, as even as can be (at least one point each)."""
    size = math.ceil(len(points) / max(1, min(slots, len(points))))
    return [list(points[i:i + size]) for i in range(0, len(points), size)]


def run_sweep(points: Sequence, overrides: Sequence[str] = (), *, root: str | Path = ".",
              address: str | None = None, log: Callable[[str], None] = print) -> list[dict]:
    """Run every point (a linclass.orchestration.sweep.Point) on the Ray cluster, in groups; pull the
    experiments; one result per point."""
    import logging

    for key, value in AUTH.items():   # this user's token, read when ray is first imported (a cluster started
        os.environ.setdefault(key, value)   # otherwise, without authentication: RAY_AUTH_MODE=disabled)
    import ray

    root = Path(root).resolve()
    address = address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    sweep_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    if __name__ != "__main__":   # ship this module's code with the task: nodes may run an older install
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    results: list[dict] = []
    pulled_run_cache = False
    try:
        setup = prepare(root, overrides, address, log, while_data=lambda: ray.init(
            address=address, logging_level=logging.ERROR, log_to_driver=False))
        task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(run_group)
        common = {key: setup[key] for key in ("commit", "git_url", "dvc_remote", "env", "data_lock")}
        slots = int(ray.cluster_resources().get("CPU", 1))
        futures = {task.remote({**common, "sweep_id": sweep_id,
                                "points": [{"name": p.name, "overrides": [*overrides, *p.overrides],
                                            "target": p.target} for p in group]}): group
                   for group in groups(points, slots)}
        log(f"sweep {sweep_id}: {len(points)} points in {len(futures)} task(s) on {len(ray.nodes())} Ray node(s), "
            f"{slots} CPUs")
        pending, start = list(futures), time.monotonic()
        to_pull: list[str] = []
        with ThreadPoolExecutor(1) as puller:   # one `dvc exp pull` at a time, of all the groups done meanwhile
            pulling: Future | None = None
            while pending or to_pull or pulling is not None:
                if pending:
                    done, pending = ray.wait(pending, num_returns=1, timeout=0.2)
                    for result in (result for ref in done for result in _group_results(ray, ref, futures[ref])):
                        results.append(result)
                        to_pull += [result["name"]] if result["ok"] else []
                        log(f"[{len(results)}/{len(points)} at {time.monotonic() - start:.0f} s] {describe(result)}")
                if pulling is not None and (pulling.done() or not pending):
                    pulling.result()   # its error, if it failed
                    pulling = None
                if pulling is None and to_pull:   # with the last, the run-cache entries the nodes pushed
                    pulled_run_cache = not pending
                    pulling = puller.submit(pull_experiments, root, to_pull, pulled_run_cache)
                    to_pull = []
    finally:
        ray.shutdown()
    finished = [r["name"] for r in results if r["ok"]]
    if finished and not pulled_run_cache:
        pull_experiments(root, finished, run_cache=True)
    settle_runs(results, sweep_id, setup["tracking_uri"], setup["experiment_id"])
    order = {p.name: i for i, p in enumerate(points)}
    return sorted(results, key=lambda r: order[r["name"]])
