"""Shared fixtures: the real config, shrunk; a copy of the project to run the real pipeline in."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR = ROOT.parent / "shared" / "data" / "cifar-10-python.tar.gz"
SHARED_CIFAR_MD5 = "2caa7800b270f2536e4e89f2ffa0be3f"
BIN = Path(sys.executable).parent
PROJECT_FILES = (
    "conf",
    "pipeline",
    "src",
    "hydra_plugins",
    "sweeps",
    "dvc.yaml",
    "params.yaml",
    ".dvcignore",
    ".gitignore",
    ".dvc/config",
    ".dvc/.gitignore",
)

# A few seconds per stage on the synthetic archive.
SMALL = (
    "preprocess.val_size=100",
    "train.epochs=3",
    "train.batch_size=50",
    "loss.svm.learning_rate=0.01",
    "loss.softmax.learning_rate=0.01",
    "studies.hard_cases.n=300",
    "studies.hard_cases.epochs=50",
    "studies.zero_hinge_subset=20",
    "studies.regularization_path.strengths=[0.001,0.1]",   # 12 points of the path, not 36
    "grid.features=[]",  # pixels only: tests/test_features_pipeline.py runs the features axis
)


# `make test` runs three workers on two cores (the tests mostly wait for servers and subprocesses), each module
# whole on one (pytest -n 3 --dist loadfile --no-loadscope-reorder: without that option xdist hands out the modules
# with the most tests first): the modules that take longest start first (as measured with --durations), so that the
# last one to finish is a short one; the rest follow in their usual order.
LONGEST_FIRST = ("test_docs", "test_stack", "test_ray", "test_parallel", "test_sweep", "test_faults", "test_pipeline",
                 "test_stack_attacks", "test_team", "test_kill_resume", "test_features_pipeline",
                 "test_reproducible", "test_ui_browser", "test_warm", "test_remote", "test_config", "test_cli",
                 "test_store_faults", "test_mlflow_model", "test_injection", "test_grid_after_run")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))


def env_for_pipeline(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", DVC_NO_ANALYTICS="1",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    env.update(extra)
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at `host` (now)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(cmd: list[str], url: str, log: Path, timeout: float = 90, **popen):
    """Run a server `cmd` in its own process group, logging to `log`; yield once `url`/health answers;
    stop the whole group (make, mlflow, its workers) at the end."""
    from linclass.orchestration.services import ServiceError, stop_group, wait_healthy

    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **popen)
        try:
            try:
                wait_healthy(url, proc, timeout, log)
            except ServiceError as exc:
                raise AssertionError(f"{exc}\n{log.read_text(errors='replace')[-3000:]}") from None
            yield proc
        finally:
            stop_group(proc.pid)


def mlflow_server_cmd(folder: Path, port: int) -> list[str]:
    """A plain MLflow server (sqlite store and artifacts under `folder`) on 127.0.0.1:`port`."""
    return [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{folder}/mlflow.db",
            "--artifacts-destination", str(folder / "artifacts"), "--serve-artifacts",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]


MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


class Project:
    """A git + DVC copy of this project in a temporary folder, its params composed with overrides."""

    def __init__(self, path: Path, env: dict):
        self.path, self.env = path, env

    def run(self, *cmd: str, check: bool = True, timeout: float = 900, **kw) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(cmd), cwd=self.path, env=kw.pop("env", self.env), capture_output=True,
                              text=True, timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def dvc(self, *args: str, **kw) -> subprocess.CompletedProcess:
        """`dvc ARGS` in the copy; started from this worker's warm interpreter (shared_warm()) where it serves the
        copy and the command runs no stage, or the env sends the stages there anyway (warm_stages): about 0.6 s of
        CPU less a command. Whatever runs stages without a warm interpreter in the env stays a fresh `dvc`."""
        env = kw.pop("env", self.env)
        if "LINCLASS_WARM_SOCKET" in env or args[:2] in RUNS_NO_STAGE or args[:1] in RUNS_NO_STAGE:
            warm = shared_warm()
            if project_code(self.path) == warm["code"]:
                return self.run(*warm["dvc"], *args, env={**warm["env"], **env}, **kw)
        return self.run(str(BIN / "dvc"), *args, env=env, **kw)

    def compose(self, *overrides: str) -> None:
        """params.yaml from conf/ with `overrides` (layered), written by what `linclass config` calls
        (linclass.config.write_params), in this process: a fresh one costs more CPU than the composition, and the
        tests compose dozens of times. The command itself: tests/test_cli.py, tests/test_docs.py (make params)."""
        from linclass.config import write_params

        write_params(self.path / "conf", self.path / "params.yaml", layered(*overrides))

    def git_commit(self, message: str = "snapshot") -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-qm", message)

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.path / 'mlflow.db'}"


def layered(*overrides: str) -> list[str]:
    """The overrides with a later one of a key replacing an earlier (SMALL, then a test's own): linclass takes
    each key once."""
    return list({override.partition("=")[0]: override for override in overrides}.values())


def make_project(dest: Path, overrides=(), env: dict | None = None) -> Project:
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, target)
    project = Project(dest, env or env_for_pipeline())
    project.run("git", "init", "-q", "-b", "main")
    project.compose(*overrides)
    project.git_commit("project copy")
    return project


# the dvc commands that run no stage, whatever the environment says (`queue start` would start workers: not here)
RUNS_NO_STAGE = {("status",), ("remote",), ("init",), ("add",), ("stage",), ("metrics",), ("push",), ("pull",),
                 ("fetch",), ("checkout",), ("params",), ("diff",), ("exp", "show"), ("exp", "list"),
                 ("exp", "remove"), ("exp", "apply"), ("exp", "push"), ("exp", "pull"), ("queue", "stop"),
                 ("queue", "logs"), ("queue", "status")}
_SHARED_WARM: dict = {}


def shared_warm() -> dict:
    """This xdist worker's warm interpreter (linclass.orchestration.warm, DVC's modules loaded too), started on
    first use, stopped at the end of the session (stop_shared_warm). It serves a folder of its own holding the
    project's code and every copy of the project this worker makes (warm.py serves a copy that holds the same code):
    one interpreter's imports (about 5 s of CPU) instead of one per pipeline that a test runs warm.
    {"env": its variables, "log": its log, "code": the code it serves, "dvc": how to run dvc through it}"""
    if not _SHARED_WARM:
        from linclass.orchestration.warm import serving

        base = Path(tempfile.mkdtemp(prefix="linclass-warm-tests-"))
        for name in ("src", "hydra_plugins", "pipeline"):
            shutil.copytree(ROOT / name, base / "root" / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        log = base / "log.txt"
        stack = contextlib.ExitStack()
        stack.callback(shutil.rmtree, base, ignore_errors=True)
        env = {**env_for_pipeline(), "OPENBLAS_NUM_THREADS": "1"}   # train.blas_threads
        warm = stack.enter_context(serving(base / "root", env, log, wait=180, idle=3600, dvc=True))
        assert Path(warm["LINCLASS_WARM_SOCKET"]).is_socket(), log.read_text()
        client = base / "root" / "src" / "linclass" / "orchestration" / "warm_client.py"
        _SHARED_WARM.update(env=warm, log=log, stack=stack, code=project_code(base / "root"),
                            dvc=[str(BIN / "python"), "-I", "-S", str(client), "-m", "dvc"])
    return _SHARED_WARM


def project_code(path: Path) -> dict | None:
    from linclass.orchestration.warm import project_code

    return project_code(path) if (path / "src" / "linclass").is_dir() else None


@pytest.fixture(scope="session", autouse=True)
def stop_shared_warm():
    yield
    if _SHARED_WARM:
        _SHARED_WARM.pop("stack").close()
        _SHARED_WARM.clear()


@contextlib.contextmanager
def warm_stages(project: Project):
    """While inside: the project's stages start from this worker's warm interpreter (shared_warm();
    linclass.orchestration.warm, what a Ray node keeps), which imported MLflow, DVC, numpy... once and forks a child
    for every stage: about 2 s of CPU less a stage, over a third of a small pipeline. `pipeline/python` uses it
    through $LINCLASS_WARM_SOCKET, set in project.env here (an env made from project.env inside carries it too) and
    yielded ({name: socket}).

    For the modules whose pipeline is the set-up of what they check (runs, outputs, lineage); `linclass repro`
    and `linclass exp` start one the same way (tests/test_docs.py runs them from a fresh shell). A fresh process
    per stage (a plain `dvc repro`) stays under test where it matters: tests/test_faults.py and
    tests/test_kill_resume.py (signals, SIGKILL of the group; its uninterrupted reference runs warm, so that their
    equal dvc.lock files also say warm and fresh stages write the same outputs), tests/test_reproducible.py (of the
    two clones run at once, one fresh, one warm); tests/test_warm.py tests the interpreter itself. A command it
    declined (it would have run fresh, unnoticed) fails the test; DVC's temporary copies (the queue's) are served
    too."""
    warm = shared_warm()
    start = warm["log"].stat().st_size
    plain = project.env
    project.env = {**plain, **warm["env"]}
    try:
        yield warm["env"]
    finally:
        project.env = plain
    # a stage it declined ran fresh, silently
    with open(warm["log"]) as log:
        log.seek(start)
        declined = [line for line in log.read().splitlines() if line.startswith("declined")]
    assert not declined, declined


def warm_log(path: Path) -> tuple[list[str], int, Path]:
    """The lines of the warm log `linclass repro` / `linclass exp` left in the project at `path`, its
    interpreter's pid and socket (from the first line)."""
    lines = (path / ".dvc" / "tmp" / "linclass-warm.log").read_text().splitlines()
    first = re.match(r"warm interpreter pid (\d+) serving \S+ on (\S+)", lines[0] if lines else "")
    assert first, f"no warm interpreter started: {lines}"
    return lines, int(first.group(1)), Path(first.group(2))


def gone(pid: int) -> bool:
    """Whether process `pid` has ended (a zombie not yet reaped counts as ended)."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def make_project_with_remotes(base: Path, overrides=()) -> Project:
    """A project at base/project whose commit is on its git remote (base/origin.git, a bare repository),
    with a folder as its default DVC remote (base/dvc-remote): what the Ray nodes clone and pull from."""
    project = make_project(base / "project", overrides)
    project.run("git", "init", "-q", "--bare", str(base / "origin.git"))
    project.run("git", "remote", "add", "origin", str(base / "origin.git"))
    project.dvc("remote", "add", "--default", "team", str(base / "dvc-remote"))
    project.git_commit("the team's DVC remote")
    project.run("git", "push", "-q", "origin", "main")
    return project


def shrink_conf(project: Project, overrides=SMALL) -> None:
    """Write `overrides` into the copy's conf/config.yaml itself (and compose, commit): what DVC composes
    on `dvc exp run` (conf/ + -S) is then small too, not only params.yaml."""
    import yaml

    path = project.path / "conf" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    for override in overrides:
        key, _, value = override.partition("=")
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    project.compose()
    project.git_commit("conf shrunk for a test")


@pytest.fixture(autouse=True)
def no_tracking_uri_from_earlier_tests(monkeypatch):
    """Each test starts without MLFLOW_TRACKING_URI: a test that exported it (mlflow.set_tracking_uri does)
    would send the next test's runs to its store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def synthetic_archive(tmp_path_factory) -> tuple[Path, str]:
    """A small learnable archive in the official CIFAR-10 python layout, and its md5."""
    from linclass.data.synthetic import make_synthetic_cifar10

    path = tmp_path_factory.mktemp("archive") / "cifar-10-python.tar.gz"
    md5 = make_synthetic_cifar10(path, n_train=600, n_test=200, seed=0)
    return path, md5


@pytest.fixture(scope="session")
def archive_server(synthetic_archive):
    """A real HTTP server on 127.0.0.1 serving the synthetic archive at /cifar-10-python.tar.gz."""
    from helpers_http import FaultyHTTPServer

    path, md5 = synthetic_archive
    with FaultyHTTPServer() as server:
        server.serve("/cifar-10-python.tar.gz", path.read_bytes())
        yield server.url("/cifar-10-python.tar.gz"), md5


@pytest.fixture
def small_project(tmp_path, archive_server) -> Project:
    """This project, copied, with params for the synthetic archive served over HTTP."""
    url, md5 = archive_server
    return make_project(tmp_path / "project", (f"data.url={url}", f"data.md5={md5}", *SMALL))
