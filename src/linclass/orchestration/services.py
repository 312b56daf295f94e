"""The team stack on one machine: PostgreSQL, the MLflow tracking server with basic auth, a DVC remote.

    python -m linclass.orchestration.services up | down | status | add-user NAME | env [--user NAME]

Everything lives in one git-ignored folder, <project>/.services (LINCLASS_SERVICES_DIR moves it):
    secrets.env      0600  PostgreSQL password, Flask secret key, admin password: generated once, never printed
    auth.ini         0600  MLflow's basic-auth settings (its user database is on the same PostgreSQL)
    postgres/              the database cluster, owned by the unprivileged user PostgreSQL runs as
    artifacts/             the artifact store that the server serves to clients (--artifacts-destination)
    dvc-remote/            the shared DVC remote (a folder)
    users/NAME.env   0600  a user's MLFLOW_TRACKING_* variables, to `source`
    state.json, postgres.log, mlflow.log

Settings (environment variables, read by `up`):
    LINCLASS_HOST (127.0.0.1)      the address the server listens on; 0.0.0.0 for the LAN, with
    LINCLASS_ALLOWED_HOSTS         the names clients use for it (MLflow's --allowed-hosts), e.g. team-box:5000
    LINCLASS_MLFLOW_PORT (5000)    LINCLASS_PG_PORT (5433)
    LINCLASS_BACKEND_STORE         a postgresql://user:password@host/db of a managed PostgreSQL: no local one
    LINCLASS_AUTH_STORE            the same for the user database (default: the backend store's server, db mlflow_auth)
    LINCLASS_ARTIFACTS             a folder or s3://bucket/prefix (AWS_* variables, MLFLOW_S3_ENDPOINT_URL)
    LINCLASS_DEFAULT_PERMISSION    what a user may do on others' experiments: NO_PERMISSIONS (default) or READ
    LINCLASS_AUTH_CACHE_SECONDS    how long the server trusts a password it has checked (60; 0: check every
                                   request, each check is a deliberately slow scrypt hash of ~0.1 s)
    LINCLASS_PG_USER               the system user PostgreSQL runs as when started by root (default: postgres)
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import pwd
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

PG_BIN = Path(os.environ.get("LINCLASS_PG_BIN", "/usr/lib/postgresql/15/bin"))
DB_USER = "linclass"
ADMIN = "admin"
PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")


class ServiceError(RuntimeError):
    """A part of the stack cannot start or answer; the message is one line naming it."""


# ---- where things are ----

def services_dir(root: str | Path | None = None) -> Path:
    folder = os.environ.get("LINCLASS_SERVICES_DIR")
    return Path(folder).resolve() if folder else Path(root or os.getcwd()).resolve() / ".services"


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.removeprefix("export ").partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip().strip("'")
    return values


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by its owner only (created 0600, never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def secrets_of(folder: Path) -> dict[str, str]:
    """The stack's secrets, generated on first use into secrets.env (0600)."""
    path = folder / "secrets.env"
    if not path.exists():
        write_private(path, "".join(f"{k}={secrets.token_urlsafe(24)}\n" for k in (
            "LINCLASS_PG_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD")))
    return read_env_file(path)


def load_state(folder: Path) -> dict:
    path = folder / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_state(folder: Path, state: dict) -> None:
    write_private(folder / "state.json", json.dumps(state, indent=2) + "\n")


# ---- PostgreSQL ----

def pg_account() -> pwd.struct_passwd:
    """Who PostgreSQL runs as: this user, or (as root, which PostgreSQL refuses) an unprivileged one."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    name = os.environ.get("LINCLASS_PG_USER", "postgres")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                       check=True, capture_output=True)
        return pwd.getpwnam(name)


def _as_pg(cmd: list[str], account, **kw) -> subprocess.CompletedProcess:
    extra = {} if os.geteuid() != 0 else {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    env = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8", "HOME": "/tmp", **kw.pop("env", {})}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=kw.pop("timeout", 120),
                          **extra, **kw)


def _check(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ServiceError(f"{what} failed: {last[0]}")


def postgres_up(folder: Path, port: int, password: str) -> None:
    """initdb once (scram-sha-256, a password for DB_USER), then pg_ctl start on 127.0.0.1:port."""
    if not (PG_BIN / "pg_ctl").exists():
        raise ServiceError(f"PostgreSQL 15 is not installed ({PG_BIN}/pg_ctl missing): apt-get install postgresql-15")
    account = pg_account()
    data, log = folder / "postgres", folder / "postgres.log"
    for path in (folder, *folder.parents):
        if os.geteuid() == 0 and not path.stat().st_mode & 0o001:
            raise ServiceError(f"PostgreSQL runs as user {account.pw_name}, who cannot enter {path}; "
                               "set LINCLASS_SERVICES_DIR to a folder under a world-traversable path")
    if not (data / "PG_VERSION").exists():
        data.mkdir(mode=0o700, exist_ok=True)
        pwfile = folder / ".pgpass.tmp"
        write_private(pwfile, password + "\n")
        try:
            if os.geteuid() == 0:
                os.chown(data, account.pw_uid, account.pw_gid)
                os.chown(pwfile, account.pw_uid, account.pw_gid)
            _check(_as_pg([str(PG_BIN / "initdb"), "-D", str(data), "-U", DB_USER, "--auth=scram-sha-256",
                           f"--pwfile={pwfile}", "-E", "UTF8", "--no-instructions"], account), "initdb")
        finally:
            pwfile.unlink(missing_ok=True)
    log.touch()
    if os.geteuid() == 0:
        os.chown(log, account.pw_uid, account.pw_gid)
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
    _check(_as_pg([str(PG_BIN / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(data), "-l", str(log),
                   "-o", options], account), f"PostgreSQL start on port {port} (see {log})")


def postgres_running(folder: Path) -> bool:
    data = folder / "postgres"
    if not (data / "PG_VERSION").exists():
        return False
    return _as_pg([str(PG_BIN / "pg_ctl"), "status", "-D", str(data)], pg_account()).returncode == 0


def postgres_down(folder: Path) -> None:
    if postgres_running(folder):
        _check(_as_pg([str(PG_BIN / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(folder / "postgres")],
                      pg_account()), "PostgreSQL stop")


def ensure_databases(port: int, password: str, names: list[str]) -> None:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=port, user=DB_USER, password=password, dbname="postgres",
                            connect_timeout=10)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for name in names:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


# ---- the MLflow server ----

def api(url: str, path: str, *, user: str | None = None, password: str | None = None,
        body: dict | None = None, method: str | None = None, timeout: float = 10) -> tuple[int, dict]:
    """One JSON request to the server: (HTTP status, decoded body or {})."""
    request = urllib.request.Request(url.rstrip("/") + path, method=method or ("POST" if body is not None else "GET"),
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as exc:
        text, status = exc.read().decode(errors="replace"), exc.code
    try:
        return status, json.loads(text) if text else {}
    except json.JSONDecodeError:
        return status, {"text": text[:200]}


def wait_healthy(url: str, proc: subprocess.Popen | None, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ServiceError(f"MLflow server exited with {proc.returncode}: {tail[0]} (see {log})")
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


def mlflow_up(folder: Path, host: str, port: int, backend: str, auth_store: str, artifacts: str,
              secret: dict[str, str]) -> subprocess.Popen:
    permission = os.environ.get("LINCLASS_DEFAULT_PERMISSION", "NO_PERMISSIONS")
    if permission not in ("NO_PERMISSIONS", "READ"):
        raise ServiceError(f"LINCLASS_DEFAULT_PERMISSION={permission!r}; allowed: NO_PERMISSIONS, READ")
    cache = os.environ.get("LINCLASS_AUTH_CACHE_SECONDS", "60")
    if not cache.isdigit() or int(cache) > 3600:
        raise ServiceError(f"LINCLASS_AUTH_CACHE_SECONDS={cache!r}; allowed: a whole number of seconds, 0..3600")
    write_private(folder / "auth.ini", auth_ini(auth_store, permission, int(cache)))
    if "://" not in artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
    # Secrets and database URLs travel in the environment, not argv (which `ps` shows to every user).
    env = {**os.environ,
           "MLFLOW_BACKEND_STORE_URI": backend,
           "MLFLOW_AUTH_CONFIG_PATH": str(folder / "auth.ini"),
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secret["MLFLOW_FLASK_SERVER_SECRET_KEY"],
           "MLFLOW_AUTH_ADMIN_PASSWORD": secret["MLFLOW_AUTH_ADMIN_PASSWORD"],
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}   # the GenAI job runner: 7 more processes, unused
    env = {k: v for k, v in env.items() if not k.startswith("MLFLOW_TRACKING_")}
    mlflow = Path(sys.executable).with_name("mlflow")
    log = open(folder / "mlflow.log", "ab")
    cmd = [str(mlflow), "server", "--app-name", "basic-auth", "--host", host, "--port", str(port),
           "--workers", "1", "--serve-artifacts", "--artifacts-destination", artifacts]
    if os.environ.get("LINCLASS_ALLOWED_HOSTS"):   # MLflow answers only Host: localhost otherwise
        cmd += ["--allowed-hosts", os.environ["LINCLASS_ALLOWED_HOSTS"]]
    return subprocess.Popen(cmd, env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pid: int | None, timeout: float = 20) -> None:
    """SIGTERM to the process group led by `pid`, SIGKILL after `timeout`."""
    if not process_alive(pid):
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:   # not our child: poll
                if not process_alive(pid):
                    return
            time.sleep(0.1)


# ---- the commands ----

def settings(folder: Path) -> dict:
    secret = secrets_of(folder)
    pg_port = int(os.environ.get("LINCLASS_PG_PORT", "5433"))
    local_db = f"postgresql://{DB_USER}:{secret['LINCLASS_PG_PASSWORD']}@127.0.0.1:{pg_port}"
    return {
        "host": os.environ.get("LINCLASS_HOST", "127.0.0.1"),
        "port": int(os.environ.get("LINCLASS_MLFLOW_PORT", "5000")),
        "pg_port": pg_port,
        "local_postgres": "LINCLASS_BACKEND_STORE" not in os.environ,
        "backend": os.environ.get("LINCLASS_BACKEND_STORE", f"{local_db}/mlflow"),
        "auth_store": os.environ.get("LINCLASS_AUTH_STORE", f"{local_db}/mlflow_auth"),
        "artifacts": os.environ.get("LINCLASS_ARTIFACTS", str(folder / "artifacts")),
        "dvc_remote": os.environ.get("LINCLASS_DVC_REMOTE", str(folder / "dvc-remote")),
    }


def tracking_url(state: dict) -> str:
    host = state["host"] if state["host"] not in ("0.0.0.0", "::") else socket.gethostname()
    return f"http://{host}:{state['port']}"


def up(folder: Path) -> dict:
    """Start whatever part is not running; return the state (URLs, pids, seconds it took)."""
    start = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o711)   # others may enter (PostgreSQL's own user), not list
    state = load_state(folder)
    if state and process_alive(state.get("mlflow_pid")):
        raise ServiceError(f"the stack is already up ({tracking_url(state)}); "
                           "`python -m linclass.orchestration.services down` first")
    cfg = settings(folder)
    secret = secrets_of(folder)
    if cfg["local_postgres"]:
        if not postgres_running(folder):
            postgres_up(folder, cfg["pg_port"], secret["LINCLASS_PG_PASSWORD"])
        ensure_databases(cfg["pg_port"], secret["LINCLASS_PG_PASSWORD"], ["mlflow", "mlflow_auth"])
    if "://" not in cfg["dvc_remote"]:
        Path(cfg["dvc_remote"]).mkdir(parents=True, exist_ok=True)
    proc = mlflow_up(folder, cfg["host"], cfg["port"], cfg["backend"], cfg["auth_store"], cfg["artifacts"], secret)
    state = {key: cfg[key] for key in ("host", "port", "pg_port", "local_postgres", "artifacts", "dvc_remote")}
    state["mlflow_pid"] = proc.pid
    save_state(folder, state)
    url = f"http://127.0.0.1:{cfg['port']}" if cfg["host"] in ("0.0.0.0", "::") else tracking_url(state)
    try:
        wait_healthy(url, proc, 120, folder / "mlflow.log")
        status, _ = api(url, f"/api/2.0/mlflow/users/get?username={ADMIN}", user=ADMIN,
                        password=secret["MLFLOW_AUTH_ADMIN_PASSWORD"])
        if status != 200:
            raise ServiceError(f"MLflow server at {url} rejects its own admin (HTTP {status}): "
                               f"the user database predates {folder / 'secrets.env'}")
    except BaseException:
        stop_group(proc.pid)
        raise
    write_user_env(folder, state, ADMIN, secret["MLFLOW_AUTH_ADMIN_PASSWORD"])
    state["start_seconds"] = round(time.monotonic() - start, 2)
    save_state(folder, state)
    return state


def down(folder: Path) -> None:
    state = load_state(folder)
    stop_group(state.get("mlflow_pid"))
    if state.get("local_postgres", True):
        postgres_down(folder)
    if state:
        state["mlflow_pid"] = None
        save_state(folder, state)


def rss_mib(pids: list[int]) -> float:
    import psutil

    total = 0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            total += sum(p.memory_info().rss for p in (process, *process.children(recursive=True)))
        except psutil.Error:
            pass
    return total / 2**20


def postmaster_pid(folder: Path) -> int | None:
    pidfile = folder / "postgres" / "postmaster.pid"
    try:
        return int(pidfile.read_text().split()[0]) if os.geteuid() == 0 or os.access(pidfile, os.R_OK) else None
    except (OSError, ValueError, IndexError):
        return None


def status(folder: Path) -> dict:
    """Which parts answer, and their memory (RSS of the processes and their children, MiB)."""
    state = load_state(folder)
    report = {"postgres": None, "mlflow": None, "dvc_remote": state.get("dvc_remote")}
    if state.get("local_postgres", True):
        pg = postmaster_pid(folder) if postgres_running(folder) else None
        report["postgres"] = {"pid": pg, "rss_mib": round(rss_mib([pg]), 1)} if pg else None
    pid = state.get("mlflow_pid")
    if process_alive(pid):
        url = tracking_url(state)
        try:
            with urllib.request.urlopen(url + "/health", timeout=3):
                healthy = True
        except OSError:
            healthy = False
        report["mlflow"] = {"pid": pid, "url": url, "healthy": healthy, "rss_mib": round(rss_mib([pid]), 1)}
    return report


def user_env_file(folder: Path, name: str) -> Path:
    return folder / "users" / f"{name}.env"


def write_user_env(folder: Path, state: dict, name: str, password: str) -> Path:
    path = user_env_file(folder, name)
    write_private(path, f"export MLFLOW_TRACKING_URI={tracking_url(state)}\n"
                        f"export MLFLOW_TRACKING_USERNAME={name}\n"
                        f"export MLFLOW_TRACKING_PASSWORD='{password}'\n")
    return path


def add_user(folder: Path, name: str, grants: list[tuple[str, str]] = ()) -> Path:
    """Create user `name` with a generated password (in users/NAME.env, 0600) and grant experiment permissions."""
    state = load_state(folder)
    if not state or not process_alive(state.get("mlflow_pid")):
        raise ServiceError("the stack is not up: `python -m linclass.orchestration.services up` first")
    url, admin = tracking_url(state), secrets_of(folder)["MLFLOW_AUTH_ADMIN_PASSWORD"]
    password = secrets.token_urlsafe(18)
    code, body = api(url, "/api/2.0/mlflow/users/create", user=ADMIN, password=admin,
                     body={"username": name, "password": password})
    if code != 200:
        raise ServiceError(f"cannot create user {name!r}: HTTP {code} {body.get('message', body)}")
    path = write_user_env(folder, state, name, password)
    for experiment, permission in grants:
        grant(url, admin, name, experiment, permission)
    return path


def grant(url: str, admin_password: str, user: str, experiment: str, permission: str) -> None:
    if permission not in PERMISSIONS:
        raise ServiceError(f"permission {permission!r} is not one of {', '.join(PERMISSIONS)}")
    code, body = api(url, "/api/2.0/mlflow/experiments/get-by-name?"
                     + urllib.parse.urlencode({"experiment_name": experiment}), user=ADMIN, password=admin_password)
    if code == 404:
        code, body = api(url, "/api/2.0/mlflow/experiments/create", user=ADMIN, password=admin_password,
                         body={"name": experiment})
        experiment_id = body.get("experiment_id")
    else:
        experiment_id = body.get("experiment", {}).get("experiment_id")
    if code != 200 or not experiment_id:
        raise ServiceError(f"cannot find or create experiment {experiment!r}: HTTP {code}")
    code, body = api(url, "/api/3.0/mlflow/users/permissions/grant", user=ADMIN, password=admin_password,
                     body={"username": user, "resource_type": "experiment", "resource_id": experiment_id,
                           "permission": permission})
    if code != 200:
        raise ServiceError(f"cannot grant {permission} on {experiment!r} to {user!r}: HTTP {code} "
                           f"{body.get('message', body)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m linclass.orchestration.services",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start PostgreSQL and the MLflow server (generates the secrets once)")
    sub.add_parser("down", help="stop them (data and users are kept)")
    sub.add_parser("status", help="which parts run, their memory")
    add = sub.add_parser("add-user", help="create a user; its variables go to .services/users/NAME.env")
    add.add_argument("name")
    add.add_argument("--grant", action="append", default=[], metavar="EXPERIMENT=PERMISSION",
                     help=f"give the user a permission ({', '.join(PERMISSIONS)}) on an experiment")
    env = sub.add_parser("env", help="shell lines pointing a clone at the stack: eval \"$(... env)\"")
    env.add_argument("--user", default=ADMIN)
    args = parser.parse_args(argv)
    folder = services_dir()
    try:
        if args.command == "up":
            state = up(folder)
            print(f"stack up in {state['start_seconds']:.1f} s: MLflow {tracking_url(state)} "
                  f"(artifacts {state['artifacts']}), DVC remote {state['dvc_remote']}; "
                  f"credentials: source {user_env_file(folder, ADMIN)}")
        elif args.command == "down":
            down(folder)
            print("stack down (data kept in " + str(folder) + ")")
        elif args.command == "status":
            report = status(folder)
            pg, ml = report["postgres"], report["mlflow"]
            print("postgres: " + (f"up, pid {pg['pid']}, {pg['rss_mib']} MiB" if pg else "down"))
            print("mlflow:   " + (f"{'up' if ml['healthy'] else 'not answering'} at {ml['url']}, "
                                  f"pid {ml['pid']}, {ml['rss_mib']} MiB" if ml else "down"))
            print(f"dvc remote: {report['dvc_remote']}")
            return 0 if ml and ml["healthy"] else 3
        elif args.command == "add-user":
            grants = []
            for item in args.grant:
                experiment, sep, permission = item.rpartition("=")
                if not sep:
                    raise ServiceError(f"--grant {item!r}: expected EXPERIMENT=PERMISSION")
                grants.append((experiment, permission))
            path = add_user(folder, args.name, grants)
            print(f"user {args.name} created; give them {path} (source it)")
        elif args.command == "env":
            path = user_env_file(folder, args.user)
            if not path.exists():
                raise ServiceError(f"no credentials for user {args.user!r} in {path.parent}")
            state = load_state(folder)
            print(f". {path}")
            if state.get("dvc_remote"):
                print(f"# DVC remote: dvc remote add --default --force team {state['dvc_remote']}")
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
