"""A warm interpreter: a process that imports the pipeline's heavy modules once (numpy, pandas, matplotlib,
MLflow, DVC, Hydra: about 2 s of CPU per Python process) and then forks a child for every Python command
it is asked to run in its workspace, so that a command starts in milliseconds with them imported.

    python -m linclass.orchestration.warm --socket PATH [--idle 600] [--dvc]     # in the workspace's root

A Ray node keeps one per workspace (linclass.orchestration.ray_backend): `dvc exp run` and every stage it runs
start from it. `linclass repro`, `exp`, `grid` and `sweep` start one for the stages of their DVC runs (serving()
below) and stop it at the end. DVC's modules are loaded only with `--dvc`, for a server asked to run `-m dvc`
commands (a Ray node's, grid's and sweep's): no stage imports them (about 0.9 s of CPU a server). The client is
linclass/orchestration/warm_client.py (`pipeline/python` uses it when $LINCLASS_WARM_SOCKET names a live socket). A
command runs as it would in a fresh `python`: its own process (and process group), the client's standard streams,
working directory, environment and arguments, `__main__` = the script; the client relays its signals and exits with
the command's status.

What is served: only commands whose working directory is this workspace's root (or, for `-m dvc`, a folder
inside it) or a copy of it (DVC's temporary experiment copies: the queue's, `dvc exp run --temp`), while the
root and that copy hold, file for file, the project's code (src/linclass/, hydra_plugins/) as it was when this
interpreter started, whose PYTHONPATH (if any) is that workspace's src/, from the same Python environment;
anything else is declined and the client runs it in a fresh interpreter. (A served copy's command imports the
root's modules: the same bytes.) A stage that wants other BLAS threads than the ones loaded here re-executes
itself fresh (linclass.plumbing.threads).

Safety: the socket lives in a folder only this user can enter, and a connection from another user
is refused (SO_PEERCRED); the client, too, sends nothing to a socket another user listens on (the folder's
name is free again once the server removed it). The server has one thread, so forking it is safe. A child
whose client is killed outright (its connection closes) stops its process group: SIGTERM, SIGKILL 10 s later. The server
stops on SIGTERM (its children too), or after `--idle` seconds without a command; with `--own-folder`
(serving() makes the folder for it) it then removes its socket's folder too.
"""
from __future__ import annotations

import argparse
import ast
import atexit
import contextlib
import hashlib
import importlib
import io
import json
import logging
import os
import runpy
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

# The stage scripts whose imports are loaded up front, what they import lazily (MLflow's pyfunc model, its git
# and tracing support, its sqlite store with SQLAlchemy and Alembic's schema check, matplotlib's renderer, PIL's
# image formats), and what `dvc exp run` / `dvc exp push` import: measured, these lists leave a warm train stage
# 13 modules to import of the 3,000 it uses (426 before the store's were added here: 0.8 s a stage).
SCRIPTS = ("pipeline/train.py", "pipeline/evaluate.py")
PROJECT_CODE = ("src/linclass", "hydra_plugins")   # the project's own code, imported from the workspace's root
LAZY_MODULES = ("mlflow.pyfunc", "mlflow.models", "mlflow.tracing", "mlflow.tracing.processor", "git", "PIL.Image",
                "PIL.PngImagePlugin", "matplotlib.backends.backend_agg", "matplotlib.tri", "mpl_toolkits.mplot3d",
                "opentelemetry.sdk.trace", "pyarrow.pandas_compat",
                "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.tracking.sqlalchemy_workspace_store",
                "mlflow.store.model_registry.sqlalchemy_store", "sqlalchemy.dialects.sqlite", "alembic.command",
                "alembic.runtime.migration", "mlflow.tracing.processor.otel", "opentelemetry.sdk.metrics",
                "mlflow.pyfunc.scoring_server", "multiprocessing.queues", "concurrent.futures.process",
                "PIL.JpegImagePlugin", "PIL.BmpImagePlugin", "PIL.GifImagePlugin", "PIL.PpmImagePlugin",
                "pygments.lexers", "pygments.formatters", "tomllib", "netrc", "pandas.io.formats.csvs")
DVC_MODULES = ("dvc.cli", "dvc.cli.parser", "dvc.repo", "dvc.repo.experiments", "dvc.repo.experiments.run",
               "dvc.repo.experiments.push", "dvc.repo.experiments.executor.base",
               "dvc.repo.experiments.queue.workspace", "dvc.repo.experiments.queue.celery", "dvc.repo.reproduce",
               "dvc.repo.stage", "dvc.repo.plots", "dvc.repo.graph", "dvc.repo.trie", "dvc.repo.open_repo",
               "dvc.repo.brancher", "dvc.stage", "dvc.stage.cache", "dvc.utils.hydra", "dvc.utils.strictyaml",
               "dvc.utils.plots", "dvc.repo.index", "dvc.data_cloud", "dvc.cachemgr", "dvc.compare", "dvc.analytics",
               "dvc_data.index", "dvc_data.index.checkout", "dvc_data.hashfile.db.local", "dvc_data.hashfile.status",
               "dvc_data.fs", "dvc_render", "dvc_task.proc.manager", "scmrepo.git",
               "scmrepo.git.backend.pygit2.filter", "dulwich.porcelain", "dulwich.server", "pygit2", "ruamel.yaml",
               "flatten_dict", "platformdirs", "pyparsing", "celery.canvas", "antlr4", "fsspec.implementations.memory",
               "hydra", "hydra.compose", "hydra.core.plugins", "omegaconf", "networkx")
BLAS_VARIABLE = "OPENBLAS_NUM_THREADS"
# a child's environment: the BLAS threads loaded here (linclass.plumbing.threads.LOADED, not imported: the project's
# code is hashed before any of it is imported)
LOADED = "LINCLASS_WARM_BLAS"
GRACE = 10.0


def script_imports(root: Path) -> tuple[list[str], list[str]]:
    """The modules the stage scripts (SCRIPTS) import at their top level, and the names they import from them that
    may be modules (`from linclass import plots`)."""
    modules, maybe = [], []
    scripts = [root / script for script in SCRIPTS if (root / script).exists()]
    for node in (node for script in scripts for node in ast.parse(script.read_text()).body):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.append(node.module)
            maybe += [f"{node.module}.{alias.name}" for alias in node.names]
    return modules, maybe


def preload(root: Path, dvc: bool = False) -> list[str]:
    """Import the stage scripts' modules, what they import lazily and (with `dvc`) DVC's; return those that
    failed."""
    missing = []
    modules, maybe = script_imports(root)
    for name in dict.fromkeys([*modules, *LAZY_MODULES, *(DVC_MODULES if dvc else ()), *maybe]):
        try:
            importlib.import_module(name)
        except Exception:   # noqa: BLE001  (a module that fails here fails again, visibly, in the command)
            if name not in maybe:
                missing.append(name)
    try:   # Hydra's plugins (its own and hydra_plugins.linclass_check), discovered as compose() would
        from hydra.core.plugins import Plugins

        Plugins.instance()
    except Exception:   # noqa: BLE001  (the same: compose() fails visibly in the command)
        missing.append("Hydra's plugins")
    try:
        prime_model_logging()
    except Exception:   # noqa: BLE001  (the same: the train stage logs its model itself, visibly)
        missing.append("MLflow's model logging")
    return missing


def prime_model_logging() -> None:
    """Save a throwaway model into a temporary folder, as a train stage logs its own (public
    mlflow.pyfunc.save_model). The first model a process saves makes MLflow map every installed distribution
    to its modules for its requirements check: about 0.5 s, which the commands forked from here then skip.
    (Saving starts no thread: MLflow's telemetry records model logging, not saving; main() checks.)"""
    import mlflow

    from linclass.tracking import registry

    with tempfile.TemporaryDirectory() as tmp, registry.quiet(*registry.CHATTY):
        mlflow.pyfunc.save_model(Path(tmp) / "model", python_model=str(registry.CODE),
                                 pip_requirements=registry.requirements())


def project_code(workspace: Path) -> dict[str, bytes] | None:
    """The project's own code in `workspace` (PROJECT_CODE, every file but compiled ones): relative path ->
    sha256; None when a file went away while being read."""
    try:
        return {str(path.relative_to(workspace)): hashlib.sha256(path.read_bytes()).digest()
                for folder in PROJECT_CODE for path in sorted((workspace / folder).rglob("*"))
                if path.is_file() and "__pycache__" not in path.parts}
    except OSError:
        return None


def workspace_of(request: dict, root: Path) -> Path:
    """The workspace a request runs in: its working directory, or this root for `-m dvc` in a folder inside it
    that is not a copy of the project (a copy holds the project's code)."""
    cwd = Path(request.get("cwd", "")).resolve()
    inside = cwd.is_relative_to(root) and not (cwd / PROJECT_CODE[0]).is_dir()
    return root if inside and (request.get("argv") or [])[:2] == ["-m", "dvc"] else cwd


def served_here(request: dict, root: Path, code: dict[str, bytes]) -> str | None:
    """Why the request is declined, or None to run it. Served: a command in this root, or in a copy of it (DVC's
    temporary experiment copies), while both hold, file for file, the code this interpreter started with (what
    it imported, and what a command may import, open or copy from this root's src/ later on), from the same
    Python environment, with no PYTHONPATH but the workspace's src/; `-m dvc` also in a folder inside this root."""
    cwd, workspace = Path(request.get("cwd", "")).resolve(), workspace_of(request, root)
    argv = request.get("argv") or []
    if project_code(root) != code:
        return "the code changed since it was imported"
    if workspace != root and project_code(workspace) != code:
        return "a working directory with other code"
    if Path(request.get("python") or "/").parent.resolve() != Path(sys.executable).parent.resolve():
        return "another Python environment"   # its bin/ folder, links resolved: a project's .venv may be a link
    python_path = (request.get("env") or {}).get("PYTHONPATH")
    if python_path and any((cwd / entry).resolve() != workspace / "src"
                           for entry in python_path.split(os.pathsep) if entry):
        return "another PYTHONPATH"
    if not argv or (argv[0] == "-m" and len(argv) < 2) or (argv[0].startswith("-") and argv[0] != "-m"):
        return "not a script or -m module"
    return None


def receive(conn: socket.socket) -> tuple[dict, list[int]]:
    """A request (4-byte length, then JSON) and the three standard streams' descriptors sent with it."""
    conn.settimeout(10)
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    while len(data) < 4 or len(data) < 4 + struct.unpack("!I", data[:4])[0]:
        more = conn.recv(1 << 16)
        if not more:
            raise OSError("the client closed the connection mid-request")
        data += more
    conn.settimeout(None)
    return json.loads(data[4:4 + struct.unpack("!I", data[:4])[0]]), fds


def _send(conn: socket.socket, message: dict) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(message).encode() + b"\n")


READY = "warm interpreter pid "   # how serve()'s first line starts: the modules are imported, commands are served


def ready(log: Path, start: int = 0) -> bool:
    """Whether the interpreter writing `log` (from byte `start`) has imported its modules and serves. Its socket
    is there from the start (a command asked meanwhile waits), so it says so in its log."""
    try:
        with open(log, "rb") as out:
            out.seek(start)
            return any(line.startswith(READY.encode()) for line in out.read(1 << 16).splitlines())
    except OSError:
        return False


def serve(listener: socket.socket, path: Path, root: Path, idle: float, code: dict[str, bytes]) -> dict | None:
    """Accept commands on `listener` (bound to `path`) until stopped or idle; in a forked child, return its job (run
    by the caller at the top level, outside this function's state); in the server, None once it stops."""
    server_pid, stopping = os.getpid(), []
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    children: dict[int, tuple[socket.socket, list[str], float]] = {}
    last_seen = time.monotonic()
    print(f"{READY}{os.getpid()} serving {root} on {path}", flush=True)
    try:
        while not stopping and (children or time.monotonic() - last_seen < idle):
            for key, _ in selector.select(timeout=1.0):
                if key.fileobj is listener:
                    job = _accept(listener, root, code, children)
                    last_seen = time.monotonic()
                    if job is not None:   # the child: leave the server's state behind
                        for fd in (wake_read, wake_write):
                            os.close(fd)
                        for close in [selector.close, listener.close, *(c.close for c, _, _ in children.values())]:
                            close()
                        return job
                else:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_read, 512)
            _reap(children)
            if children:
                last_seen = time.monotonic()
    finally:
        if os.getpid() == server_pid:   # not in a forked child on its way out
            _stop_children(children)
            path.unlink(missing_ok=True)
    return None


def _accept(listener: socket.socket, root: Path, code: dict[str, bytes], children: dict) -> dict | None:
    conn, _ = listener.accept()
    _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    if uid != os.getuid():
        conn.close()
        return None
    try:
        request, fds = receive(conn)
    except (OSError, ValueError):
        conn.close()
        return None
    reason = served_here(request, root, code) if len(fds) == 3 else "no standard streams"
    if reason is not None:
        print(f"declined ({reason}): {' '.join(request.get('argv') or [])[:160]}", flush=True)
        _send(conn, {"declined": reason})
        conn.close()
        for fd in fds:
            os.close(fd)
        return None
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid = os.fork()
    if pid == 0:
        return {"request": request, "fds": fds, "conn": conn}
    for fd in fds:
        os.close(fd)
    children[pid] = (conn, request["argv"], time.monotonic())
    _send(conn, {"pid": pid})
    return None


def _reap(children: dict) -> None:
    """Collect ended children: send each client its command's status; log what the command cost."""
    while children:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn, argv, started = children.pop(pid, (None, [], 0.0))
        if conn is not None:
            code = os.waitstatus_to_exitcode(status)
            print(f"{time.monotonic() - started:7.2f} s wall {usage.ru_utime + usage.ru_stime:7.2f} s CPU "
                  f"exit {code}: {' '.join(argv)[:160]}", flush=True)
            _send(conn, {"signal": -code} if code < 0 else {"exit": code})
            conn.close()


def _stop_children(children: dict) -> None:
    for sig, wait in ((signal.SIGTERM, GRACE), (signal.SIGKILL, 0.0)):
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while children and time.monotonic() < deadline:
            _reap(children)
            time.sleep(0.1)
    _reap(children)


# ---- in a forked child ----

def _watch(conn: socket.socket) -> None:
    """The client is gone when its connection closes: stop this command's process group."""
    with contextlib.suppress(OSError):
        while conn.recv(64):
            pass
    for sig, wait in ((signal.SIGTERM, GRACE), (signal.SIGKILL, 0.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(0, sig)
        time.sleep(wait)


def run_job(job: dict, loaded_blas: str) -> None:
    """Become the requested command: own process group, the client's streams, directory, environment."""
    os.setpgid(0, 0)
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(job["fds"]):
        os.dup2(fd, target)
        os.close(fd)
    request = job["request"]
    for signum in request.get("ignored", []):   # ignored by the client (nohup): as a fresh python inherits them
        signal.signal(signum, signal.SIG_IGN)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None   # found again from this environment's TMPDIR, as a fresh interpreter finds it
    os.environ[LOADED] = loaded_blas
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):   # buffered as a fresh interpreter would buffer these streams
            stream.reconfigure(line_buffering=stream.isatty() or stream is sys.stderr, write_through=unbuffered)
    threading.Thread(target=_watch, args=(job["conn"],), daemon=True).start()
    exit_code = [0]
    # Registered before the command runs, so it runs after the command's own exit handlers: the exit code,
    # with the streams and logging flushed, and without the teardown of every preloaded module (about a second).
    atexit.register(_exit_now, exit_code)
    argv = request["argv"]
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            sys.path[0] = os.getcwd()
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path[0] = str(Path(argv[0]).resolve().parent)
            runpy.run_path(argv[0], run_name="__main__")
    except BaseException as exc:   # the process's exit status, as the interpreter makes it
        code = exc.code if isinstance(exc, SystemExit) else 130 if isinstance(exc, KeyboardInterrupt) else 1
        exit_code[0] = 0 if code is None else code if isinstance(code, int) else 1
        raise


def _exit_now(exit_code: list[int]) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    logging.shutdown()
    os._exit(exit_code[0])


@contextlib.contextmanager
def serving(root: Path, env: dict[str, str], log: Path, wait: float = 0.0, idle: float = 600.0,
            dvc: bool = False) -> Iterator[dict]:
    """While inside: a warm interpreter serving the workspace `root`, started with `env` (PYTHONPATH: root's
    src/), in a process group of its own (a Ctrl-C reaches its commands through their clients), its output in
    `log` (one line per command served or declined) and its socket in a private temporary folder. Yields the
    variables that send `pipeline/python` to it. It listens before it imports its modules (about 3 s): a command
    asked meanwhile waits for them, and runs fresh if the interpreter stops first. `wait`: seconds to wait until
    it has imported them (ready()) before yielding. With `dvc`, it loads DVC's modules too,
    for the `-m dvc` commands it will be asked to run. Stopped on the way out, with anything it still runs
    (SIGTERM, SIGKILL after GRACE seconds)."""
    folder = Path(tempfile.mkdtemp(prefix="linclass-warm-"))   # 0700; short: a socket's path has at most 107 bytes
    socket_path = folder / "socket"
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)   # private: command lines and times (an older log may have been readable)
        with open(fd, "w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "linclass.orchestration.warm", "--socket",
                                     str(socket_path), "--idle", str(idle), "--own-folder",
                                     *(["--dvc"] if dvc else [])], cwd=root,
                                    env={**env, "PYTHONPATH": str(Path(root, "src"))}, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, process_group=0)
        try:
            deadline = time.monotonic() + wait
            while not ready(log) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            yield {"LINCLASS_WARM_SOCKET": str(socket_path)}
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=GRACE + 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="a warm interpreter for this workspace's Python commands")
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--idle", type=float, default=600.0, help="stop after this many seconds without a command")
    parser.add_argument("--own-folder", action="store_true",
                        help="the socket's folder was made for this interpreter: remove it (empty) when stopping")
    parser.add_argument("--dvc", action="store_true", help="also load DVC's modules, for `-m dvc` commands")
    args = parser.parse_args()
    root = Path.cwd().resolve()
    import linclass

    if not Path(linclass.__file__).resolve().is_relative_to(root / "src"):
        sys.exit(f"error: linclass comes from {Path(linclass.__file__).parent}, not this workspace's src/: "
                 f"start with PYTHONPATH={root / 'src'}")
    os.setpgid(0, 0)   # a group of its own: stopping a command's group never stops the server
    # SIGTERM before serving (the pipeline it was started for may be done already), until serve() takes it: exit
    # through the with-blocks, which remove what they made (prime_model_logging's model folder)
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    code = project_code(root) or {}   # before the imports: an edit while they run is seen as a change
    # listening before the imports: a command asked while they run waits in the backlog (accepted once they are
    # done) instead of paying them again in a fresh python; if loading fails, the closed socket sends it there
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(args.socket))
    listener.listen(64)
    try:
        # what loading makes (prime_model_logging's model, MLflow's own temporary folders) goes in the socket's
        # private folder, which serving() removes whole: not even a SIGKILL while it loads leaves anything in $TMPDIR
        tempfile.tempdir = str(args.socket.parent)
        missing = preload(root, args.dvc)
        tempfile.tempdir = None
        if missing:
            print(f"not preloaded (imported by the commands themselves): {', '.join(missing)}", flush=True)
        if threading.active_count() != 1:
            sys.exit(f"error: {threading.active_count()} threads after the imports: forking would not be safe")
    except BaseException:
        listener.close()
        args.socket.unlink(missing_ok=True)
        raise
    job = serve(listener, args.socket, root, args.idle, code)
    if job is not None:
        run_job(job, os.environ.get(BLAS_VARIABLE, ""))
        return
    if args.own_folder:   # also when whoever made it was killed outright and cannot remove it
        with contextlib.suppress(OSError):
            args.socket.parent.rmdir()
    # stopped: out without the teardown of every preloaded module (1.2-1.3 s of CPU, which whoever stops it waited
    # for: serving(), at the end of every make exp, grid and sweep). Every command ran in a child of its own, so the
    # exit handlers of what this process imported have nothing to finish; serving() removes the socket's folder.
    _exit_now([0])


if __name__ == "__main__":
    main()
