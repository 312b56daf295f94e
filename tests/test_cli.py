"""The `linclass` command and its make aliases as a user meets them: `--help` at every level only prints
(no file appears or changes, in an empty folder or in a project), a bad or missing option is one line,
a command run outside a project refuses before it creates anything, `make` alone lists the targets, and
the make variables are named in their errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import typer
from conftest import BIN, ROOT, env_for_pipeline, make_project

from linclass.cli import app

LINCLASS = str(BIN / "linclass")


def command_paths() -> list[list[str]]:
    """Every command and group of `linclass`, as argv: [], ['config'], ..., ['services', 'up'], ..."""
    def walk(command, path):
        yield path
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            yield from walk(sub, [*path, name])
    return list(walk(typer.main.get_command(app), []))


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every file and folder under `folder` (links not followed): kind, size and modification time."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            info = path.lstat()
            found[str(path.relative_to(folder))] = (path.is_dir(), info.st_size, info.st_mtime_ns)
    return found


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("cli") / "project")


def test_every_command_is_listed_and_the_make_targets_call_it():
    paths = [" ".join(p) for p in command_paths()]
    for name in ("config", "settings", "repro", "exp", "grid", "sweep", "table", "compare", "experiments", "store",
                 "ui", "server", "reap", "push", "pull", "services up", "services add-user", "cluster up"):
        assert name in paths, name
    assert len(paths) >= 25, paths


HELP_ALL = """
import contextlib, io, json, sys
from linclass.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    sys.argv = ["linclass", *argv]
    with contextlib.redirect_stdout(out):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code
    results.append([argv, code, out.getvalue()])
print(json.dumps(results))
"""


@pytest.mark.parametrize("where", ["empty folder", "project"])
def test_help_at_every_level_creates_no_file(tmp_path, project, where):
    """The console script itself for `linclass --help` and a group alone; every other level through the same
    main() in one process (a process per command would take minutes on a loaded machine)."""
    import json

    folder = tmp_path if where == "empty folder" else project.path
    env = env_for_pipeline()
    before = snapshot(folder)
    for argv in (["--help"], ["-h"], [], ["services"]):
        proc = subprocess.run([LINCLASS, *argv], cwd=folder, env=env, capture_output=True, text=True)
        assert proc.returncode == 0 and "Usage: linclass" in proc.stdout, (argv, proc.stdout, proc.stderr)
    argvs = [[*path, "--help"] for path in command_paths()] + [["cluster"]]
    proc = subprocess.run([str(BIN / "python"), "-c", HELP_ALL, json.dumps(argvs)], cwd=folder, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for argv, code, out in json.loads(proc.stdout.strip().splitlines()[-1]):
        assert code == 0 and "Usage: linclass" in out, (argv, code, out)
    assert snapshot(folder) == before, "a --help created or changed files"


@pytest.mark.parametrize("argv, message", [
    (["nosuch"], "error: No such command 'nosuch'. (linclass -h lists the commands)"),
    (["comapre"], "error: No such command 'comapre'. Did you mean 'compare'? (linclass -h lists the commands)"),
    (["sweep", "--loss", "svm"], "error: Missing option '--regularizer'. (linclass sweep -h lists the options)"),
    (["grid", "--jobs", "0"], "error: Invalid value for '--jobs' / '-j': Input should be greater than or equal to 1"),
    (["ui", "--port", "x"], "error: Invalid value for '--port'"),
    (["grid", "--nope"], "error: No such option: --nope (linclass grid -h lists the options)"),
    (["ui", "--port"], "error: Option '--port' requires an argument. (linclass ui -h lists the options)"),
    (["services", "add-user", "--grant"],
     "error: Option '--grant' requires an argument. (linclass services add-user -h lists the options)"),
    (["grid", "train.epochs=5", "--jobs"],   # it named 'linclass grid train.epochs=5'
     "error: Option '--jobs' requires an argument. (linclass grid -h lists the options)"),
])
def test_a_bad_or_missing_option_is_one_line(tmp_path, argv, message):
    proc = subprocess.run([LINCLASS, *argv], cwd=tmp_path, env=env_for_pipeline(), capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[0].startswith(message) and len(proc.stderr.strip().splitlines()) == 1, \
        proc.stderr


@pytest.mark.parametrize("argv, line", [
    (["ui", "--port", "70000"], "error: Invalid value for '--port': Input should be less than or equal to 65535, "
                                "not '70000' (linclass ui -h lists the options)"),
    (["grid", "-j", "0"], "error: Invalid value for '--jobs' / '-j': Input should be greater than or equal to 1, "
                          "not '0' (linclass grid -h lists the options)"),
    (["grid", "--jobs=abc"], "error: Invalid value for '--jobs' / '-j': Input should be a valid integer, unable to "
                             "parse string as an integer, not 'abc' (linclass grid -h lists the options)"),
])
def test_a_bad_option_value_is_named_in_its_line(tmp_path, argv, line):
    proc = subprocess.run([LINCLASS, *argv], cwd=tmp_path, env=env_for_pipeline(), capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr == line + "\n", proc.stderr


@pytest.mark.parametrize("argv, message", [
    (["settings", "trian"], "error: no setting starts with 'trian'; the sections: data, preprocess, loss,"),
    (["exp"], "error: an experiment needs settings to change, e.g. linclass exp train.epochs=5"),
    (["exp", "train.epochs=2", "train.epochs=3"], "error: train.epochs is given twice"),
    # Hydra's grammar: its lexer's message, a sweep's (--multirun, a flag linclass has not), a setting without a key
    (["exp", "train..epochs=5"], "error: 'train..epochs=5' is not key=value in Hydra's syntax (check its dots, "
                                 "brackets and quotes), e.g. train.epochs=5 or grid.losses=[svm,softmax]"),
    (["config", "grid.losses=[svm"], "error: 'grid.losses=[svm' is not key=value in Hydra's syntax"),
    (["config", "--check", "=5"], "error: '=5' names no setting (no spaces around '='): allowed key=value, "
     "e.g. train.epochs=5"),
    (["config", "--check", "train.epochs", "=", "5"], "error: '=' names no setting (no spaces around '='): "
     "allowed key=value, e.g. train.epochs=5"),   # SET='train.epochs = 5'
    # a section given a value: pydantic said "Input should be a valid dictionary or instance of Penalty"
    (["config", "--check", "regularizer.l2=0.1"], "error: regularizer.l2=0.1: regularizer.l2 is a section, not a "
     "setting; its settings: strength (e.g. regularizer.l2.strength=...)"),
    (["exp", "train.epochs=5,6"], "error: train.epochs=5,6 gives several values: an experiment takes one per "
                                  "setting (a list setting: key=[a,b]); several values: one make exp each"),
    (["sweep", "--loss", "svm", "--regularizer", "l2", "--learning-rates", "0.01", "--strengths", "1e-3",
      "train.epochs=range(1,3)"], "error: train.epochs=range(1,3) gives several values"),
])
def test_a_request_that_would_do_nothing_or_guess_is_one_line_and_writes_nothing(project, argv, message):
    before = snapshot(project.path)
    proc = subprocess.run([LINCLASS, *argv], cwd=project.path, env=env_for_pipeline(), capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.startswith(message) and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert snapshot(project.path) == before


def test_tied_models_are_listed_in_the_evaluate_stages_order(tmp_path, capsys):
    """make repro's table sorted metrics/test.json (its keys in alphabetical order) by validation accuracy alone:
    two features models tied at 0.6180 came in the other order than in make compare and the champion's runner-up."""
    from linclass.cli import print_test_accuracies

    scores = {"softmax-elasticnet-hog_hist": 0.618, "softmax-l1-hog_hist": 0.618, "softmax-none-hog_hist": 0.6186}
    (tmp_path / "test.json").write_text(json.dumps({name: {"val_accuracy": val, "test_accuracy": 0.6}
                                                    for name, val in sorted(scores.items())}))
    ranked = ["softmax-none-hog_hist", "softmax-l1-hog_hist", "softmax-elasticnet-hog_hist"]   # evaluate's
    (tmp_path / "comparison.csv").write_text("model\n" + "\n".join(ranked) + "\n")
    print_test_accuracies(tmp_path / "test.json", tmp_path / "comparison.csv")
    shown = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]]
    assert shown == ranked, shown
    for broken in ("", "name\nx\n"):   # without a readable ranking, the table still prints (ties by name)
        (tmp_path / "comparison.csv").write_text(broken)
        print_test_accuracies(tmp_path / "test.json", tmp_path / "comparison.csv")
        shown = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]]
        assert shown == [ranked[0], *sorted(ranked[1:])], shown


@pytest.mark.parametrize("name", ["../../etc/evil", "bob$(touch /tmp/pwned)", "-rf", "", "a" * 65])
def test_a_user_name_that_is_not_a_plain_name_is_refused_before_anything(tmp_path, name):
    env = {**env_for_pipeline(), "LINCLASS_SERVICES_DIR": str(tmp_path / "services")}
    proc = subprocess.run([LINCLASS, "services", "add-user", "--", name], cwd=tmp_path, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 1 and proc.stderr.startswith(f"error: user name {name!r} is not allowed: letters, "), \
        proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_services_env_without_a_stack_says_to_start_one(tmp_path):
    env = {**env_for_pipeline(), "LINCLASS_SERVICES_DIR": str(tmp_path / "services")}
    proc = subprocess.run([LINCLASS, "services", "env"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: no credentials for user 'admin' in ") and \
        proc.stderr.rstrip().endswith("the stack is not set up: `linclass services up` (make services-up) first"), \
        proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["ui", "server"])
def test_a_server_on_a_busy_port_is_one_line_before_anything_starts(project, command):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = snapshot(project.path)
        proc = subprocess.run([LINCLASS, command, "--port", str(port)], cwd=project.path, env=env_for_pipeline(),
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout   # no link to a server that is not ours
    assert proc.stderr == (f"error: port {port} on 127.0.0.1 is not free (Address already in use): another server "
                           f"listens there; choose another: --port {port + 1}, or PORT={port + 1} with make\n")
    assert snapshot(project.path) == before


def test_a_server_whose_token_file_was_emptied_refuses_to_start_open(project):
    from conftest import free_port

    folder = project.path / "mlflow-server"
    folder.mkdir(mode=0o700)
    (folder / "token").write_text("\n")
    (folder / "token").chmod(0o600)   # as `> mlflow-server/token` leaves it
    assert server_refusal(project, free_port()) == (f"error: {folder / 'token'} holds 0 characters, not a token (at "
                                                    "least 16): delete it, and the server makes a new one\n")
    shutil.rmtree(folder)


def server_refusal(project, port: int) -> str:
    proc = subprocess.run([LINCLASS, "server", "--port", str(port)], cwd=project.path, env=env_for_pipeline(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout
    return proc.stderr


@pytest.mark.skipif(os.getuid() != 0, reason="gives a folder to another account (nobody): needs root, as CI runs")
def test_a_server_folder_or_token_of_another_account_is_refused_before_anything_is_written(project, tmp_path):
    """mlflow-server a symbolic link to another account's folder, which holds a token they wrote: the server
    started with their token (and its database in their folder). A token that is a link, or open to others: the
    same, refused."""
    import pwd

    from conftest import free_port

    nobody = pwd.getpwnam("nobody")
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    (theirs / "token").write_text("a-token-the-other-account-knows\n")
    os.chown(theirs, nobody.pw_uid, nobody.pw_gid)
    os.chown(theirs / "token", nobody.pw_uid, nobody.pw_gid)
    folder = project.path / "mlflow-server"
    folder.symlink_to(theirs)
    try:
        assert server_refusal(project, free_port()) == (
            f"error: {theirs} belongs to uid {nobody.pw_uid}, not to you (uid 0): another account could read or "
            "replace the server's database, artifacts and token; remove it, or start from another folder\n")
        assert sorted(p.name for p in theirs.iterdir()) == ["token"] and theirs.stat().st_mode & 0o777 == 0o755
    finally:
        folder.unlink()
    folder.mkdir(mode=0o700)
    try:
        (folder / "token").symlink_to(theirs / "token")
        assert server_refusal(project, free_port()) == (
            f"error: {folder / 'token'} is a symbolic link, not the server's own token: delete it, and the server "
            "makes a new one\n")
        (folder / "token").unlink()
        (folder / "token").write_text("a-token-every-account-reads\n")
        (folder / "token").chmod(0o644)
        assert server_refusal(project, free_port()) == (
            f"error: {folder / 'token'} is open to other accounts (mode 644, not 600): delete it, and the server "
            "makes a new one (teammates then need the new one)\n")
        assert sorted(p.name for p in folder.iterdir()) == ["artifacts", "token"]
    finally:
        shutil.rmtree(folder)


@pytest.mark.parametrize("host", ["999.1.1.1", "192.0.2.1"])   # no address; TEST-NET-1, never a machine's own
def test_a_server_on_an_address_that_is_not_this_machines_is_one_line_naming_it(project, host):
    """It said the port was not free and another server listened there."""
    from conftest import free_port

    port = free_port()
    before = snapshot(project.path)
    proc = subprocess.run([LINCLASS, "server", "--host", host, "--port", str(port)], cwd=project.path,
                          env=env_for_pipeline(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout
    lines = proc.stderr.splitlines()   # the reason between the parentheses is the resolver's or the kernel's
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot listen on {host} ("), proc.stderr
    assert lines[0].endswith("): --host takes an address of this machine, such as 127.0.0.1 (this machine only) "
                             "or 0.0.0.0 (every network)"), proc.stderr
    assert snapshot(project.path) == before


@pytest.mark.parametrize("argv", [["repro"], ["exp", "train.epochs=1"], ["config"], ["config", "--check"],
                                  ["compare"], ["experiments"], ["table"], ["store"], ["reap"], ["ui"], ["push"],
                                  ["pull"], ["grid"]])
def test_outside_a_project_a_command_refuses_and_creates_nothing(tmp_path, argv):
    proc = subprocess.run([LINCLASS, *argv], cwd=tmp_path, env=env_for_pipeline(), capture_output=True, text=True,
                          timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert str(tmp_path) in lines[0] and ("project" in lines[0] or "DVC project" in lines[0]), lines[0]
    assert list(tmp_path.iterdir()) == [], "a refused command left files behind"


def make_copy(project_dir: Path, tmp_path: Path, with_venv: bool) -> Path:
    """The Makefile and what it reads, in a folder of their own, with or without the worktree's .venv."""
    dest = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(project_dir), str(dest)], check=True)
    for name in ("Makefile", "pyproject.toml", "uv.lock"):
        (dest / name).write_bytes((ROOT / name).read_bytes())
    if with_venv:
        (dest / ".venv").symlink_to(ROOT / ".venv")
        if (ROOT / ".tools").is_dir():   # uv, where make installed it (not on PATH): not installed again here
            (dest / ".tools").symlink_to(ROOT / ".tools")
        for name in ("pyproject.toml", "uv.lock"):
            os.utime(dest / name, (0, 0))   # older than .venv's stamp: make reinstalls nothing
    return dest


def make(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """make in `folder`, with this shell's PATH (uv on it, if it is here) but not the venv's."""
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != BIN)
    env = {**env_for_pipeline(), "PATH": path}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=300)


def test_make_alone_lists_the_targets_and_installs_nothing(project, tmp_path):
    copy = make_copy(project.path, tmp_path, with_venv=False)
    proc = make(copy)
    assert proc.returncode == 0, proc.stderr
    for target in ("make repro", "make exp", "make settings", "make ui", "make push", "make pull", "make test",
                   "make docs", "make services-up"):
        assert target in proc.stdout, target
    assert not (copy / ".venv").exists() and not (copy / ".tools").exists()


def test_make_venv_builds_on_the_distributions_python_where_there_is_one(project, tmp_path):
    """/usr/bin/python3.11 (PGO and LTO, libpython linked in: about 12% less CPU than pyenv's build, see the
    benchmarks page), else python3 on PATH; PYTHON= chooses. Asked with make -n: nothing is installed."""
    copy = make_copy(project.path, tmp_path, with_venv=False)
    default = "/usr/bin/python3.11" if Path("/usr/bin/python3.11").exists() else "python3"
    for args, python in (((), default), (("PYTHON=python3.11",), "python3.11")):
        proc = make(copy, "-n", ".venv/bin/.installed", *args)
        assert proc.returncode == 0, proc.stderr
        assert f"sync --frozen --compile-bytecode --python {python} --extra dev" in proc.stdout, proc.stdout
    assert not (copy / ".venv").exists()


def test_make_user_add_without_name_installs_nothing(project, tmp_path):
    copy = make_copy(project.path, tmp_path, with_venv=False)
    proc = make(copy, "user-add")
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "error: NAME is not set: make user-add NAME=bob [GRANT=linclass-cifar10=READ]" in proc.stderr
    assert not (copy / ".venv").exists() and not (copy / ".tools").exists(), "make user-add installed first"


def test_make_remote_without_remote_writes_nothing(project, tmp_path):
    """It used to add a folder inside the clone (./dvc-remote, git-ignored) as the team's remote, in the
    .dvc/config the README says to commit: a remote no teammate reaches."""
    copy = make_copy(project.path, tmp_path, with_venv=False)
    config = (copy / ".dvc" / "config").read_bytes() if (copy / ".dvc" / "config").exists() else None
    proc = make(copy, "remote")
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert ("error: REMOTE is not set: make remote REMOTE=/shared/linclass-dvc (a folder every teammate reaches) "
            "or REMOTE=s3://bucket/path") in proc.stderr, proc.stderr
    assert ((copy / ".dvc" / "config").read_bytes() if (copy / ".dvc" / "config").exists() else None) == config
    assert not (copy / ".venv").exists() and not (copy / ".tools").exists(), "make remote installed first"


def test_make_remote_writes_a_folder_without_dots_and_a_url_as_given(project, tmp_path):
    """REMOTE=$PWD/../linclass-dvc (docs/parallel.md) went into .dvc/config as written, `..` and all."""
    copy = make_copy(project.path, tmp_path, with_venv=True)
    for remote, url in ((f"{copy}/../share/./linclass-dvc", str(tmp_path / "share" / "linclass-dvc")),
                        ("s3://team-bucket/linclass-dvc", "s3://team-bucket/linclass-dvc")):
        proc = make(copy, "remote", f"REMOTE={remote}")
        assert proc.returncode == 0, proc.stderr
        config = (copy / ".dvc" / "config").read_text()
        assert f"url = {url}\n" in config, config


@pytest.mark.parametrize("args, line", [
    (["expt"], "error: no target expt; did you mean make exp? (make help lists the targets)"),
    (["reproo", "compare"], "error: no target reproo; did you mean make repro? (make help lists the targets)"),
    (["xyz"], "error: no target xyz (make help lists the targets)"),
    (["exp", "set=train.epochs=5"], "error: make's variables are upper case: SET='...' (or OVERRIDES='...'), "
                                    "e.g. make exp SET='train.epochs=5'"),
    (["exp", "train.epochs=5"], "error: train.epochs=5 is a setting, not a make variable: "
                                "make exp SET='train.epochs=5'"),
    (["repro", "SET=train.epochs=5"], "error: make repro reads no SET or OVERRIDES (only make exp, grid-parallel "
                                      "and sweep do): make exp SET='train.epochs=5' runs an experiment with them"),
    (["compare", "OVERRIDES=train.epochs=5"], "error: make compare reads no SET or OVERRIDES (only make exp, "
     "grid-parallel and sweep do): make exp SET='train.epochs=5' runs an experiment with them"),
    (["local.env", "SET=train.epochs=5"], "error: make local.env reads no SET or OVERRIDES (only make exp, "
     "grid-parallel and sweep do): make exp SET='train.epochs=5' runs an experiment with them"),   # it said help
    (["settings", "SET=train.epochs=5"], "error: make settings lists settings and sets none: make settings "
     "KEY=train.epochs lists those starting with it; make exp SET='...' runs an experiment"),
    (["push", "REMOTE=/mnt/team"], "error: make push reads no REMOTE: make remote REMOTE=/mnt/team sets the DVC "
     "remote once, then make push and make pull use it"),   # it pushed to the remote configured before
    (["SET=train.epochs=5"], "error: make help reads no SET or OVERRIDES (only make exp, "
     "grid-parallel and sweep do): make exp SET='train.epochs=5' runs an experiment with them"),
])
def test_a_mistyped_make_target_or_variable_is_one_line_and_runs_nothing(project, tmp_path, args, line):
    """make's own "No rule to make target" named no alternative, and a SET that the target does not read (make
    repro SET=...) or a setting given as a make variable (make exp train.epochs=5) was silently ignored."""
    copy = make_copy(project.path, tmp_path, with_venv=False)
    params = (copy / "params.yaml").read_bytes()
    proc = make(copy, *args)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and line in proc.stderr, proc.stderr
    assert (copy / "params.yaml").read_bytes() == params
    assert not any((copy / name).exists() for name in (".venv", ".tools", "data", "local.env"))


def test_set_and_overrides_reach_the_commands_that_read_settings(project, tmp_path):
    """make exp OVERRIDES=... and make sweep SET=... pass the settings on (each used to ignore the other's name)."""
    copy = make_copy(project.path, tmp_path, with_venv=False)
    for target, shown in (("exp", "linclass exp train.epochs=5 loss.svm.delta=2"),
                          ("sweep", "--backend local loss.svm.delta=2 train.epochs=5"),
                          ("grid-parallel", "--backend local loss.svm.delta=2 train.epochs=5")):
        proc = make(copy, "-n", target, "SET=train.epochs=5", "OVERRIDES=loss.svm.delta=2")
        assert proc.returncode == 0 and shown in " ".join(proc.stdout.split()), proc.stdout + proc.stderr


@pytest.mark.parametrize("variables, named", [
    (["LRS=abc"], "error: --learning-rates (LRS of make sweep): 'abc' is not a number"),
    (["STRENGTHS=1e-3,x"], "error: --strengths (STRENGTHS of make sweep): 'x' is not a number"),
    (["LOSS=hinge"], "error: unknown combination hinge-l2 (--loss, --regularizer; LOSS, REG of make sweep)"),
])
def test_make_sweep_names_the_make_variable(project, tmp_path, variables, named):
    copy = make_copy(project.path, tmp_path, with_venv=True)
    params = (copy / "params.yaml").read_bytes()
    proc = make(copy, "sweep", *variables)
    assert proc.returncode != 0
    assert proc.stderr.splitlines()[0].startswith(named), proc.stderr
    assert (copy / "params.yaml").read_bytes() == params and not (copy / "data").exists()


STAND_IN_TRAIN = """import json, pathlib, yaml
p = yaml.safe_load(open('params.yaml'))
strength = p['regularizer']['l2']['strength']
pathlib.Path('metrics/train').mkdir(parents=True, exist_ok=True)
for loss in p['grid']['losses']:
    val = (0.4 if loss == 'svm' else 0.3) + strength
    json.dump({'val_accuracy': val, 'val_accuracy_low': val - 0.05, 'val_accuracy_high': val + 0.05,
               'weights_md5': f'{loss}-{strength}'}, open(f'metrics/train/{loss}-l2.json', 'w'))
"""
STAND_IN_EVALUATE = """import json, pathlib, yaml
p = yaml.safe_load(open('params.yaml'))
trained = {f'{loss}-l2': json.load(open(f'metrics/train/{loss}-l2.json')) for loss in p['grid']['losses']}
json.dump({name: {'test_accuracy': 0.25, 'test_accuracy_low': 0.2, 'test_accuracy_high': 0.3,
                  'weights_md5': t['weights_md5']} for name, t in trained.items()}, open('metrics/test.json', 'w'))
json.dump({'champion': max(trained, key=lambda n: trained[n]['val_accuracy']), 'val': {}, 'test': {}},
          open('metrics/champion.json', 'w'))
"""


def test_experiments_shows_each_revision_s_own_champion_and_the_settings_that_differ(tmp_path):
    """`linclass experiments` on real DVC experiments, with stand-ins of train@ and evaluate that write the
    pipeline's metrics files. A grid point (an experiment that ran the train stage only) showed its baseline's
    champion and the champion's accuracies, of a model its grid does not even have: now '-' and a line saying
    why; a revision that evaluated shows its own champion. The columns are named as `linclass compare`'s
    (revision, val_accuracy (95%), test_accuracy (95%)); of the settings only those that differ are shown."""
    env = {**env_for_pipeline(), "COLUMNS": "300"}
    (tmp_path / "conf").mkdir()
    (tmp_path / "params.yaml").write_text("grid:\n  losses: [svm, softmax]\n  regularizers: [l2]\n"
                                          "regularizer:\n  l2:\n    strength: 0.001\ntrain:\n  epochs: 40\n")
    (tmp_path / "train.py").write_text(STAND_IN_TRAIN)
    (tmp_path / "evaluate.py").write_text(STAND_IN_EVALUATE)
    python = BIN / "python"
    (tmp_path / "dvc.yaml").write_text(
        f"stages:\n  train:\n    cmd: {python} train.py\n    deps: [train.py]\n    params: [grid, regularizer]\n"
        "    metrics:\n    - metrics/train:\n        cache: false\n"
        f"  evaluate:\n    cmd: {python} evaluate.py\n    deps: [evaluate.py, metrics/train]\n    params: [grid]\n"
        "    metrics:\n    - metrics/test.json:\n        cache: false\n    - metrics/champion.json:\n"
        "        cache: false\n")
    dvc = str(BIN / "dvc")
    for argv in (["git", "init", "-q", "-b", "main"], [dvc, "init", "-q"], [dvc, "repro", "-q"], ["git", "add", "-A"],
                 ["git", "commit", "-q", "-m", "baseline"],
                 # what a point of `linclass grid` runs: its one model's train stage, not evaluate
                 [dvc, "exp", "run", "-q", "--temp", "-n", "grid-softmax-l2", "-S", "grid.losses=[softmax]",
                  "-S", "regularizer.l2.strength=0.01", "train"],
                 [dvc, "exp", "run", "-q", "--temp", "-n", "stronger", "-S", "regularizer.l2.strength=0.02"],
                 # a later commit (make remote's, say): the experiments of the one before stay listed
                 ["git", "commit", "-q", "--allow-empty", "-m", "later"]):
        subprocess.run(argv, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)
    proc = subprocess.run([LINCLASS, "experiments"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["revision", "created", "champion", "val_accuracy", "(95%)", "test_accuracy", "(95%)",
                                "grid.losses", "regularizer.l2.strength"], proc.stdout
    rows = {line.split()[0]: line for line in lines[1:] if line.split() and not line.startswith("(")}
    assert rows["grid-softmax-l2"].split()[3:6] == ["-", "-", "-"], proc.stdout   # no champion, no accuracies
    assert rows["grid-softmax-l2"].split()[-2:] == ["[softmax]", "0.01"], proc.stdout
    assert "svm-l2 0.4200 [0.3700, 0.4700] 0.2500 [0.2000, 0.3000]" in rows["stronger"], proc.stdout
    assert "svm-l2 0.4010 [0.3510, 0.4510] 0.2500 [0.2000, 0.3000]" in rows["main"], proc.stdout
    baseline = subprocess.run(["git", "rev-parse", "--short", "HEAD~1"], cwd=tmp_path, capture_output=True,
                              text=True).stdout.strip()
    assert any(name.startswith(baseline[:7]) for name in rows), proc.stdout   # the commit of the experiments
    assert "champion '-': that revision did not evaluate its own models" in proc.stdout


@pytest.mark.parametrize("argv, message", [
    # the command of docs/parallel.md before any sweep ran: it replaced the committed table with an empty one
    (["--prefix", "sweep-softmax-l2-", "--csv", "sweeps/softmax-l2.csv"],
     "error: no finished experiment named sweep-softmax-l2-*: sweeps/softmax-l2.csv not written"),
    (["--csv", "elsewhere/table.csv"], "error: no finished experiment: elsewhere/table.csv not written"),
    (["--features", "hog"], "error: unknown input --features 'hog'; allowed: pixels, hog_hist"),
])
def test_a_table_of_no_experiment_or_of_an_unknown_input_is_one_line_and_writes_nothing(project, argv, message):
    committed = (project.path / "sweeps" / "softmax-l2.csv").read_bytes()
    proc = subprocess.run([LINCLASS, "table", *argv], cwd=project.path, env=env_for_pipeline(), capture_output=True,
                          text=True)
    assert proc.returncode == 1 and proc.stderr == message + "\n", proc.stderr
    assert (project.path / "sweeps" / "softmax-l2.csv").read_bytes() == committed
    assert not (project.path / "elsewhere").exists()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=project.path, capture_output=True, text=True)
    assert status.stdout == "", status.stdout


@pytest.mark.parametrize("state", [None, '{"mlflow_pid": null, "local_postgres": false}'])
def test_services_down_with_no_mlflow_recorded_stops_nothing_and_succeeds(tmp_path, state):
    """No stack, or one whose MLflow is already down (what `down` itself records): psutil.Process(None) is the
    calling process, and `services down` sent itself SIGTERM (exit 143, no output)."""
    folder = tmp_path / "services"
    if state is not None:
        folder.mkdir()
        (folder / "state.json").write_text(state)
    env = {**env_for_pipeline(), "LINCLASS_SERVICES_DIR": str(folder)}
    proc = subprocess.run([LINCLASS, "services", "down"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert proc.stdout == f"stack down (data kept in {folder})\n", proc.stdout


WITHOUT_RAY = """
import sys
sys.modules["ray"] = None   # this environment as `make venv` leaves it: no Ray (find_spec None, import fails)
from linclass.cli import main
sys.argv = ["linclass", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("argv", [["grid", "--backend", "ray"],
                                  ["sweep", "--loss", "svm", "--regularizer", "l2", "--learning-rates", "0.01",
                                   "--strengths", "1e-3", "--backend", "ray"]])
def test_the_ray_backend_without_ray_is_one_line_before_anything_starts(project, argv):
    """Without the cluster extra, BACKEND=ray was a traceback of ModuleNotFoundError, after the warm interpreter
    had started."""
    before = snapshot(project.path)
    proc = subprocess.run([str(BIN / "python"), "-c", WITHOUT_RAY, *argv], cwd=project.path, env=env_for_pipeline(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == ("error: Ray is not installed in this environment: `make .venv/bin/.cluster` installs it "
                           "(make cluster-up and BACKEND=ray with make install it themselves)\n"), proc.stderr
    assert snapshot(project.path) == before


def test_services_down_leaves_alone_a_process_that_took_the_pid_of_the_stacks_mlflow(tmp_path):
    """After a reboot or a crash, state.json's mlflow_pid may be another process's: `down` stopped it and
    every process it had started. The pid counts only with the start time recorded beside it."""
    import json

    import psutil

    other = subprocess.Popen(["sleep", "300"])
    try:
        folder = tmp_path / "services"
        folder.mkdir()
        started = psutil.Process(other.pid).create_time()
        (folder / "state.json").write_text(json.dumps({"mlflow_pid": other.pid, "mlflow_started": started - 1000,
                                                       "local_postgres": False}))
        env = {**env_for_pipeline(), "LINCLASS_SERVICES_DIR": str(folder)}
        proc = subprocess.run([LINCLASS, "services", "down"], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert other.poll() is None, "services down stopped a process that is not the stack's MLflow"
        assert json.loads((folder / "state.json").read_text())["mlflow_pid"] is None
    finally:
        other.kill()
        other.wait()


def test_make_params_names_the_settings_it_replaces(tmp_path):
    """params.yaml written by `make exp SET=...` (or `dvc exp apply`) holds settings conf/ does not: `make params`
    (after, say, a new experiment name in conf/) puts conf/'s back, and the
    stages they feed train again; it says which, old and new value, and nothing for a key left as it was."""
    project = make_project(tmp_path / "project")
    params = project.path / "params.yaml"
    params.write_text(params.read_text().replace("  epochs: 40\n", "  epochs: 3\n"))
    local = project.path / "conf" / "tracking" / "local.yaml"
    local.write_text(local.read_text().replace("experiment: linclass-cifar10", "experiment: linclass-bob"))
    proc = project.run(LINCLASS, "config")
    lines = proc.stdout.splitlines()
    assert lines == ["params.yaml written from conf/", "  changed train.epochs: 3 -> 40",
                     "  changed tracking.experiment: 'linclass-cifar10' -> 'linclass-bob'"], proc.stdout
    assert project.run(LINCLASS, "config").stdout.splitlines() == ["params.yaml written from conf/"]


@pytest.mark.parametrize("grant, message", [
    ("linclass-cifar10=WRITE", "error: --grant 'linclass-cifar10=WRITE': permission 'WRITE' is not one of READ, EDIT, "
                               "MANAGE, NO_PERMISSIONS"),
    ("=READ", "error: --grant '=READ': expected EXPERIMENT=PERMISSION")])
def test_a_bad_grant_is_refused_before_the_user_is_created(project, tmp_path, grant, message):
    """`make user-add NAME=erin GRANT=linclass-cifar10=WRITE` created erin and her .env, then refused the grant:
    the grant is checked first, before the stack is even asked (here there is none), and nothing is written."""
    env = {**project.env, "LINCLASS_SERVICES_DIR": str(tmp_path / "services")}
    proc = project.run(LINCLASS, "services", "add-user", "erin", "--grant", grant, check=False, env=env)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [message], proc.stderr
    assert not (tmp_path / "services").exists()


def test_a_sweep_rebuilds_the_report_only_when_the_workspace_has_its_inputs(tmp_path, monkeypatch, capsys):
    """A fresh clone of a commit with dvc.lock (a teammate's, before `make pull`) has the report in its lock but
    not reports/evaluation: `make sweep` ended with DVC's 'No such file or directory' and exit 1 after every
    point had trained. The report is rebuilt only when its inputs are here, else one line says why not."""
    from linclass.cli import report_to_rebuild

    monkeypatch.chdir(tmp_path)
    lock = {"hyperparameter_map": {}, "report": {"deps": [{"path": "pipeline/report.py"},
                                                          {"path": "reports/evaluation"},
                                                          {"path": "reports/hyperparameter_map"}]}}
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "report.py").write_text("")
    assert report_to_rebuild(lock) == []
    assert capsys.readouterr().out.strip() == ("report not rebuilt: the workspace lacks reports/evaluation "
                                               "(make pull, or make repro, brings them)")
    (tmp_path / "reports" / "evaluation").mkdir(parents=True)   # hyperparameter_map's own output may be missing
    assert report_to_rebuild(lock) == ["report"]
    assert report_to_rebuild({"hyperparameter_map": {}}) == []


@pytest.mark.parametrize("uri", [None, "file:{root}/mlruns"])
def test_reap_in_a_clone_that_never_ran_creates_no_store(tmp_path, uri):
    """`make reap` in a fresh clone created an empty MLflow store (mlflow.db and its lock) to find no run in it.
    Now it says there is no store and creates nothing; with a store it reaps as before (tests/test_kill_resume.py)."""
    project = make_project(tmp_path / "p")
    env = {**project.env, **({"MLFLOW_TRACKING_URI": uri.format(root=project.path)} if uri else {})}
    before = snapshot(project.path)
    proc = project.run(LINCLASS, "reap", env=env)
    store = project.path / ("mlflow.db" if uri is None else "mlruns")
    assert proc.stdout.strip() == f"no MLflow store at {store}: nothing to reap (nothing was created)", proc.stdout
    assert snapshot(project.path) == before, "reap created files"
