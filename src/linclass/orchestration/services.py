"""The team stack on one machine: PostgreSQL, the MLflow tracking server with basic auth, a DVC remote.

    linclass services up | down | status | add-user NAME [--grant EXPERIMENT=PERMISSION] | env [--user NAME]

Everything lives in one git-ignored folder, <project>/.services (LINCLASS_SERVICES_DIR moves it), owned by
the account the stack runs as (accounts.py: the caller, or as root the unprivileged linclass-stack), folders
0700 and files 0600, logs included:
    secrets.env            PostgreSQL password, Flask secret key, admin password, the key-encryption passphrase
                           of MLflow's stored secrets: generated once, never printed
    auth.ini               MLflow's basic-auth settings (its user database is on the same PostgreSQL)
    postgres/              the database cluster
    artifacts/             the artifact store that the server serves to clients (--artifacts-destination)
    tmp/                   the server's temporary files (its TMPDIR)
    dvc-remote/     2770   the shared DVC remote (a folder), for the team's group (accounts.py)
    users/NAME.env         a user's MLFLOW_TRACKING_* variables, to `source`
    state.json, postgres.log, mlflow.log

The MLflow server runs MLflow's basic-auth app behind linclass.orchestration.guard (app linclass-team): the
routes that would run commands on the host or change the server's configuration are refused, wrong
passwords are throttled.

Settings (environment variables, read by `up`):
    LINCLASS_HOST (127.0.0.1)      the address the server listens on; 0.0.0.0 for the LAN (behind TLS: docs/team.md),
    LINCLASS_ALLOWED_HOSTS         with the names clients use for it (MLflow's --allowed-hosts), e.g. team-box:5000
    LINCLASS_TRUSTED_PROXY         the address of a reverse proxy in front (TLS): the server then takes the client
                                   address from its X-Forwarded-For (else it never trusts that header)
    LINCLASS_PUBLIC_URL            the URL clients use through that proxy (https://...), written to users/NAME.env;
                                   the guard answers pages of its origin too
    LINCLASS_MLFLOW_PORT (5000)    LINCLASS_PG_PORT (5433)
    LINCLASS_BACKEND_STORE         a postgresql://user:password@host/db of a managed PostgreSQL: no local one
    LINCLASS_AUTH_STORE            the same for the user database (default: the backend store's server, db mlflow_auth)
    LINCLASS_ARTIFACTS             a folder or s3://bucket/prefix (AWS_* variables, MLFLOW_S3_ENDPOINT_URL)
    LINCLASS_DVC_REMOTE            the DVC remote folder (default .services/dvc-remote)
    LINCLASS_DEFAULT_PERMISSION    what a user may do on others' experiments: NO_PERMISSIONS (default) or READ
    LINCLASS_AUTH_CACHE_SECONDS    how long the server trusts a password it has checked (60; 0: check every
                                   request, each check is a deliberately slow scrypt hash of ~0.1 s)
    LINCLASS_STACK_USER            the account the stack runs as when started by root (default: linclass-stack)
    LINCLASS_TEAM_GROUP            the group that may use the DVC remote (as root, default: linclass-team)
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pwd
import re
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote, urlsplit

import psutil
import requests
from dotenv import dotenv_values

from linclass.orchestration.accounts import (
    Account,
    describe_uids,
    last_line,
    make_private,
    open_private_log,
    private_dir,
    read_private,
    refuse_strangers,
    stack_account,
    strangers_listening,
    team_group,
    write_private,
)
from linclass.orchestration.processes import end_processes
from linclass.tracking.serve import reachable_host
from linclass.tracking.store import process_start

PG_BIN = Path(os.environ.get("LINCLASS_PG_BIN", "/usr/lib/postgresql/15/bin"))
DB_USER = "linclass"
ADMIN = "admin"
PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Every client of the stack's own PostgreSQL (these commands, the MLflow server) lets it authenticate with SCRAM only:
# libpq otherwise sends the password in clear to whatever listens at the port and asks for it (another account
# may listen there while PostgreSQL is down), and SCRAM never reveals it.
SCRAM_ONLY = "require_auth=scram-sha-256"
SECRETS = ("LINCLASS_PG_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD",
           "MLFLOW_CRYPTO_KEK_PASSPHRASE")


class ServiceError(RuntimeError):
    """A part of the stack cannot start or answer; the message is one line naming it."""


# ---- where things are ----

def services_dir() -> Path:
    folder = os.environ.get("LINCLASS_SERVICES_DIR")
    return Path(folder).resolve() if folder else Path.cwd().resolve() / ".services"


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of env file `path` ({} when there is none), never read through a link (read_private)."""
    text = read_private(path)
    return {} if text is None else {key: value or "" for key, value in dotenv_values(stream=io.StringIO(text)).items()}


def running_secrets(folder: Path, make_as: Account | None = None) -> dict[str, str]:
    """The stack's secrets (secrets.env). For `up` (`make_as`: the stack's account) those it lacks are generated into
    it (0600): all on first use, the KEK passphrase in an older file. Otherwise (status, add-user) read, never made:
    new ones would not match the databases of a stack that was set up, and would lock `up` out of them."""
    path = folder / "secrets.env"
    values = read_env_file(path)
    missing = [name for name in SECRETS if not values.get(name)]
    if missing:
        if make_as is None:
            raise ServiceError(f"{path} {'lacks ' + ', '.join(missing) if path.exists() else 'is missing'}: the "
                               "stack's passwords; restore it from a backup (new ones would not match its databases)")
        values.update({name: secrets.token_urlsafe(24) for name in missing})
        write_private(path, "".join(f"{k}={v}\n" for k, v in values.items()), make_as)
    return values


def load_state(folder: Path) -> dict:
    text = read_private(folder / "state.json")
    return json.loads(text) if text is not None else {}


def save_state(folder: Path, state: dict, account: Account) -> None:
    write_private(folder / "state.json", json.dumps(state, indent=2) + "\n", account)


def check_listener(folder: Path, url: str, what: str) -> None:
    """ServiceError (one line) when a process of another account than the stack's (the owner of `folder`, or of
    its database cluster: an older stack's) or this user listens at `url`'s address on this machine: a request
    would hand it `what`. Any account may listen on the stack's ports while a part is down (before `up`, after
    `down`, after a crash), and answer like it."""
    parts = urlsplit(url if "://" in url else f"//{url}")
    if parts.hostname is None or parts.port is None:
        return
    data = folder / "postgres"
    owners = {os.getuid(), folder.stat().st_uid, *([data.stat().st_uid] if data.exists() else [])}
    strangers = strangers_listening(parts.hostname, parts.port, owners)
    if strangers:
        raise ServiceError(f"{parts.hostname}:{parts.port} is held by another account's process "
                           f"({describe_uids(strangers)}), not by the stack: it would get {what}; stop that "
                           "process, or give the stack other ports (LINCLASS_MLFLOW_PORT, LINCLASS_PG_PORT)")


# ---- PostgreSQL ----

def as_account(cmd: list[str], account: Account, cwd: Path | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `cmd` as `account` (its own environment plus `env`; in `cwd`, else in its HOME when it is another
    account, else here), output captured."""
    return subprocess.run(cmd, env={**account.env(), **(env or {})},
                          cwd=cwd or (None if account.is_me else account.home), capture_output=True, text=True,
                          timeout=120, **account.popen_args())


def _check(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        raise ServiceError(f"{what} failed: {last_line(proc.stderr or proc.stdout)}")


def pg_account(folder: Path) -> Account:
    """Who runs PostgreSQL's commands on the cluster in `folder`: the stack's account, or for a cluster made
    by an earlier version (owned by another unprivileged user) that user, so that `down` can stop it."""
    account = stack_account()
    data = folder / "postgres"
    if os.geteuid() == 0 and data.is_dir() and not data.is_symlink():   # (a link's target is not the stack's)
        owner = data.lstat().st_uid
        if owner not in (0, account.uid):
            entry = pwd.getpwuid(owner)
            return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, "/")
    return account


def pg_ctl(folder: Path, *args: str, account: Account | None = None) -> subprocess.CompletedProcess:
    """PostgreSQL's pg_ctl on the cluster in `folder`, as `account` (default: pg_account)."""
    return as_account([str(PG_BIN / "pg_ctl"), *args, "-D", str(folder / "postgres")], account or pg_account(folder))


def postgres_up(folder: Path, port: int, password: str) -> None:
    """initdb once (scram-sha-256, a password for DB_USER), then pg_ctl start on 127.0.0.1:port, as the
    stack's account."""
    if not (PG_BIN / "pg_ctl").exists():
        raise ServiceError(f"PostgreSQL 15 is not installed ({PG_BIN}/pg_ctl missing): apt-get install postgresql-15")
    account = stack_account()
    data, log = folder / "postgres", folder / "postgres.log"
    if not (data / "PG_VERSION").exists():
        private_dir(data, account)
        pwfile = folder / ".pgpass.tmp"
        write_private(pwfile, password + "\n", account)
        try:
            _check(as_account([str(PG_BIN / "initdb"), "-D", str(data), "-U", DB_USER, "--auth=scram-sha-256",
                               f"--pwfile={pwfile}", "-E", "UTF8", "--no-instructions"], account), "initdb")
        finally:
            pwfile.unlink(missing_ok=True)
    os.close(open_private_log(log, account))
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
    _check(pg_ctl(folder, "start", "-w", "-t", "60", "-l", str(log), "-o", options, account=account),
           f"PostgreSQL start on port {port} (see {log})")


def postgres_pid(folder: Path) -> int | None:
    """The postmaster's pid (pg_ctl status) when PostgreSQL runs on the cluster in `folder`, else None."""
    if not (folder / "postgres" / "PG_VERSION").exists():
        return None
    proc = pg_ctl(folder, "status")
    found = re.search(r"\(PID: (\d+)\)", proc.stdout)
    return int(found.group(1)) if proc.returncode == 0 and found else None


def postgres_down(folder: Path) -> None:
    if postgres_pid(folder):
        _check(pg_ctl(folder, "stop", "-w", "-m", "fast"), "PostgreSQL stop")


def ensure_databases(port: int, password: str, names: list[str]) -> None:
    import psycopg2

    try:
        conn = psycopg2.connect(host="127.0.0.1", port=port, user=DB_USER, password=password, dbname="postgres",
                                connect_timeout=10, require_auth="scram-sha-256")
    except psycopg2.Error as exc:
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ServiceError(f"PostgreSQL on 127.0.0.1:{port} does not answer: {line}") from None
    conn.autocommit = True
    with contextlib.closing(conn), conn.cursor() as cur:
        for name in names:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}"')


def database_answers(url: str) -> tuple[bool, str]:
    """(True, "N experiments") if MLflow's database answers a real query, else (False, one line why)."""
    import sqlalchemy

    args = {"connect_timeout": 5} if url.startswith("postgresql") else {}
    engine = sqlalchemy.create_engine(url, connect_args=args, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            count = conn.execute(sqlalchemy.text("SELECT count(*) FROM experiments")).scalar_one()
        return True, f"{count} experiment{'s' if count != 1 else ''}"
    except sqlalchemy.exc.SQLAlchemyError as exc:
        line = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
        password = urlsplit(url).password
        return False, line.replace(password, "***") if password else line
    finally:
        engine.dispose()


# ---- the MLflow server ----

def api(url: str, path: str, *, user: str | None = None, password: str | None = None,
        body: dict | None = None, method: str | None = None, timeout: float = 10) -> tuple[int, dict]:
    """One JSON request to the server: (HTTP status, decoded body or {})."""
    response = requests.request(method or ("POST" if body is not None else "GET"), url.rstrip("/") + path,
                                json=body, auth=(user, password or "") if user is not None else None, timeout=timeout)
    try:
        return response.status_code, response.json() if response.content else {}
    except ValueError:
        return response.status_code, {"text": response.text[:200]}


def admin_api(url: str, admin_password: str, path: str, failed: str, body: dict | None = None) -> dict:
    """The admin's request: the decoded answer; ServiceError (`failed`: HTTP status and MLflow's message) unless 200."""
    code, answer = api(url, path, user=ADMIN, password=admin_password, body=body)
    if code != 200:
        raise ServiceError(f"{failed}: HTTP {code} {answer.get('message', answer)}")
    return answer


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return
        if proc.poll() is not None:
            tail = last_line(read_private(log) or "")   # as root, never through a link the stack's account made
            raise ServiceError(f"MLflow server exited with {proc.returncode}: {tail} (see {log})")
        if time.monotonic() > deadline:
            raise ServiceError(f"MLflow server did not answer {url}/health within {timeout:g} s (see {log})")
        time.sleep(0.3)


def auth_ini(database_uri: str, default_permission: str, cache_seconds: int = 60) -> str:
    # MLflow's credential cache: a password checked once is trusted for cache_seconds (one worker: a
    # password changed or a user deleted through the API takes effect at once); without it every request
    # of a training run pays the scrypt check.
    return ("[mlflow]\n"
            f"default_permission = {default_permission}\n"
            f"database_uri = {database_uri.replace('%', '%%')}\n"
            f"admin_username = {ADMIN}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            f"auth_cache_ttl_seconds = {cache_seconds}\n")


def mlflow_up(folder: Path, account: Account, cfg: dict, secret: dict[str, str]) -> subprocess.Popen:
    """Start the MLflow server as `account` where `cfg` (stack_config) says: MLflow's basic-auth app behind the guard
    (app linclass-team)."""
    host, port, artifacts = cfg["host"], cfg["port"], cfg["artifacts"]
    write_private(folder / "auth.ini", auth_ini(cfg["auth_store"], cfg["default_permission"],
                                                cfg["auth_cache_seconds"]), account)
    if "://" not in artifacts:
        private_dir(Path(artifacts), account)
    private_dir(folder / "tmp", account)
    python, python_env = server_python(account, folder)
    # Secrets and database URLs travel in the environment, not argv (which `ps` shows to every user); the
    # server gets nothing else of the caller's environment but an S3 artifact store's settings.
    env = {**account.env(), **python_env,
           **{k: v for k, v in os.environ.items() if k.startswith(("AWS_", "MLFLOW_S3_"))},
           "MLFLOW_BACKEND_STORE_URI": cfg["backend"],
           "MLFLOW_AUTH_CONFIG_PATH": str(folder / "auth.ini"),
           **{name: secret[name] for name in SECRETS if name.startswith("MLFLOW_")},
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",   # the GenAI job runner: 7 more processes, unused
           # its temporary files in a folder of its own, not /tmp, where every account may plant links and files:
           # MLflow's lock /tmp/db_init_lock-<md5 of the database URL, password hidden> has a name anyone can tell
           "TMPDIR": str(folder / "tmp"),
           # the guard answers pages of the public URL's origin too (a proxy may send another Host)
           **({"LINCLASS_PUBLIC_URL": cfg["public_url"]} if cfg["public_url"] else {})}
    proxy = os.environ.get("LINCLASS_TRUSTED_PROXY")
    uvicorn = f"--proxy-headers --forwarded-allow-ips={shlex.quote(proxy)}" if proxy else "--no-proxy-headers"
    cmd = [python, "-m", "mlflow", "server", "--app-name", "linclass-team", "--host", host,
           "--port", str(port), "--workers", "1", "--uvicorn-opts", uvicorn,
           "--serve-artifacts", "--artifacts-destination", artifacts]
    if os.environ.get("LINCLASS_ALLOWED_HOSTS"):   # MLflow answers only local and private addresses otherwise
        cmd += ["--allowed-hosts", f"{os.environ['LINCLASS_ALLOWED_HOSTS']},127.0.0.1:{port},localhost:{port}"]
    log = open_private_log(folder / "mlflow.log", account)
    try:
        return subprocess.Popen(cmd, env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, **account.popen_args())
    finally:
        os.close(log)


def project_paths() -> list[str]:
    """This interpreter's site-packages and the folders its .pth files add (the editable linclass)."""
    import site

    paths = []
    for folder in site.getsitepackages():
        lines = [line.strip() for pth in sorted(Path(folder).glob("*.pth")) for line in pth.read_text().splitlines()]
        paths += [folder, *(p for p in lines if p and not p.startswith(("#", "import")) and Path(p).is_dir())]
    return paths


# Whether an interpreter, as the stack's account, reads the project's code and its packages: the guard imported (the
# project's code, and packages of the same site-packages as MLflow's, C extensions included) and MLflow found, not
# imported: importing mlflow.server cost 3 s of CPU (7 s of a `services up` on a busy machine), paid again by the
# server itself, which says in its log (wait_healthy's line) what else it could not import.
SERVER_IMPORTS = ("import importlib.util, linclass.orchestration.guard\n"
                  "if importlib.util.find_spec('mlflow') is None:\n"
                  "    raise SystemExit(\"ModuleNotFoundError: No module named 'mlflow'\")")


def server_python(account: Account, folder: Path) -> tuple[str, dict[str, str]]:
    """The interpreter `account` runs the server with, and what it needs in its environment: this one, or
    when the account cannot run it (a virtualenv made from an interpreter in a private home, e.g. pyenv's
    under /root) the system's python of the same version with this one's packages on PYTHONPATH."""
    candidates = [(sys.executable, {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {})]
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not account.is_me and system.exists():
        candidates.append((str(system), {"PYTHONPATH": os.pathsep.join(project_paths())}))
    why = []
    for python, env in candidates:
        try:
            proc = as_account([python, "-c", SERVER_IMPORTS], account, cwd=folder, env=env)
        except OSError as exc:
            why.append(f"{python}: {exc.strerror}")
            continue
        if proc.returncode == 0:
            return python, env
        why.append(f"{python}: {last_line(proc.stderr or proc.stdout)}")
    raise ServiceError(f"the stack's account {account.name} cannot run the MLflow server ({'; '.join(why)}): put "
                       "the project and its .venv where that account can read them (every parent folder o+x)")


def mlflow_answers(url: str, admin_password: str, tries: int = 2) -> tuple[bool, str]:
    """(True, "") if the server answers an admin's real request (it reads the database), else (False, why)."""
    for attempt in range(tries):
        try:
            code, body = api(url, "/api/2.0/mlflow/experiments/search?max_results=1", user=ADMIN,
                             password=admin_password, timeout=10)
        except requests.RequestException as exc:
            code, body = None, {"message": str(exc)}
        if code == 200:
            return True, ""
        time.sleep(0.5 * (attempt < tries - 1))   # a pooled connection the database dropped fails once
    return False, f"HTTP {code}" if code else str(body.get("message", ""))[:200]


def runs_as(pid: int, uid: int) -> bool:
    try:
        return psutil.Process(pid).uids().real == uid != 0   # the stack never runs as root
    except (psutil.Error, ValueError, TypeError):
        return False


def mlflow_alive_in(state: dict, folder: Path) -> bool:
    """Whether the stack's MLflow server of `state` (state.json) still runs: its pid, started at the create time
    recorded with it (after a reboot or a crash the pid may be another process's, which `down` would otherwise
    stop with its children), as the stack's account, the folder's owner (state.json is that account's file: whoever
    runs as it could name any process there, root's own or init, for root to stop)."""
    pid, started = state.get("mlflow_pid"), state.get("mlflow_started")
    return bool(pid and (started is None or process_start(pid) == started) and runs_as(pid, folder.stat().st_uid))


def stop_group(pid: int | None, timeout: float = 20, uid: int | None = None) -> None:
    """SIGTERM to the process led by `pid` and everything it started, SIGKILL after `timeout`; with `uid`, only
    if the leader runs as `uid`, and only those of its processes that do. None: nothing (psutil.Process(None) is
    this process: `services down` with no MLflow recorded killed itself)."""
    if pid is None or (uid is not None and not runs_as(pid, uid)):
        return
    try:
        leader = psutil.Process(pid)
        processes = [leader, *leader.children(recursive=True)]
    except (psutil.Error, ValueError, TypeError):
        return
    end_processes([p for p in processes if uid is None or runs_as(p.pid, uid)], timeout)


# ---- the commands ----

def environment() -> dict:
    """The stack's numbers and its default permission from the environment (the module docstring), each checked:
    ServiceError (one line naming the variable and what it allows) before anything starts or is written."""
    def number(name: str, default: int, low: int, high: int) -> int:
        text = os.environ.get(name, str(default))
        if not text.isdigit() or not low <= int(text) <= high:
            raise ServiceError(f"{name}={text!r}; allowed: a whole number, {low}..{high}")
        return int(text)

    permission = os.environ.get("LINCLASS_DEFAULT_PERMISSION", "NO_PERMISSIONS")
    if permission not in ("NO_PERMISSIONS", "READ"):
        raise ServiceError(f"LINCLASS_DEFAULT_PERMISSION={permission!r}; allowed: NO_PERMISSIONS, READ")
    return {"port": number("LINCLASS_MLFLOW_PORT", 5000, 1, 65535),
            "pg_port": number("LINCLASS_PG_PORT", 5433, 1, 65535),
            "auth_cache_seconds": number("LINCLASS_AUTH_CACHE_SECONDS", 60, 0, 3600),
            "default_permission": permission}


def given_folder(name: str) -> str | None:
    """The folder (or URL) that variable `name` gives, a link in it resolved: root opens the folders it makes
    private without following a link (accounts.py), which refuses links planted in the stack's folder, not one of
    the admin's own such as LINCLASS_ARTIFACTS=/srv/artifacts -> /data/artifacts."""
    value = os.environ.get(name)
    return value if not value or "://" in value else str(Path(value).resolve())


def dvc_remote_of(folder: Path) -> str:
    return given_folder("LINCLASS_DVC_REMOTE") or str(folder / "dvc-remote")


def stack_config(folder: Path, state: dict, secret: dict[str, str]) -> dict:
    """Where the parts listen and keep their data (checked: environment()), except what `state` says of parts
    that are running (their ports)."""
    env = environment()
    pg_port = int(state.get("pg_port") or env["pg_port"])
    local_db = f"postgresql://{DB_USER}:{secret['LINCLASS_PG_PASSWORD']}@127.0.0.1:{pg_port}"
    return {
        "host": state.get("host") or os.environ.get("LINCLASS_HOST", "127.0.0.1"),
        "port": int(state.get("port") or env["port"]),
        "pg_port": pg_port,
        "default_permission": env["default_permission"],
        "auth_cache_seconds": env["auth_cache_seconds"],
        "local_postgres": "LINCLASS_BACKEND_STORE" not in os.environ,
        "backend": os.environ.get("LINCLASS_BACKEND_STORE", f"{local_db}/mlflow?{SCRAM_ONLY}"),
        "auth_store": os.environ.get("LINCLASS_AUTH_STORE", f"{local_db}/mlflow_auth?{SCRAM_ONLY}"),
        "artifacts": given_folder("LINCLASS_ARTIFACTS") or str(folder / "artifacts"),
        "dvc_remote": dvc_remote_of(folder),
        "public_url": os.environ.get("LINCLASS_PUBLIC_URL"),
    }


def tracking_url(state: dict) -> str:
    """The URL clients use: LINCLASS_PUBLIC_URL (a TLS proxy in front), else the address the server binds."""
    if state.get("public_url"):
        return state["public_url"].rstrip("/")
    return f"http://{reachable_host(state['host'])}:{state['port']}"


def local_url(state: dict) -> str:
    """The URL this machine reaches the server at, directly."""
    host = "127.0.0.1" if state["host"] in ("0.0.0.0", "::") else state["host"]
    return f"http://{host}:{state['port']}"


def up(folder: Path) -> str:
    """Start whatever part is not running (or not answering); return the line that says so (URLs, seconds it
    took, which parts were brought back, where the admin's credentials are)."""
    start = time.monotonic()
    environment()   # a bad setting stops here: nothing made yet
    account = stack_account()
    folder.mkdir(parents=True, mode=0o700, exist_ok=True)
    refuse_strangers(folder, account, skip=Path(dvc_remote_of(folder)))   # before reading or making anything there
    state = load_state(folder)
    mlflow_pid, mlflow_alive = state.get("mlflow_pid"), mlflow_alive_in(state, folder)
    postgres_alive = postgres_pid(folder) is not None
    secret = running_secrets(folder, make_as=account)
    admin, pg_password = secret["MLFLOW_AUTH_ADMIN_PASSWORD"], secret["LINCLASS_PG_PASSWORD"]
    # the parts still running keep the ports they were started with
    cfg = stack_config(folder, {k: state.get(k) for k in ("host", "port", "pg_port") if mlflow_alive or postgres_alive},
                       secret)
    url = local_url(cfg)
    if mlflow_alive:
        check_listener(folder, url, "the admin password")
        if (postgres_alive or not cfg["local_postgres"]) and mlflow_answers(url, admin, tries=1)[0]:
            raise ServiceError(f"the stack is already up ({tracking_url(cfg)}); `linclass services down` first")
    if postgres_alive and pg_account(folder).uid != account.uid:
        raise ServiceError(f"PostgreSQL of {folder} runs as {pg_account(folder).name}, not as the stack's account "
                           f"{account.name}: `linclass services down` once, then `up`")
    make_private(folder, account, team_group(), Path(cfg["dvc_remote"]) if "://" not in cfg["dvc_remote"] else None)
    if as_account(["test", "-x", str(folder)], account).returncode != 0:
        raise ServiceError(f"the stack's account {account.name} cannot enter {folder}: set LINCLASS_SERVICES_DIR "
                           "to a folder whose parents every user may pass through (o+x)")
    brought_back = []
    if cfg["local_postgres"]:
        if not postgres_alive:
            postgres_up(folder, cfg["pg_port"], pg_password)
            brought_back.append("postgres")
        check_listener(folder, f"127.0.0.1:{cfg['pg_port']}", "the database password")
        ensure_databases(cfg["pg_port"], pg_password, ["mlflow", "mlflow_auth"])
    if mlflow_alive and not mlflow_answers(url, admin)[0]:
        stop_group(mlflow_pid, uid=account.uid)   # alive but not answering even with its database back: restart it
        mlflow_alive = False
    state = {key: cfg[key] for key in ("host", "port", "pg_port", "local_postgres", "artifacts", "dvc_remote",
                                       "public_url")}
    if not mlflow_alive:
        mlflow_pid = (proc := mlflow_up(folder, account, cfg, secret)).pid
        save_state(folder, {**state, "mlflow_pid": mlflow_pid, "mlflow_started": process_start(mlflow_pid)}, account)
        try:
            wait_healthy(url, proc, 120, folder / "mlflow.log")
            check_listener(folder, url, "the admin password")   # a stand-in answers /health too
            status, _ = api(url, f"/api/2.0/mlflow/users/get?username={ADMIN}", user=ADMIN, password=admin)
            if status != 200:
                raise ServiceError(f"MLflow server at {url} rejects its own admin (HTTP {status}): "
                                   f"the user database predates {folder / 'secrets.env'}")
        except BaseException:
            stop_group(mlflow_pid, uid=account.uid)
            raise
        brought_back.append("mlflow")
    state.update(mlflow_pid=mlflow_pid, mlflow_started=process_start(mlflow_pid) if mlflow_pid else None)
    write_user_env(folder, state, ADMIN, admin, account)
    for experiment in project_experiments():   # the admin's from the start: a teammate who made one would own it
        admin_experiment(url, admin, experiment)
    admin_registered_model(url, admin, project_experiments()[0])   # and the registry's (evaluate's), likewise
    state["start_seconds"] = round(time.monotonic() - start, 2)
    save_state(folder, state, account)
    back = f" (started: {', '.join(brought_back)})" if 0 < len(brought_back) < 1 + cfg["local_postgres"] else ""
    return (f"stack up in {state['start_seconds']:.1f} s{back}: MLflow {tracking_url(state)} (artifacts "
            f"{state['artifacts']}), DVC remote {state['dvc_remote']}; credentials: source "
            f"{user_env_file(folder, ADMIN)}")


def down(folder: Path) -> None:
    state = load_state(folder)
    if mlflow_alive_in(state, folder):
        stop_group(state.get("mlflow_pid"), uid=folder.stat().st_uid)
    if state.get("local_postgres", True):
        postgres_down(folder)
    if state:
        state["mlflow_pid"] = state["mlflow_started"] = None
        save_state(folder, state, stack_account())


def rss_mib(pid: int) -> float:
    """The memory of process `pid` and its children (RSS, MiB; 0 when it is gone)."""
    try:
        process = psutil.Process(pid)
        return sum(p.memory_info().rss for p in (process, *process.children(recursive=True))) / 2**20
    except psutil.Error:
        return 0.0


def status(folder: Path) -> tuple[list[str], bool]:
    """What `services status` prints: which parts run and answer (PostgreSQL's process and a real query on MLflow's
    database, MLflow's health and an admin's request) and their memory (RSS of the processes and their children,
    MiB); and whether every part does."""
    state = load_state(folder)
    if not state:
        return ["postgres: down", "mlflow:   down", "dvc remote: None"], False
    secret = running_secrets(folder)
    cfg = stack_config(folder, state, secret)
    lines, answering = [], True
    if state.get("local_postgres", True):
        pg = postgres_pid(folder)
        lines.append("postgres: " + (f"up, pid {pg}, {round(rss_mib(pg), 1)} MiB" if pg else "down"))
        answering = pg is not None
    if state.get("local_postgres", True) or "LINCLASS_BACKEND_STORE" in os.environ:
        check_listener(folder, cfg["backend"], "the database password")
        ok, detail = database_answers(cfg["backend"])
        lines.append("database: " + (f"answers ({detail})" if ok else f"not answering: {detail}"))
        answering = answering and ok
    healthy = False
    if mlflow_alive_in(state, folder):
        pid, url = state["mlflow_pid"], local_url(state)
        check_listener(folder, url, "the admin password")
        try:
            requests.get(url + "/health", timeout=3).raise_for_status()
            healthy, why = mlflow_answers(url, secret["MLFLOW_AUTH_ADMIN_PASSWORD"], tries=1)
        except requests.RequestException as exc:
            why = str(exc)[:200]
        lines.append(f"mlflow:   up at {tracking_url(state)}, pid {pid}, {round(rss_mib(pid), 1)} MiB" if healthy
                     else f"mlflow:   not answering at {tracking_url(state)} ({why}), pid {pid}")
    else:
        lines.append("mlflow:   down")
    return [*lines, f"dvc remote: {state.get('dvc_remote')}"], answering and healthy


def user_env_file(folder: Path, name: str) -> Path:
    return folder / "users" / f"{name}.env"


def write_user_env(folder: Path, state: dict, name: str, password: str, account: Account) -> Path:
    path = user_env_file(folder, name)
    private_dir(path.parent, account)
    values = {"MLFLOW_TRACKING_URI": tracking_url(state), "MLFLOW_TRACKING_USERNAME": name,
              "MLFLOW_TRACKING_PASSWORD": password}
    write_private(path, "".join(f"export {key}={shlex.quote(value)}\n" for key, value in values.items()), account)
    return path


def add_user(folder: Path, name: str, grants: Sequence[tuple[str, str]] = ()) -> tuple[Path, bool]:
    """Create user `name` with a generated password (in users/NAME.env, 0600) and grant experiment permissions:
    (the file, True). For a user who exists already, only the grants (an experiment a teammate made after their
    account, such as linclass-alice, can be granted to bob only then): (the file, False), password unchanged."""
    if not USER_NAME.fullmatch(name):   # it names a file, and goes into a file that people `source`
        raise ServiceError(f"user name {name!r} is not allowed: letters, digits, '.', '_' or '-' (at most 64), "
                           "starting with a letter or digit")
    state = load_state(folder)
    if not mlflow_alive_in(state, folder):
        raise ServiceError("the stack is not up: `linclass services up` first")
    url, admin = local_url(state), running_secrets(folder)["MLFLOW_AUTH_ADMIN_PASSWORD"]
    check_listener(folder, url, "the admin password")
    for experiment, _ in grants:   # before the user is created: a mistyped experiment leaves nothing behind
        check_grantable(url, admin, experiment)
    private_dir(user_env_file(folder, name).parent, stack_account())   # a link there: refused before too
    path, exists = user_env_file(folder, name), api(url, f"/api/2.0/mlflow/users/get?username={quote(name)}",
                                                       user=ADMIN, password=admin)[0] == 200
    if exists and not grants:
        raise ServiceError(f"user {name!r} exists already (their variables: {path}); "
                           f"to grant more: make user-add NAME={name} GRANT=EXPERIMENT=READ (or EDIT, MANAGE)")
    if not exists:
        password = secrets.token_urlsafe(18)
        admin_api(url, admin, "/api/2.0/mlflow/users/create", f"cannot create user {name!r}",
                  {"username": name, "password": password})
        path = write_user_env(folder, state, name, password, stack_account())
    for experiment, permission in with_studies(grants):
        grant(url, admin, name, experiment, permission)
    return path, not exists


def project_experiments(root: Path | None = None) -> list[str]:
    """The MLflow experiments the project's pipeline logs to (params.yaml's tracking.experiment, else the default,
    and its studies experiment): a grant may name them before the first run has created them."""
    import yaml

    from linclass.settings import Tracking

    path = (root or Path.cwd()) / "params.yaml"
    experiment = Tracking().experiment
    with contextlib.suppress(OSError, yaml.YAMLError, AttributeError):
        experiment = (yaml.safe_load(path.read_text()).get("tracking") or {}).get("experiment") or experiment
    return [experiment, experiment + "-studies"]


def experiment_names(url: str, admin_password: str) -> list[str]:
    """The names of the server's active experiments."""
    names, token = [], None
    while True:
        body = admin_api(url, admin_password, "/api/2.0/mlflow/experiments/search", "cannot list the experiments",
                         {"max_results": 1000, **({"page_token": token} if token else {})})
        names += [e["name"] for e in body.get("experiments") or []]
        if not (token := body.get("next_page_token")):
            return names


def check_grantable(url: str, admin_password: str, experiment: str) -> None:
    """ServiceError (one line: the experiments there are, a close one) unless `experiment` exists on the server
    or is one of the project's own (project_experiments), which `grant` creates ahead of the pipeline's first run."""
    from linclass.settings import closest

    names, own = experiment_names(url, admin_password), project_experiments()
    if experiment in names or experiment in own:
        return
    close = closest(experiment, [*names, *own])
    hint = f"did you mean {close!r}? " if close else ""
    shown = ", ".join(repr(n) for n in sorted(names)[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    raise ServiceError(f"--grant: no experiment {experiment!r} on the server; {hint}it has {shown or 'none'}; "
                       f"the project's own ({', '.join(own)}) may be granted before its first run creates it")


def admin_experiment(url: str, admin_password: str, experiment: str) -> str:
    """The id of `experiment`, created by the admin when the server has none of that name."""
    code, body = api(url, f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={quote(experiment)}",
                     user=ADMIN, password=admin_password)
    experiment_id = body.get("experiment", {}).get("experiment_id")
    if code == 404:
        code, body = api(url, "/api/2.0/mlflow/experiments/create", user=ADMIN, password=admin_password,
                         body={"name": experiment})
        experiment_id = body.get("experiment_id")
    if code != 200 or not experiment_id:
        raise ServiceError(f"cannot find or create experiment {experiment!r}: HTTP {code}")
    return experiment_id


def admin_registered_model(url: str, admin_password: str, name: str) -> None:
    """The registered model `name` (the project's: evaluate registers its models in the one named like its training
    experiment), created by the admin when there is none: a teammate who made it first would MANAGE it, and read every
    model registered there."""
    code, body = api(url, "/api/2.0/mlflow/registered-models/create", user=ADMIN, password=admin_password,
                     body={"name": name})
    if code != 200 and body.get("error_code") != "RESOURCE_ALREADY_EXISTS":
        raise ServiceError(f"cannot create registered model {name!r}: HTTP {code} {body.get('message', body)}")


def with_studies(grants: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The grants, each one on the project's training experiment repeated on its studies experiment (the study
    and report runs of the same pipeline), unless the studies experiment has a grant of its own."""
    training, studies = project_experiments()
    named = {experiment for experiment, _ in grants}
    return [*grants, *((studies, permission) for experiment, permission in grants
                       if experiment == training and studies not in named)]


def grant(url: str, admin_password: str, user: str, experiment: str, permission: str) -> None:
    if permission not in PERMISSIONS:
        raise ServiceError(f"permission {permission!r} is not one of {', '.join(PERMISSIONS)}")
    if experiment not in project_experiments():
        check_grantable(url, admin_password, experiment)   # says why, one line
    admin_api(url, admin_password, "/api/3.0/mlflow/users/permissions/grant",
              f"cannot grant {permission} on {experiment!r} to {user!r}",
              {"username": user, "resource_type": "experiment",
               "resource_id": admin_experiment(url, admin_password, experiment), "permission": permission})
    if experiment == project_experiments()[0]:   # its registered model goes with it (evaluate registers there)
        admin_registered_model(url, admin_password, experiment)
        admin_api(url, admin_password, "/api/3.0/mlflow/users/permissions/grant",
                  f"cannot grant {permission} on the registered model {experiment!r} to {user!r}",
                  {"username": user, "resource_type": "registered_model", "resource_id": experiment,
                   "permission": permission})


def env_lines(folder: Path, user: str) -> list[str]:
    """Shell lines pointing a clone at the stack as `user`."""
    path, state = user_env_file(folder, user), load_state(folder)
    if not path.exists():
        raise ServiceError(f"no credentials for user {user!r} in {path.parent}: "
                           + ("`linclass services add-user NAME` (make user-add NAME=...) makes them"
                              if state else "the stack is not set up: `linclass services up` "
                              "(make services-up) first"))
    remote = state.get("dvc_remote")
    return [f". {path}", *([f"# DVC remote (members of the team's group): dvc remote add --default --force team "
                            f"{remote} && dvc remote modify team shared group && dvc remote modify team verify true"]
                           if remote else [])]


def parse_grants(items: list[str]) -> list[tuple[str, str]]:
    grants = []
    for item in items:
        experiment, sep, permission = item.rpartition("=")
        if not sep or not experiment:
            raise ServiceError(f"--grant {item!r}: expected EXPERIMENT=PERMISSION")
        if permission not in PERMISSIONS:   # checked here, before the user is created (not half-done)
            raise ServiceError(f"--grant {item!r}: permission {permission!r} is not one of {', '.join(PERMISSIONS)}")
        grants.append((experiment, permission))
    return grants
