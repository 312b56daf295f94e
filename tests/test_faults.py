"""Faults and bad input on the real pipeline: killed training, divergence, tampered data, bad settings,
a tracking server that does not answer. Real DVC, real MLflow sqlite store, real processes and signals.

One project per module: `dvc repro preprocess` runs once; every test starts from that state (params.yaml,
dvc.lock and data/ as after the preprocess) and may write its own params.yaml. A test that runs `dvc repro`
uses a train stage that no earlier test trained successfully: DVC's run cache would restore that one
instead of running it.

Signals (dvc 3.67, measured here): `dvc repro` runs a stage's command as its child, in the same process group.
- SIGINT to the group (Ctrl-C in a terminal): dvc ignores SIGINT while a stage runs; the stage gets it,
  marks its MLflow run KILLED, exits 130, then dvc reports the stage failed and exits 255.
- SIGTERM to the group (`kill -TERM -<pgid>`, a job scheduler): dvc has no handler and dies at once (-15);
  the stage gets it too, marks its run KILLED and exits 143. The next `dvc repro` drops dvc's stale lock.
- SIGTERM to the train process only: the stage marks its run KILLED and exits 143; dvc reports it (255).
SIGKILL cannot be handled: its run stays RUNNING (nothing is half-written, thanks to the temporary output dir).
A signal that lands inside an MLflow call must not be raised there (test_a_signal_inside_an_mlflow_call...).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import BIN, SMALL, gone, layered, make_project, warm_log, warm_stages
from helpers_http import closed_port

pytestmark = pytest.mark.slow

EXPERIMENT = "linclass-cifar10"
TRAIN = (str(BIN / "python"), "pipeline/train.py", "--loss", "svm", "--regularizer", "l2")
# as dvc.yaml's command starts it: from the warm interpreter when $LINCLASS_WARM_SOCKET names one
STAGE_TRAIN = ("pipeline/python", *TRAIN[1:])


def run_train(project, *args: str, env: dict | None = None):
    """The train stage's script as DVC runs it (PYTHONPATH=src), without DVC; a fresh process unless `env` names a
    warm interpreter (then args: STAGE_TRAIN's)."""
    return project.run(*(args or TRAIN), check=False, env={**(env or project.env), "PYTHONPATH": "src"})


# --- the shared project ----------------------------------------------------------------------------

def tree_md5(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory, archive_server):
    """The project after `dvc repro preprocess`, with its MLflow store and experiment created."""
    url, md5 = archive_server
    project = make_project(
        tmp_path_factory.mktemp("faults") / "project", (f"data.url={url}", f"data.md5={md5}", *SMALL)
    )
    project.dvc("repro", "preprocess")
    project.run(str(BIN / "python"), "-m", "linclass.cli", "store",  # the store exists before anyone polls it
                env={**project.env, "PYTHONPATH": "src"})
    project.git_commit("preprocessed")
    project.saved = {name: (project.path / name).read_bytes() for name in ("params.yaml", "dvc.lock")}
    project.data_md5 = tree_md5(project.path / "data")
    return project


@pytest.fixture(scope="module")
def warm_env(preprocessed):
    """An env in which pipeline/python starts the stage scripts from a warm interpreter serving the shared project
    (conftest.warm_stages: none declined, or the module's last test fails). For the bad input the train stage
    refuses before any work, a dozen cases that would each pay a fresh interpreter's imports (2-3 s of CPU):
    the same script, its errors on the same stderr, its exit code; and for the divergence and the unreachable
    tracking server and the repro that completes a killed one (`dvc repro` itself fresh, its train stage warm, as
    `linclass repro` runs it). The pipelines that get the signals and the tampered data run fresh processes (dvc
    repro's, stages included), and so does test_unreadable_params_yaml (train.py reads params.yaml when it is
    imported)."""
    plain = preprocessed.env
    with warm_stages(preprocessed):
        warm, preprocessed.env = preprocessed.env, plain   # the other tests' processes stay fresh
        yield warm


@pytest.fixture
def project(preprocessed):
    project = preprocessed
    yield project
    for name, content in project.saved.items():
        (project.path / name).write_bytes(content)
    for name in ("models", "metrics", "reports"):
        shutil.rmtree(project.path / name, ignore_errors=True)
    if tree_md5(project.path / "data") != project.data_md5:
        project.dvc("checkout", "--force", "download", "preprocess")


def write_params(project, **settings) -> None:
    """params.yaml = the project's params with `settings` ({'train__epochs': 5} sets train.epochs) changed."""
    params = yaml.safe_load(project.saved["params.yaml"])
    for key, value in settings.items():
        *parents, last = key.split("__")
        node = params
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    (project.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def mlflow_client(project):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(project.tracking_uri)
    return client, client.get_experiment_by_name(EXPERIMENT).experiment_id


def all_runs(project) -> dict:
    client, experiment_id = mlflow_client(project)
    return {r.info.run_id: r for r in client.search_runs([experiment_id], max_results=10_000)}


def new_runs(project, before: dict) -> list:
    return [run for run_id, run in all_runs(project).items() if run_id not in before]


def assert_no_train_output(project, name: str) -> None:
    models, metrics = project.path / "models", project.path / "metrics" / "train"
    assert not (models / name).exists(), f"models/{name} was written"
    assert not list(models.glob(f".{name}*")), f"temporary dirs left behind: {list(models.glob('.*'))}"
    assert not (metrics / f"{name}.json").exists(), f"metrics/train/{name}.json was written"
    assert not list(metrics.glob(f".{name}*")), f"temporary files left behind: {list(metrics.glob('.*'))}"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# --- killed training -------------------------------------------------------------------------------

def wait_for_training(project, proc, before: dict, log: Path, timeout: float = 120):
    """The new MLflow run, once it is RUNNING and has logged its first epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"dvc ended before training started:\n{log.read_text()[-3000:]}"
        for run in new_runs(project, before):
            if run.info.status == "RUNNING" and "train_accuracy" in run.data.metrics:
                return run
        time.sleep(0.2)
    raise AssertionError(f"training did not start within {timeout} s:\n{log.read_text()[-3000:]}")


# Runs its arguments with SIGINT at its default: a command started in the background of a shell without job
# control (nohup ... &, some CI runners) inherits SIGINT ignored, and a Ctrl-C test of it could not pass.
DEFAULT_SIGINT = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                  "os.execv(sys.argv[1], sys.argv[1:])"]
# ... and with SIGINT ignored, as such a background command starts (`linclass exp ... &` in a script).
IGNORED_SIGINT = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                  "os.execv(sys.argv[1], sys.argv[1:])"]


def stop_tree(pid: int) -> None:
    """SIGKILL to a process and everything under it (in whatever process group)."""
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        parent = psutil.Process(pid)
        for process in [*parent.children(recursive=True), parent]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


def train_process(dvc_pid: int):
    import psutil

    found = [p for p in psutil.Process(dvc_pid).children(recursive=True) if "pipeline/train.py" in p.cmdline()]
    assert len(found) == 1, found
    return found[0]


# Each case trains its own model, so that the repro after the kill really trains (not a DVC run-cache restore).
@pytest.mark.parametrize(
    "target, signum, dvc_exit, stage_says, name",
    [
        (
            "group",
            signal.SIGTERM,
            -signal.SIGTERM,
            "error: stopped (received signal SIGTERM); nothing was written",
            "svm-l2",
        ),
        ("group", signal.SIGINT, 255, "error: interrupted (SIGINT); nothing was written", "svm-l1"),
        ("train", signal.SIGTERM, 255, "error: stopped (received signal SIGTERM); nothing was written", "svm-none"),
    ],
    ids=["SIGTERM-to-group", "SIGINT-to-group", "SIGTERM-to-train"],
)
def test_killed_training_is_marked_killed_leaves_nothing_and_repro_completes(project, warm_env, tmp_path, target,
                                                                             signum, dvc_exit, stage_says, name):
    import psutil

    write_params(project, train__epochs=100_000)
    before = all_runs(project)
    log = tmp_path / "dvc.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(BIN / "dvc"), "repro", f"train@{name}"], cwd=project.path, env=project.env,
                                stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        run = wait_for_training(project, proc, before, log)
        trainer = train_process(proc.pid)
        if target == "group":
            os.killpg(proc.pid, signum)
        else:
            trainer.send_signal(signum)
        proc.wait(timeout=60)
        _, alive = psutil.wait_procs([trainer], timeout=60)
        assert not alive, "the train process outlived the signal"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = log.read_text()
    assert proc.returncode == dvc_exit, output[-3000:]
    assert stage_says in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]

    killed = all_runs(project)[run.info.run_id]
    assert killed.info.status == "KILLED"
    assert [r.info.run_id for r in new_runs(project, before)] == [run.info.run_id]
    assert_no_train_output(project, name)
    assert f"train@{name}" not in yaml.safe_load((project.path / "dvc.lock").read_text())["stages"]

    (project.path / "params.yaml").write_bytes(project.saved["params.yaml"])
    # the killed pipeline ran fresh processes; the one that completes it: a fresh dvc, its stage warm
    again = project.dvc("repro", f"train@{name}", env=warm_env)
    assert f"Running stage 'train@{name}'" in again.stdout
    assert (project.path / "models" / name / "W.npy").exists()
    assert json.loads((project.path / "metrics" / "train" / f"{name}.json").read_text())["weights_md5"]
    runs = all_runs(project)
    assert runs[run.info.run_id].info.status == "KILLED"
    assert sorted(r.info.status for r in new_runs(project, before)) == ["FINISHED", "KILLED"]
    assert json.loads(project.dvc("status", "--json", f"train@{name}").stdout) == {}


def endless_experiment(project) -> list[str]:
    """`linclass exp` overrides of one model that trains until it is stopped (the project's data, SMALL)."""
    settings = yaml.safe_load(project.saved["params.yaml"])
    return layered(f"data.url={settings['data']['url']}", f"data.md5={settings['data']['md5']}", *SMALL,
                   "grid.losses=[svm]", "grid.regularizers=[none]", "grid.features=[]", "train.epochs=100000")


# Ctrl-C in a terminal; a SIGINT to linclass alone; `kill` of linclass (SIGTERM), taken as Ctrl-C; `kill` of a
# linclass started in the background of a script (SIGINT inherited ignored: DVC ignored the SIGINT passed on, and
# linclass waited for it forever)
@pytest.mark.parametrize("target", ["group", "pid", "sigterm", "sigterm-background"])
def test_ctrl_c_during_an_experiment_leaves_the_committed_settings_one_checkout_away(project, tmp_path, target):
    """`linclass exp` waits for DVC to undo its `git add` of params.yaml and dvc.lock after Ctrl-C: with them
    left staged, the README's way back (`git checkout params.yaml`) restored the interrupted settings."""
    overrides = endless_experiment(project)
    before = all_runs(project)
    log = tmp_path / "exp.log"
    start = IGNORED_SIGINT if target == "sigterm-background" else DEFAULT_SIGINT   # else as a terminal starts it
    with open(log, "w") as out:
        proc = subprocess.Popen([*start, str(BIN / "linclass"), "exp", *overrides], cwd=project.path,
                                env=project.env, stdout=out, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    try:
        wait_for_training(project, proc, before, log)
        if target == "group":
            os.killpg(proc.pid, signal.SIGINT)   # what Ctrl-C in the terminal does
        else:
            os.kill(proc.pid, signal.SIGINT if target == "pid" else signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:   # DVC has a process group of its own: stop the whole tree, or it holds the project
            stop_tree(proc.pid)
            proc.wait()
    assert proc.returncode != 0 and "interrupted (SIGINT)" in log.read_text(), log.read_text()[-3000:]
    # the way back, said (the workspace holds the experiment's settings, and DVC removed the model it began)
    assert "the committed results come back with: git checkout params.yaml && make repro" in log.read_text(), \
        log.read_text()[-3000:]
    # the stages' warm interpreter is gone, and its socket's folder with it
    _, server, socket_path = warm_log(project.path)
    assert gone(server)
    assert not socket_path.parent.exists()
    staged = project.run("git", "diff", "--cached", "--name-only").stdout.split()
    assert staged == [], staged
    assert (project.path / "params.yaml").read_bytes() != project.saved["params.yaml"]   # the experiment's
    project.run("git", "checkout", "params.yaml")
    assert (project.path / "params.yaml").read_bytes() == project.saved["params.yaml"]


def test_a_kill_9_of_linclass_exp_leaves_its_running_dvc_holding_the_workspace_lock(project, tmp_path):
    """DVC runs in a process group of its own (linclass passes Ctrl-C on once): a `kill -9` of linclass's group
    left it running, and the workspace's lock went with linclass, so that a second pipeline could start beside it.
    DVC holds the lock too now, until it ends."""
    import psutil

    overrides = endless_experiment(project)
    before = all_runs(project)
    log = tmp_path / "exp.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(BIN / "linclass"), "exp", *overrides], cwd=project.path, env=project.env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    dvc = []
    try:
        run = wait_for_training(project, proc, before, log)
        dvc = [child for child in psutil.Process(proc.pid).children() if "exp" in child.cmdline()]
        assert len(dvc) == 1, [child.cmdline() for child in psutil.Process(proc.pid).children()]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert dvc[0].is_running()
        second = subprocess.run([str(BIN / "linclass"), "exp", "train.epochs=2"], cwd=project.path, env=project.env,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 1 and second.stderr.startswith("error: another pipeline runs in this workspace"), \
            second.stdout + second.stderr
    finally:
        for process in dvc:   # as Ctrl-C would have: DVC stops its stage and undoes its git add
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)
        psutil.wait_procs(dvc, timeout=60)
        stop_tree(proc.pid)
        with contextlib.suppress(AssertionError, ProcessLookupError):
            os.kill(warm_log(project.path)[1], signal.SIGTERM)   # its warm interpreter, orphaned too
    assert all_runs(project)[run.info.run_id].info.status == "KILLED"
    import fcntl

    from linclass.cli import WORKSPACE_LOCK

    with open(project.path / WORKSPACE_LOCK, "a") as lock:   # free again once DVC ended
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)


# A signal can land in the middle of an MLflow call (the train stage logs every epoch). Raised there, it
# can leave the sqlite transaction open and the database locked, so that the run cannot be set KILLED.
# This runs tracked_run many times in a child process, each time sending itself SIGTERM or SIGINT at a
# random moment while it alternates numpy work and MLflow logging, as training does.
SIGNAL_ANYWHERE = textwrap.dedent("""
    import json, os, random, signal, sys, threading
    import numpy as np
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient
    from linclass.tracking import runs

    experiment_id = runs.setup("signals", None, root=sys.argv[1])
    client = MlflowClient()
    A = np.random.default_rng(0).standard_normal((200, 200)).astype(np.float32)
    statuses = []
    for trial in range(int(sys.argv[2])):
        signum = random.Random(trial).choice([signal.SIGTERM, signal.SIGINT])
        try:
            with runs.tracked_run(experiment_id, f"trial-{trial}") as run:
                threading.Timer(random.Random(-trial).uniform(0, 0.1), os.kill, (os.getpid(), signum)).start()
                for step in range(10**9):
                    A @ A
                    client.log_batch(run.info.run_id, metrics=[Metric("loss", 1.0, 0, step)])
        except KeyboardInterrupt:
            pass
        except Exception as exc:  # setting the status failed
            print(f"trial {trial}: {type(exc).__name__}: {exc}", file=sys.stderr)
        try:
            statuses.append(client.get_run(run.info.run_id).info.status)
        except Exception as exc:
            statuses.append(f"unreadable ({type(exc).__name__})")
        if statuses[-1] != "KILLED":
            break
    print(json.dumps(statuses))
""")


def test_a_signal_inside_an_mlflow_call_still_ends_the_run_killed(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    result = subprocess.run([sys.executable, "-c", SIGNAL_ANYWHERE, str(tmp_path), "60"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    statuses = json.loads(result.stdout.strip().splitlines()[-1])
    assert statuses == ["KILLED"] * 60, (
        f"trial {len(statuses) - 1} left its run {statuses[-1]}:\n{result.stderr[-3000:]}"
    )


# --- divergence ------------------------------------------------------------------------------------

def test_divergence_fails_the_run_and_the_stage_naming_step_and_value(project, warm_env):
    write_params(project, loss__softmax__learning_rate=1e30)
    before = all_runs(project)
    result = project.dvc("repro", "train@softmax-l2", check=False, env=warm_env)
    assert result.returncode != 0
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert errors[0].startswith("error: training diverged at step "), errors
    assert "1e+30" in errors[0] and ("= inf" in errors[0] or "= nan" in errors[0]), errors

    (run,) = new_runs(project, before)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("DivergenceError: training diverged at step ")
    assert "1e+30" in run.data.tags["error"]
    assert_no_train_output(project, "softmax-l2")


# --- tampered data ---------------------------------------------------------------------------------

def manifest_md5(project, out: str, relpath: str) -> str:
    """The md5 that dvc.lock records (through its .dir manifest in the cache) for one file of a directory output."""
    lock = yaml.safe_load((project.path / "dvc.lock").read_text())
    (entry,) = [o for o in lock["stages"]["preprocess"]["outs"] if o["path"] == out]
    dir_md5 = entry["md5"]
    manifest = project.path / ".dvc" / "cache" / "files" / "md5" / dir_md5[:2] / dir_md5[2:]
    (item,) = [i for i in json.loads(manifest.read_text()) if i["relpath"] == relpath]
    return item["md5"]


# Plain `dvc repro` restores the recorded output from the cache; `--force` runs preprocess again, bit-identically.
@pytest.mark.parametrize("repro", [("repro",), ("repro", "--force")], ids=["repro", "repro-force"])
def test_tampered_preprocessed_file_is_reported_and_rebuilt(project, repro):
    x_train = project.path / "data" / "processed" / "X_train.npy"
    recorded = manifest_md5(project, "data/processed", "X_train.npy")
    assert hashlib.md5(x_train.read_bytes()).hexdigest() == recorded

    with open(x_train, "r+b") as f:  # flip 8 bytes of pixel data, keep the size
        f.seek(4096)
        original = f.read(8)
        f.seek(4096)
        f.write(bytes(b ^ 0xFF for b in original))
    assert hashlib.md5(x_train.read_bytes()).hexdigest() != recorded

    status = json.loads(project.dvc("status", "--json").stdout)
    assert {"changed outs": {"data/processed": "modified"}} in status.get("preprocess", []), status

    done = project.dvc(*repro, "preprocess")
    if "--force" in repro:
        assert "Running stage 'preprocess'" in done.stdout, done.stdout
    assert hashlib.md5(x_train.read_bytes()).hexdigest() == recorded
    assert tree_md5(project.path / "data") == project.data_md5
    assert json.loads(project.dvc("status", "--json", "preprocess").stdout) == {}


# --- bad settings ----------------------------------------------------------------------------------

# (settings written to params.yaml, texts the one error line must contain)
BAD_SETTINGS = {
    "unknown-loss-in-grid": (
        {"grid__losses": ["svm", "hinge"]},
        ["grid.losses[1]='hinge'", "is not one of 'svm', 'squared_svm', 'softmax'"],
    ),
    "unknown-regularizer-in-grid": (
        {"grid__regularizers": ["l2", "l3"]},
        ["grid.regularizers[1]='l3'", "is not one of 'none', 'l1', 'l2', 'elasticnet'"],
    ),
    "negative-strength": (
        {"regularizer__l2__strength": -0.001},
        ["regularizer.l2.strength=-0.001", "allowed a number >= 0"],
    ),
    "zero-learning-rate": ({"loss__svm__learning_rate": 0}, ["loss.svm.learning_rate=0", "allowed a number > 0"]),
    "negative-learning-rate": (
        {"loss__softmax__learning_rate": -0.01},
        ["loss.softmax.learning_rate=-0.01", "allowed a number > 0"],
    ),
    "zero-batch-size": ({"train__batch_size": 0}, ["train.batch_size=0", "allowed an integer >= 1"]),
    "unknown-top-level-key": ({"nosuch": {"key": 1}}, ["unknown setting nosuch;", "known top-level keys: data"]),
    "unknown-train-key": ({"train__momentum": 0.9}, ["unknown setting train.momentum;", "known keys of train: epochs"]),
    "bad-tracking-uri": (
        {"tracking__uri": "htp://127.0.0.1:5000"},
        ["tracking.uri='htp://127.0.0.1:5000'", "allowed: null"],
    ),
}


def assert_rejected_before_any_work(project, result, before: dict, must_say: list[str]) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in must_say:
        assert text in lines[0], lines[0]
    assert_no_train_output(project, "svm-l2")
    assert not new_runs(project, before), "an MLflow run was created"


@pytest.mark.parametrize("case", list(BAD_SETTINGS))
def test_bad_setting_fails_the_train_stage_in_one_line_before_any_work(project, warm_env, case):
    settings, must_say = BAD_SETTINGS[case]
    write_params(project, **settings)
    before = all_runs(project)
    assert_rejected_before_any_work(project, run_train(project, *STAGE_TRAIN, env=warm_env), before, must_say)


def test_batch_size_larger_than_the_data_names_both(project, warm_env):
    num_train = len(np.load(project.path / "data" / "processed" / "y_train.npy"))
    write_params(project, train__batch_size=num_train + 1)
    before = all_runs(project)
    assert_rejected_before_any_work(project, run_train(project, *STAGE_TRAIN, env=warm_env), before, [
        f"train.batch_size={num_train + 1}", f"{num_train} training images", f"allowed 1..{num_train}"])


def test_unknown_loss_argument(project, warm_env):
    before = all_runs(project)
    result = run_train(project, *STAGE_TRAIN[:3], "hinge", *STAGE_TRAIN[4:], env=warm_env)
    assert_rejected_before_any_work(project, result, before, ["unknown loss 'hinge'", "known: svm, squared_svm"])


def test_unreadable_params_yaml(project):
    (project.path / "params.yaml").write_text("train:\n  epochs: 3\n   batch_size: 5\n")
    before = all_runs(project)
    assert_rejected_before_any_work(project, run_train(project), before, ["params.yaml is not valid YAML at line 3"])


def test_exp_run_with_an_unknown_override_key_runs_nothing(project):
    before = all_runs(project)
    result = project.dvc("exp", "run", "-S", "nosuch.key=1", "train@svm-l2", check=False)
    assert result.returncode != 0
    assert "Could not override 'nosuch.key'" in result.stderr, result.stderr
    assert "Running stage" not in result.stdout, result.stdout
    assert (project.path / "params.yaml").read_bytes() == project.saved["params.yaml"]
    assert_no_train_output(project, "svm-l2")
    assert not new_runs(project, before)


def test_exp_run_appending_an_unknown_key_is_refused_before_any_stage(project):
    # `+nosuch.key=1` is a valid Hydra append: the settings' check inside the composition refuses it, so DVC
    # stops before it writes params.yaml or runs a stage, with one line.
    before = all_runs(project)
    saved = (project.path / "params.yaml").read_text()
    result = project.dvc("exp", "run", "-S", "+nosuch.key=1", "train@svm-l2", check=False)
    assert result.returncode != 0
    assert (project.path / "params.yaml").read_text() == saved
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "unknown setting nosuch; known top-level keys: data" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert_no_train_output(project, "svm-l2")
    assert not new_runs(project, before)


# --- a tracking server that does not answer --------------------------------------------------------

@contextlib.contextmanager
def silent_server():
    """A socket on 127.0.0.1 that accepts connections and never answers; yields (url, accepted connections)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.1)
    held, stop = [], threading.Event()

    def accept_forever():
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", held
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


@pytest.mark.parametrize("server", ["closed-port", "silent"])
def test_unreachable_tracking_server_fails_fast_in_one_line_and_loses_nothing(project, warm_env, server):
    with contextlib.ExitStack() as stack:
        if server == "closed-port":
            uri, held = f"http://127.0.0.1:{closed_port()}", None
        else:
            uri, held = stack.enter_context(silent_server())
        before = all_runs(project)
        env = {**warm_env, "MLFLOW_TRACKING_URI": uri}   # the stage forked from a process that imported MLflow
        start = time.monotonic()
        result = project.dvc("repro", "train@softmax-none", check=False, env=env, timeout=120)
        elapsed = time.monotonic() - start
        if held is not None:
            assert held, "the stage never connected to the silent server"
    assert result.returncode != 0
    # MLflow's own defaults retry for minutes (7 tries, 120 s a request); the stage gives up within seconds of
    # connecting, plus dvc's and the stage's start-up, which take tens of seconds on a loaded 2-core machine
    assert elapsed < 60, f"took {elapsed:.1f} s to give up on {uri}"
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    assert uri in errors[0] and "did not answer" in errors[0], errors
    assert "Traceback" not in result.stderr
    assert_no_train_output(project, "softmax-none")
    assert tree_md5(project.path / "data") == project.data_md5  # earlier stages' outputs intact
    assert json.loads(project.dvc("status", "--json", "preprocess").stdout) == {}
    assert not new_runs(project, before)
