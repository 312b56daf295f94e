"""The warm interpreter (linclass.orchestration.warm) and its client, for real: a server started in this project's
root, commands sent through warm_client.py as `pipeline/python` and the Ray nodes send them."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from conftest import BIN, ROOT

CLIENT = ROOT / "src" / "linclass" / "orchestration" / "warm_client.py"

REPORT = """
import json, os, sys
import signal
print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "warm": os.environ.get("LINCLASS_WARM_BLAS"),
                  "sighup_ignored": signal.getsignal(signal.SIGHUP) == signal.SIG_IGN,
                  "numpy": "numpy" in sys.modules, "dvc": "dvc.repo" in sys.modules, "pid": os.getpid(),
                  "pgid": os.getpgid(0),
                  "marker": os.environ.get("MARKER")}))
sys.stderr.write("to stderr\\n")
sys.exit(int(os.environ.get("EXIT", "0")))
"""


def start_warm(folder: Path, cwd: Path, env: dict, *args: str) -> tuple[subprocess.Popen, Path]:
    """A warm interpreter (linclass.orchestration.warm) started in `cwd` with `env` and `args`, its socket and
    log.txt in `folder` (private, existing); returns (the process, its socket) once the socket is there."""
    socket_path = folder / "socket"
    with open(folder / "log.txt", "w") as log:
        proc = subprocess.Popen([str(BIN / "python"), "-m", "linclass.orchestration.warm", "--socket",
                                 str(socket_path), *args], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while not socket_path.is_socket():
        assert proc.poll() is None and time.monotonic() < deadline, (folder / "log.txt").read_text()
        time.sleep(0.05)
    return proc, socket_path


def start_server(folder: Path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, Path]:
    folder.mkdir(mode=0o700)
    return start_warm(folder, ROOT, {**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})}, *args)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc, socket_path = start_server(tmp_path_factory.mktemp("warm") / "private", "--dvc",
                                     env={"OPENBLAS_NUM_THREADS": "1"})
    yield socket_path
    stop(proc)


def client(socket_path: Path, *argv: str, cwd: Path = ROOT, env: dict | None = None, python: str = sys.executable,
           **kw):
    return subprocess.run([python, "-I", "-S", str(CLIENT), *argv], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "LINCLASS_WARM_SOCKET": str(socket_path), **(env or {})}, timeout=120,
                          **kw)


@pytest.fixture
def report(tmp_path) -> Path:
    path = tmp_path / "report.py"
    path.write_text(REPORT)
    return path


def test_a_script_runs_warm_with_its_arguments_streams_environment_and_exit_code(server, report):
    done = client(server, str(report), "a", "b c", env={"MARKER": "m1", "EXIT": "3"})
    assert done.returncode == 3, done.stderr
    seen = json.loads(done.stdout)
    assert seen["argv"] == [str(report), "a", "b c"] and seen["cwd"] == str(ROOT) and seen["marker"] == "m1"
    assert seen["warm"] == "1" and seen["numpy"], "started from the warm interpreter, numpy already imported"
    assert seen["dvc"], "--dvc: DVC's modules too"
    assert seen["pgid"] == seen["pid"], "a process group of its own"
    assert done.stderr == "to stderr\n"


def test_a_served_command_puts_its_temporary_files_in_its_own_tmpdir(server, tmp_path):
    """The interpreter made a temporary folder of its own before it served (tempfile remembers where): a command
    still uses its client's TMPDIR, as a fresh interpreter would."""
    script = tmp_path / "where.py"
    script.write_text("import os, tempfile\nprint(tempfile.gettempdir(), os.environ.get('LINCLASS_WARM_BLAS'))\n")
    done = client(server, str(script), env={"TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(tmp_path), "1"]


def test_a_module_runs_warm_and_an_exception_exits_1_with_its_traceback(server, tmp_path):
    done = client(server, "-m", "dvc", "--version")
    assert done.returncode == 0 and done.stdout.strip() == "3.67.1", done.stderr
    failing = tmp_path / "fails.py"
    failing.write_text("raise ValueError('boom')\n")
    done = client(server, str(failing))
    assert done.returncode == 1 and done.stderr.strip().endswith("ValueError: boom"), done.stderr


def test_what_it_does_not_serve_runs_in_a_fresh_interpreter(server, report, tmp_path):
    elsewhere = client(server, str(report), cwd=tmp_path)   # another working directory
    other_code = client(server, str(report), env={"PYTHONPATH": str(tmp_path)})   # another PYTHONPATH
    for done in (elsewhere, other_code):
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout)
        assert seen["warm"] is None and not seen["numpy"], "a fresh python"
    gone = client(tmp_path / "no-socket", str(report))
    assert gone.returncode == 0 and json.loads(gone.stdout)["warm"] is None


SAVE_MODEL = """
import json, os, tempfile
import importlib_metadata
import mlflow
from linclass.tracking import registry

calls = []
mapping = importlib_metadata.packages_distributions
importlib_metadata.packages_distributions = lambda: calls.append(1) or mapping()
with tempfile.TemporaryDirectory() as tmp:
    mlflow.pyfunc.save_model(os.path.join(tmp, "m"), python_model=str(registry.CODE),
                             pip_requirements=registry.requirements())
print(json.dumps({"warm": os.environ.get("LINCLASS_WARM_BLAS"), "mapped": len(calls)}))
"""


def test_a_served_command_logs_a_model_without_mapping_the_installed_distributions(server, tmp_path):
    # MLflow maps every installed distribution to its modules (about 0.5 s) for the requirements check of the
    # first model a process saves; the warm interpreter saves one before it serves, and its children inherit it.
    script = tmp_path / "save_model.py"
    script.write_text(SAVE_MODEL)
    warm, fresh = client(server, str(script)), client(tmp_path / "no-socket", str(script))
    assert warm.returncode == 0 and fresh.returncode == 0, warm.stderr + fresh.stderr
    assert json.loads(warm.stdout.splitlines()[-1]) == {"warm": "1", "mapped": 0}
    assert json.loads(fresh.stdout.splitlines()[-1]) == {"warm": None, "mapped": 1}, "a fresh python maps them"


IMPORTS = """
import importlib.util, json, os, sys
dvc = "dvc.repo" in sys.modules
import linclass.studies.report as report
new = importlib.util.find_spec("linclass.only_in_copy")
print(json.dumps({"warm": os.environ.get("LINCLASS_WARM_BLAS"), "dvc": dvc, "report": report.__file__,
                  "edited": hasattr(report, "EDITED"), "new": new.origin if new else None}))
"""


def test_a_copy_with_the_same_code_is_served_and_changed_code_is_not(tmp_path):
    """DVC's temporary experiment copies (the queue's, `dvc exp run --temp`) hold the workspace's code: served. A
    copy whose code differs (a module of its own) runs fresh, with its own code; so does every command once the
    workspace's code is edited (here a module the server never imported, which a command would import from the
    workspace): a copy queued before the edit runs the code it holds."""
    workspace = tmp_path / "workspace"
    copy, other = (workspace / ".dvc" / "tmp" / "exps" / name for name in ("tmpk3j2h1", "tmpq8w7e6"))
    for folder in ("src", "hydra_plugins", "pipeline"):
        shutil.copytree(ROOT / folder, workspace / folder, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(workspace / folder, copy / folder)
        shutil.copytree(workspace / folder, other / folder)
    (other / "src" / "linclass" / "only_in_copy.py").write_text("")
    script = tmp_path / "imports.py"
    script.write_text(IMPORTS)
    (tmp_path / "private").mkdir(mode=0o700)
    proc, socket_path = start_warm(tmp_path / "private", workspace, {**os.environ, "OPENBLAS_NUM_THREADS": "1",
                                                                     "PYTHONPATH": str(workspace / "src")})

    def seen(cwd: Path) -> dict:
        done = client(socket_path, str(script), cwd=cwd, env={"PYTHONPATH": "src"})
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    try:
        served = seen(copy)
        assert served["warm"] == "1", "the same code: served"
        assert not served["dvc"], "without --dvc, DVC's modules are not loaded: no stage imports them"
        in_other = seen(other)
        assert in_other["warm"] is None and in_other["new"] == str(other / "src/linclass/only_in_copy.py"), in_other
        with open(workspace / "src" / "linclass" / "studies" / "report.py", "a") as module:
            module.write("EDITED = 'after the experiment was queued'\n")
        in_copy = seen(copy)
        assert in_copy["warm"] is None and not in_copy["edited"], in_copy
        assert in_copy["report"] == str(copy / "src/linclass/studies/report.py"), in_copy
        assert seen(workspace)["warm"] is None
        log = (tmp_path / "private" / "log.txt").read_text()
        assert "declined (a working directory with other code)" in log, log
        assert "declined (the code changed since it was imported)" in log, log
    finally:
        stop(proc)


def test_a_signal_the_client_ignores_stays_ignored_in_the_command(server, report):
    """Under nohup (SIGHUP ignored), a warm command ignores SIGHUP as a fresh python started there would."""
    ignoring = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_IGN); "
                "os.execv(sys.argv[1], sys.argv[1:])", sys.executable, "-I", "-S", str(CLIENT), str(report)]
    done = subprocess.run(ignoring, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LINCLASS_WARM_SOCKET": str(server)})
    seen = json.loads(done.stdout)
    assert seen["warm"] == "1" and seen["sighup_ignored"], seen
    assert not json.loads(client(server, str(report)).stdout)["sighup_ignored"]


def test_the_same_environment_through_a_link_is_served_and_another_is_not(server, report, tmp_path):
    """A project copy's .venv may be a link to the environment (the tests' copies, a worktree's): served. The
    system's python is another environment: it runs the command itself (the server only logs that it declined)."""
    (tmp_path / "venv").symlink_to(Path(sys.executable).parent.parent)
    linked = client(server, str(report), python=str(tmp_path / "venv" / "bin" / Path(sys.executable).name))
    assert linked.returncode == 0 and json.loads(linked.stdout)["warm"] == "1", linked.stderr
    system = client(server, str(report), python="/usr/bin/python3")
    assert system.returncode == 0 and json.loads(system.stdout)["warm"] is None, system.stderr


def test_sigterm_to_the_client_reaches_the_command(server, tmp_path):
    script = tmp_path / "waits.py"
    script.write_text(textwrap.dedent("""
        import signal, sys, time
        def stopped(signum, frame):
            print("stopped by", signum, flush=True)
            sys.exit(143)
        signal.signal(signal.SIGTERM, stopped)
        print("ready", flush=True)
        time.sleep(60)
    """))
    proc = subprocess.Popen([sys.executable, "-I", "-S", str(CLIENT), str(script)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, env={**os.environ, "LINCLASS_WARM_SOCKET": str(server)})
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert proc.stdout.read() == f"stopped by {int(signal.SIGTERM)}\n"


def test_a_signal_before_the_commands_pid_arrives_is_relayed_to_it(tmp_path):
    """The command runs as soon as it is forked, and may be signalled before its pid reaches the client (seen in CI:
    the client died of a SIGTERM meant for the command). The client holds such a signal and relays it once the pid
    is there. A stand-in server answers late on purpose (the real one answers within milliseconds)."""
    command = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\n"
                                "signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))\nprint(flush=True)\n"
                                "time.sleep(60)"], stdout=subprocess.PIPE, process_group=0)
    assert command.stdout is not None and command.stdout.readline() == b"\n"   # its handler is in place
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "socket"))
    listener.listen(1)
    proc = subprocess.Popen([sys.executable, "-I", "-S", str(CLIENT), "stage.py"], cwd=tmp_path,
                            env={**os.environ, "LINCLASS_WARM_SOCKET": str(tmp_path / "socket")})
    try:
        conn, _ = listener.accept()
        _, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        for fd in fds:
            os.close(fd)
        proc.send_signal(signal.SIGTERM)   # the client is waiting for the command's pid
        time.sleep(0.5)
        assert proc.poll() is None, "the client died of a signal meant for its command"
        conn.sendall(json.dumps({"pid": command.pid}).encode() + b"\n")
        assert command.wait(timeout=30) == 7, "relayed to the command"
        conn.sendall(json.dumps({"exit": 7}).encode() + b"\n")
        conn.close()
        assert proc.wait(timeout=30) == 7
    finally:
        for process in (proc, command):
            if process.poll() is None:
                process.kill()
                process.wait()
        listener.close()


def test_a_client_killed_outright_takes_its_command_down(server, tmp_path):
    script = tmp_path / "sleeps.py"
    script.write_text("import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-I", "-S", str(CLIENT), str(script)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, env={**os.environ, "LINCLASS_WARM_SOCKET": str(server)})
    command = int(proc.stdout.readline())
    assert psutil.pid_exists(command) and command != proc.pid
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 20
    while psutil.pid_exists(command) and psutil.Process(command).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the command outlived its client"
        time.sleep(0.1)


def test_another_user_cannot_reach_the_socket(server, report):
    """The socket's folder is private: another account cannot connect, so it cannot run code in our name."""
    probe = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
             "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    print('refused')\n")
    if os.getuid() != 0:
        pytest.skip("switching to another account needs root")
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-I", "-S",
                           "-c", probe, str(server)], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "refused", done.stdout + done.stderr
    assert oct(server.parent.stat().st_mode & 0o777) == "0o700"


THIEF = """
import json, os, socket, struct, sys
listener = socket.socket(socket.AF_UNIX)
listener.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o777)
listener.listen(1)
print("listening", flush=True)
listener.settimeout(float(sys.argv[2]))
try:
    conn, _ = listener.accept()
except TimeoutError:   # the client never connected
    print("got nothing", flush=True)
    sys.exit()
conn.settimeout(10)
try:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
except OSError:
    data, fds = b"", []
if not data:
    print("got nothing", flush=True)
    sys.exit()
while len(data) < 4 + struct.unpack("!I", data[:4])[0]:
    data += conn.recv(1 << 20)
request = json.loads(data[4:])
print("got", request["env"].get("MLFLOW_TRACKING_TOKEN"), len(fds), "streams", flush=True)
os.write(fds[1], b"written by the thief\\n")
conn.sendall(b'{"pid": 1}\\n{"exit": 0}\\n')   # the command "ran", and succeeded
"""


@contextlib.contextmanager
def another_account_listening(script: str, *args: str):
    """`script` listening as another account (nobody) on a socket in a folder of that account, in a stand-in for /tmp
    that the account reaches: what another account can make once an interpreter removed its folder. Yields (the
    stand-in, the socket, the process); skipped where switching accounts needs root."""
    if os.getuid() != 0:
        pytest.skip("switching to another account needs root")
    shared = Path(tempfile.mkdtemp(prefix="warm-other-"))
    try:
        shared.chmod(0o711)
        taken = shared / "linclass-warm-name"
        taken.mkdir()
        os.chown(taken, 65534, 65534)
        other = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                                  "-I", "-S", "-c", script, str(taken / "socket"), *args], stdout=subprocess.PIPE,
                                 text=True)
        try:
            assert other.stdout is not None and other.stdout.readline().strip() == "listening"
            yield shared, taken / "socket", other
        finally:
            other.kill()
            other.wait()
    finally:
        shutil.rmtree(shared)


def test_the_client_sends_nothing_to_another_accounts_socket():
    """serving()'s folder (<tmp>/linclass-warm-XXXX) is removed when its interpreter stops while idle, and the
    pipeline's environment still names the socket: another account that sees the name in /tmp makes the folder
    again with a socket of its own. The client sent it its whole environment (MLFLOW_TRACKING_TOKEN, cloud keys)
    and its standard streams (a terminal), and took its answer for the command's status: the stage "succeeded"
    without running. The client talks only to a socket in a private folder of its own account, and only to an
    interpreter of its own account there (SO_PEERCRED); others run fresh. Both checks, one at a time: another
    account's folder (the client does not connect), and another account's socket moved into a private folder of
    this account (it connects, and sends nothing)."""
    for case in ("another account's folder", "another account's socket in a private folder"):
        with another_account_listening(THIEF, "10") as (shared, socket_path, thief):
            if case.endswith("private folder"):
                (shared / "private").mkdir(mode=0o700)
                os.rename(socket_path, shared / "private" / "socket")   # (root moves it: no other account could)
                socket_path = shared / "private" / "socket"
            done = client(socket_path, "-c", "print('the stage ran')", env={"MLFLOW_TRACKING_TOKEN": "secret-token"})
            said = thief.communicate(timeout=60)[0]
        assert said.strip() == "got nothing", (case, said)
        assert done.returncode == 0 and done.stdout == "the stage ran\n", done.stdout + done.stderr


SQUATTER = """
import socket, sys, time
listener = socket.socket(socket.AF_UNIX)
listener.bind(sys.argv[1])
listener.listen(0)
waiting = socket.socket(socket.AF_UNIX)   # fills the backlog: the next connect() waits for an accept() that never comes
waiting.connect(sys.argv[1])
print("listening", flush=True)
time.sleep(120)
"""


def test_another_accounts_socket_that_never_answers_does_not_hang_the_stage():
    """Found by an attack: as in test_the_client_sends_nothing_to_another_accounts_socket, another account makes
    the removed folder again, but its socket never accepts. The client's connect() then waited until that account
    let it go, with SIGTERM, SIGINT and SIGHUP blocked: the stage hung and Ctrl-C did nothing."""
    with another_account_listening(SQUATTER) as (_, socket_path, _):
        stage = subprocess.Popen([sys.executable, "-I", "-S", str(CLIENT), "-c", "print('the stage ran')"],
                                 stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "LINCLASS_WARM_SOCKET": str(socket_path)})
        try:
            out, _ = stage.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            stage.terminate()   # what Ctrl-C or a stop does: it should end the stage
            try:
                stage.wait(timeout=5)
                said = f"the stage hung 30 s, and a SIGTERM ended it: {stage.returncode}"
            except subprocess.TimeoutExpired:
                said = "the stage hung 30 s, and a SIGTERM did not end it"
            stage.kill()
            stage.wait()
            pytest.fail(said)
    assert stage.returncode == 0 and out == "the stage ran\n", out


def test_a_stage_that_wants_other_blas_threads_reexecutes_fresh(tmp_path):
    """The server loaded BLAS with 2 threads; params.yaml asks for 1: the stage starts again in a fresh python."""
    proc, socket_path = start_server(tmp_path / "private", env={"OPENBLAS_NUM_THREADS": "2"})
    try:
        script = tmp_path / "stage.py"
        script.write_text(textwrap.dedent("""
            import json, os, sys
            warm = "numpy" in sys.modules
            from linclass.plumbing.threads import set_blas_threads
            threads = set_blas_threads()
            print(json.dumps({"warm_before": warm, "numpy": "numpy" in sys.modules, "threads": threads,
                              "blas": os.environ.get("OPENBLAS_NUM_THREADS")}))
        """))
        done = client(socket_path, str(script), env={"PYTHONPATH": "src"})
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"warm_before": False, "numpy": False, "threads": 1, "blas": "1"}
        assert f"exit 0: {script}" in (tmp_path / "private" / "log.txt").read_text(), "the warm child ran it first"
    finally:
        stop(proc)


def test_the_server_stops_when_idle_and_removes_its_socket(tmp_path):
    proc, socket_path = start_server(tmp_path / "private", "--idle", "1")
    assert proc.wait(timeout=30) == 0
    assert not socket_path.exists() and socket_path.parent.is_dir(), "a folder it was given stays"


def test_an_interpreter_whose_starter_was_killed_outright_removes_its_folder_when_idle(tmp_path):
    # serving() (linclass repro, exp, grid, sweep) makes the folder; after a SIGKILL of linclass nobody else is
    # left to remove it.
    proc, socket_path = start_server(tmp_path / "private", "--idle", "1", "--own-folder")
    (tmp_path / "private" / "log.txt").rename(tmp_path / "log.txt")   # the test's own log, not the server's
    assert proc.wait(timeout=30) == 0, (tmp_path / "log.txt").read_text()
    assert not socket_path.parent.exists()


def test_an_interpreter_stopped_while_it_loads_leaves_no_temporary_folder(tmp_path):
    """SIGTERM while it saves its throwaway model (serving() stops it so when the pipeline it was started for ended
    first). The model was saved in $TMPDIR, and stayed in /tmp: it is saved in the socket's private folder now
    (which serving() removes whole), and a SIGTERM while loading exits through the with-blocks."""
    folder, scratch = tmp_path / "private", tmp_path / "tmp"
    folder.mkdir(mode=0o700)
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TMPDIR": str(scratch)}
    proc = subprocess.Popen([str(BIN / "python"), "-m", "linclass.orchestration.warm", "--socket",
                             str(folder / "socket")], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not [path for path in folder.iterdir() if path.is_dir()]:   # it is saving the model now
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    proc.terminate()
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert list(scratch.iterdir()) == []
    assert not (folder / "socket").exists()


def loading_server(folder: Path) -> subprocess.Popen:
    """A warm interpreter just started (its modules not yet imported), once its socket is there."""
    from linclass.orchestration.warm import ready

    proc, _ = start_server(folder, env={"OPENBLAS_NUM_THREADS": "1"})
    assert not ready(folder / "log.txt"), "it had imported everything already"
    return proc


def test_a_command_asked_while_the_interpreter_imports_waits_and_runs_warm(tmp_path, report):
    """DVC's first stage often starts before the interpreter has imported its modules: it ran in a fresh python,
    importing them a second time beside it (about 2.5 s of CPU more for a train stage)."""
    proc = loading_server(tmp_path / "private")
    try:
        done = client(tmp_path / "private" / "socket", str(report), "a")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["numpy"], "it ran in a fresh python"
        assert f"exit 0: {report}" in (tmp_path / "private" / "log.txt").read_text()
    finally:
        stop(proc)


def test_a_command_waiting_for_an_interpreter_stopped_while_it_imports_runs_fresh(tmp_path, report):
    from linclass.orchestration.warm import ready

    proc = loading_server(tmp_path / "private")
    try:
        waiting = subprocess.Popen([sys.executable, "-I", "-S", str(CLIENT), str(report), "b"], cwd=ROOT,
                                   env={**os.environ, "LINCLASS_WARM_SOCKET": str(tmp_path / "private" / "socket")},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)   # its request sent, in the backlog
        assert not ready(tmp_path / "private" / "log.txt")
        proc.terminate()
        out, err = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, err
        assert json.loads(out)["argv"][1:] == ["b"] and not json.loads(out)["numpy"]   # fresh
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        assert not (tmp_path / "private" / "socket").exists()
    finally:
        stop(proc)


def test_serving_with_wait_yields_once_the_interpreter_has_imported_its_modules(tmp_path):
    """Its socket is there from the start now: `wait` (a benchmark's, a Ray node's) waits for the imports."""
    from linclass.orchestration.warm import ready, serving

    log = tmp_path / "log.txt"
    with serving(ROOT, {**os.environ, "OPENBLAS_NUM_THREADS": "1"}, log, wait=180) as variables:
        assert ready(log), log.read_text()
        assert Path(variables["LINCLASS_WARM_SOCKET"]).is_socket()
    assert not ready(log, log.stat().st_size)   # nothing after the end
