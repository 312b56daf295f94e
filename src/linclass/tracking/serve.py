"""The MLflow servers the project starts: the UI on the project's own store, and a tracking server.

Both run the MLflow app `linclass` (linclass.orchestration.guard): routes that would run commands on
this host or change the server's configuration (MLflow's AI assistant, jobs, the AI gateway, webhooks...)
are refused, artifacts stay under the server's root, malformed requests get a 400; uvicorn does not trust
X-Forwarded-For (any local user could send one). Both listen on loopback unless told otherwise, run
MLflow's GenAI job runner off (linclass does not use it, and it starts seven more processes) and take
their database URLs from the environment, not argv. Their files are private (umask 077; mlflow-server/ 0700).
The UI answers only its owner's processes (LINCLASS_OWNER_ONLY); the tracking server only requests that carry
its token (LINCLASS_SERVER_TOKEN: mlflow-server/token, made once, 0600; clients send it as MLFLOW_TRACKING_TOKEN).
One token for everyone who has it, no per-user logins: that is the team stack (docs/team.md).
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import NoReturn

from linclass.settings import Tracking

ENVIRONMENT = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
               # what MLflow 3.17's server prints at every start and its user cannot act on
               "PYTHONWARNINGS": "ignore:starlette.middleware.wsgi is deprecated"}
APP = ["--app-name", "linclass", "--uvicorn-opts", "--no-proxy-headers"]


def stores(backend: str) -> dict:
    """The server's database for runs and for the model registry (MLflow says so in a line when the second is
    not given)."""
    return {"MLFLOW_BACKEND_STORE_URI": backend, "MLFLOW_REGISTRY_STORE_URI": backend}


# MLflow's CLI runs uvicorn as its child and passes the signals it gets on to it; in the terminal's process group
# uvicorn would get Ctrl-C twice, take the second for a forced exit and print tracebacks. So MLflow runs in a
# process group of its own under this small supervisor (a fresh interpreter: the 250 MB of this one are not kept
# for the server's lifetime), which passes Ctrl-C, SIGTERM or a closed terminal on once, and exits with its status.
SUPERVISE = """
import signal, subprocess, sys
server = None
def pass_on(signum, frame):
    if server is None:
        sys.exit(128 + signum)
    try:
        server.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
    except ProcessLookupError:
        pass
for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(signum, pass_on)
server = subprocess.Popen(sys.argv[1:], start_new_session=True)
sys.exit(server.wait())
"""


def _run_mlflow(*args: str, env: dict) -> NoReturn:
    """Become the supervisor of `mlflow ARGS` (SUPERVISE), under umask 077: the server's files (its database,
    the artifacts) are private."""
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    os.umask(0o077)
    os.execve(sys.executable, [sys.executable, "-I", "-c", SUPERVISE, mlflow, *args], env)


def port_free(host: str, port: int) -> None:
    """RuntimeError (one line) when another process listens on host:port, or host is no address of this
    machine: MLflow's server would print its links, then fail to bind in its log and still exit 0."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:   # not a port in use: a name that does not resolve, another machine's
                raise RuntimeError(f"cannot listen on {host} ({exc.strerror}): --host takes an address of this "
                                   "machine, such as 127.0.0.1 (this machine only) or 0.0.0.0 (every network)"
                                   ) from None
            raise RuntimeError(f"port {port} on {host} is not free ({exc.strerror}): another server listens "
                               f"there; choose another: --port {port + 1}, or PORT={port + 1} with make") from None


def ui(tracking: Tracking, port: int) -> None:
    """`mlflow ui` on the project's store (created if needed), after printing the links to its training runs,
    the Compare page of the workspace's models and the studies, all in the UI's machine-learning view."""
    from mlflow.tracking import MlflowClient

    from linclass.tracking.runs import project_root, setup, studies_experiment
    from linclass.tracking.ui import links, set_runs_view

    port_free("127.0.0.1", port)
    root = project_root()
    experiment = tracking.experiment_name()
    experiment_id = setup(experiment, None, root)   # the project's own store, not MLFLOW_TRACKING_URI
    set_runs_view(experiment_id)
    studies_id = setup(studies_experiment(experiment), None, root)
    print("\n".join(links(MlflowClient(), experiment_id, studies_id, f"http://127.0.0.1:{port}", root)), flush=True)
    env = {**os.environ, **ENVIRONMENT, **stores(f"sqlite:///{root / 'mlflow.db'}"),
           "LINCLASS_OWNER_ONLY": "1"}   # the guard: no other local account reads or changes the project's runs
    # the Host headers it answers: its own address only (MLflow's default adds every private network's, and says
    # at each start how to open the server to other hosts, which the project's own store must not be)
    _run_mlflow("ui", "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--allowed-hosts",
                f"127.0.0.1:{port},localhost:{port}", *APP, env=env)


def yours(path: Path, what: str, st: os.stat_result) -> None:
    """RuntimeError (one line) unless `path` (stat `st`) belongs to this account: a token or a folder that another
    account made (mlflow-server a symbolic link to theirs) is a token they know."""
    if st.st_uid != os.getuid():
        raise RuntimeError(f"{path} belongs to uid {st.st_uid}, not to you (uid {os.getuid()}): another account "
                           f"could read or replace the server's {what}; remove it, or start from another folder")


def server_token(folder: Path) -> tuple[Path, str]:
    """`folder`/token and the token it holds: made once (secrets.token_urlsafe, 0600), kept for later starts;
    refused where it is not this account's own private file (a symbolic link, another account's, readable by
    others)."""
    path = folder / "token"
    with contextlib.suppress(FileExistsError):
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise RuntimeError(f"{path} is a symbolic link, not the server's own token: delete it, and the server "
                           "makes a new one") from None
    with os.fdopen(fd) as file:
        st = os.fstat(fd)
        yours(path, "token", st)
        if st.st_mode & 0o077:
            raise RuntimeError(f"{path} is open to other accounts (mode {st.st_mode & 0o777:o}, not 600): delete it, "
                               "and the server makes a new one (teammates then need the new one)")
        token = file.read().strip()
    if len(token) < 16:   # an emptied file would leave the server open
        raise RuntimeError(f"{path} holds {len(token)} characters, not a token (at least 16): delete it, and "
                           "the server makes a new one")
    return path, token


def reachable_host(host: str) -> str:
    """The name clients reach a server listening on `host` at: this machine's name for every network's address."""
    return socket.gethostname() if host in ("0.0.0.0", "::") else host


def server(host: str, port: int, backend_store: str | None, artifacts: str | None) -> None:
    """`mlflow server` with a database backend and an artifact store it serves (clients up- and download
    through it): by default sqlite and a folder under mlflow-server/."""
    port_free(host, port)
    folder = Path("mlflow-server").resolve()
    folder.mkdir(mode=0o700, exist_ok=True)
    yours(folder, "database, artifacts and token", folder.stat())
    folder.chmod(0o700)   # the database and the artifacts: no other account reads them from disk
    artifacts = artifacts or str(folder / "artifacts")
    if "://" not in artifacts:
        Path(artifacts).mkdir(mode=0o700, parents=True, exist_ok=True)   # umask 077 comes later, with MLflow
    token_file, token = server_token(folder)
    env = {**os.environ, **ENVIRONMENT, "LINCLASS_SERVER_TOKEN": token,
           **stores(backend_store or f"sqlite:///{folder / 'mlflow.db'}")}
    print(f"MLflow server on http://{host}:{port}, answering requests with its token ({token_file}; in a "
          f"browser: any user name, the token as password). Clients:\nexport MLFLOW_TRACKING_URI="
          f"http://{reachable_host(host)}:{port} MLFLOW_TRACKING_TOKEN=$(cat {token_file})", flush=True)
    _run_mlflow("server", "--artifacts-destination", artifacts, "--serve-artifacts", "--host", host, "--port",
                 str(port), "--workers", "1", *APP, env=env)
