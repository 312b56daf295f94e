"""What the benchmarks share: a copy of the project to run the pipeline in, its environment, free ports, and
servers started and stopped as process groups. (The scripts run as `python benchmarks/<name>.py`, so this
sibling module is on their path as it is.)
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHARED_CIFAR = ROOT.parent / "shared" / "data" / "cifar-10-python.tar.gz"
SHARED_CIFAR_MD5 = "2caa7800b270f2536e4e89f2ffa0be3f"


def environment(**extra: str) -> dict:
    """This environment for the pipeline: no MLflow or DVC settings of the caller, this virtualenv first on
    PATH, a git identity for the copies' commits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", DVC_NO_ANALYTICS="1",
               GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@localhost",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@localhost")
    env.update(extra)
    return env


def run(cmd: list, cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command; on failure exit with its output's tail."""
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        sys.exit(f"error: {' '.join(map(str, cmd))} exited {proc.returncode} in {cwd}\n"
                 f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at `host` (now)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def project_files() -> list[str]:
    """The files of the project as a clone has them: git's tracked files (their working-tree content)."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [name for name in out.split("\0") if name and (ROOT / name).is_file()]


class Project:
    """A git + DVC copy of this project in a folder of its own."""

    def __init__(self, path: Path, env: dict):
        self.path, self.env = path, env

    def run(self, *cmd, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return run(list(cmd), self.path, env or self.env, check=check)

    def dvc(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(BIN / "dvc", *args, **kw)

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-qm", message)


def make_project(dest: Path, overrides=(), env: dict | None = None) -> Project:
    """This project copied to `dest` (git init, params.yaml composed with `overrides`, one commit)."""
    for name in project_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    project = Project(dest, env or environment())
    project.run("git", "init", "-q", "-b", "main")
    latest = {override.partition("=")[0]: override for override in overrides}   # a later one of a key wins
    project.run(BIN / "python", "-m", "linclass.cli", "config", *latest.values())
    project.commit("project copy")
    return project


def make_project_with_remotes(base: Path, overrides=()) -> Project:
    """A project at base/project whose commit is on its git remote (base/origin.git, a bare repository), with a
    folder as its default DVC remote (base/dvc-remote): what Ray nodes fetch and pull from."""
    project = make_project(base / "project", overrides)
    project.run("git", "init", "-q", "--bare", base / "origin.git")
    project.run("git", "remote", "add", "origin", base / "origin.git")
    project.dvc("remote", "add", "--default", "team", str(base / "dvc-remote"))
    project.commit("the team's DVC remote")
    project.run("git", "push", "-q", "origin", "main")
    return project


@contextlib.contextmanager
def serving(cmd: list[str], url: str, log: Path, env: dict | None = None, timeout: float = 90):
    """Run a server in a process group of its own, output to `log`; yield once `url`/health answers; stop the
    whole group at the end."""
    from linclass.orchestration.services import ServiceError, stop_group, wait_healthy

    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        try:
            wait_healthy(url, proc, timeout, log)
        except ServiceError as exc:
            sys.exit(f"error: {exc}\n{log.read_text(errors='replace')[-3000:]}")
        yield proc
    finally:
        stop_group(proc.pid)


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path


@contextlib.contextmanager
def mlflow_server(folder: Path):
    """A plain MLflow tracking server (sqlite store and artifacts under `folder`) on a free port of 127.0.0.1;
    yields it (url, process, log)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{folder}/mlflow.db",
           "--artifacts-destination", str(folder / "artifacts"), "--serve-artifacts",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with serving(cmd, url, folder / "server.log", env=environment(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")) as proc:
        yield Server(url, proc, folder / "server.log")


def load() -> str:
    """The load averages (1, 5, 15 min) and the cores, for every figure printed."""
    return f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores"
