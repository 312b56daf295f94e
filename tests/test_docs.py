"""The commands of the README, of every docs/*.md page and of CONTRIBUTING.md, run as written from a fresh shell
(venv not activated) in a copy of the project, on the synthetic archive with a shrunk conf/.

Every command of every ```bash block must be listed below: RUN (run here, in this order) or SKIP (with the
reason and, where there is one, the test that runs it for real). A new command in neither list fails the
test, so the docs cannot drift unnoticed. Placeholders that name a place on another machine (a shared
folder, your repository) are replaced by temporary ones here (PLACES).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SMALL, free_port, gone, make_project, shrink_conf, warm_log

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "CONTRIBUTING.md"]

# command -> what must hold afterwards: "ok" (exit 0), or a text its failing output must show
RUN = {
    "make settings": "ok",
    "make settings KEY=train": "ok",
    ".venv/bin/linclass config --check regularizer.l1.strength=0.001": "ok",
    "make venv": "ok",
    "make repro": "ok",
    ".venv/bin/dvc metrics show": "ok",
    "make compare": "ok",
    "make lecture": "ok",
    "make experiments": "ok",
    ".venv/bin/linclass table --prefix sweep-softmax-l2-lr": "ok",
    "make exp SET='regularizer.l2.strength=0.01'": "ok",
    "make params && make repro": "ok",
    # sharing, the simple recipe: a folder as the DVC remote, a bare repository as "your repository"
    "make remote REMOTE=/mnt/team/linclass-dvc": "ok",
    'git add .dvc/config && git commit -m "team DVC remote"': "ok",
    'git add .dvc/config params.yaml dvc.lock metrics reports && git commit -m "results" && git push': "ok",
    "make push": "ok",
    "git clone <your repository> linclass && cd linclass": "ok",
    "make pull": "ok",
    # servers: started, asked, stopped (PORT from the environment, as make lets it)
    "make ui": "serves",
    "make server": "serves",
    ".venv/bin/pre-commit install": "ok",
}
SKIP = {
    "make test": "this is the test suite",
    "make test-fast": "the test suite without the slow tests",
    "make lint": "CI runs it first (.ci/run); it checks the whole tree, not a copy",
    "make docs": "test_the_site_builds_strictly below runs mkdocs build --strict (CI: make docs in .ci/run)",
    "uv lock": "rewrites uv.lock; make lint checks it matches pyproject.toml (uv lock --check)",
    "make venv-team": "installs the team extra into .venv (.ci/run does it)",
    "make exp SET='studies.regularization_path.train_subset=500 studies.regularization_path.epochs=300 "
    "train.lr_decay=1.0'": "retrains the 16 models and the 36 runs of the path (300 epochs each); "
        "the make exp above runs the same way there and back",
    "make exp SET='regularizer.l2.strength=0.1'": "the same as make exp SET='regularizer.l2.strength=0.01', "
        "run above (and back), at another strength",
    "make exp SET='train.epochs=20 regularizer.l2.strength=0.01'": "make exp SET='regularizer.l2.strength=0.01', "
        "run above (and back), with a second setting (which retrains every model); tests/test_cli.py checks that "
        "make passes several settings on, and each point of tests/test_sweep.py runs with two",
    "make .venv/bin/.cluster": "installs the cluster extra into .venv (.ci/run does it)",
    "git clone <repository> linclass && cd linclass": "the same as the README's clone, which runs",
    "export LINCLASS_DATA_URL=file:///data/cifar-10-python.tar.gz": "a placeholder path; the fixture writes the same "
        "variable into local.env, and test_switching_to_another_copy_of_the_data_retrains_nothing reads another copy",
    "export LINCLASS_DATA_URL=https://mirror.example/cifar-10-python.tar.gz": "a placeholder mirror",
    "printf 'LINCLASS_DATA_URL=file:///abs/path/cifar-10-python.tar.gz\\nLINCLASS_DATA_MD5=<md5sum of it>\\n' "
    "> local.env": "placeholders; the fixture writes the same lines for its archive",
    ".venv/bin/dvc repro -f download && .venv/bin/dvc repro":
        "test_switching_to_another_copy_of_the_data_retrains_nothing",
    'git add params.yaml dvc.lock metrics reports && git commit -m "results" && git push':
        "the README's results commit without .dvc/config, run above (a second one has nothing to commit)",
    "make grid-parallel JOBS=2": "9 queued experiments (8 on pixels, 1 for the features); tests/test_parallel.py",
    "make sweep LOSS=softmax REG=l2 LRS=0.01,0.02,0.05 STRENGTHS=1e-4,1e-3,1e-2 JOBS=2":
        "9 trainings; tests/test_sweep.py runs a sweep",
    "make sweep LOSS=svm REG=l2 LRS=0.01,0.03,0.1 STRENGTHS=1e-4,1e-3,1e-2 FEATURES=hog_hist":
        "9 trainings; tests/test_features_pipeline.py runs a sweep on the features",
    ".venv/bin/linclass table --prefix sweep-softmax-l2-lr --csv sweeps/softmax-l2.csv":
        "needs a sweep's experiments; tests/test_sweep.py writes a table",
    # Ray: tests/test_ray.py runs the same steps on a real two-node cluster on loopback
    "make cluster-up": "starts Ray nodes; tests/test_ray.py",
    "make server &": "the same server as `make server`, in the background; run above",
    "export MLFLOW_TRACKING_URI=http://127.0.0.1:5000 MLFLOW_TRACKING_TOKEN=$(cat mlflow-server/token)":
        "an export for the shell that follows; tests/test_team.py and tests/test_ray.py log with the token",
    'make remote REMOTE=$PWD/../linclass-dvc && git commit -m "team DVC remote" .dvc/config':
        "writes outside the project; tests/test_ray.py uses a directory remote",
    "git push origin HEAD": "needs the Ray set-up's git remote; tests/test_ray.py",
    "make sweep BACKEND=ray LOSS=softmax REG=l2 LRS=0.01,0.02,0.05 STRENGTHS=1e-4,1e-3,1e-2":
        "9 trainings on Ray; tests/test_ray.py",
    "make grid-parallel BACKEND=ray": "trainings on Ray; tests/test_ray.py",
    "make cluster-down": "follows make cluster-up; tests/test_ray.py",
    ".venv/bin/ray start --head --port=6379 --num-cpus=<cores>": "placeholders for a real cluster",
    ".venv/bin/ray start --address=<head-host>:6379 --num-cpus=<cores>": "placeholders for a real cluster",
    "export RAY_ADDRESS=<head-host>:6379": "a placeholder host",
    "export MLFLOW_TRACKING_URI=http://<server-host>:5000 MLFLOW_TRACKING_TOKEN=<mlflow-server/token on that host>":
        "a placeholder host and token",
    "make sweep BACKEND=ray LOSS=svm REG=l2 LRS=0.005,0.01,0.02 STRENGTHS=1e-4,1e-3,1e-2": "a real cluster",
    # the team stack: tests/test_stack.py and tests/test_stack_attacks.py start it (PostgreSQL, MLflow with
    # logins, a DVC remote) and run these steps for real
    "make services-up": "starts PostgreSQL and an MLflow server; tests/test_stack.py",
    "make services-status": "follows make services-up; tests/test_stack.py",
    "make services-down": "follows make services-up; tests/test_stack.py",
    "make user-add NAME=bob": "needs the stack; tests/test_stack.py adds users",
    "make user-add NAME=alice": "needs the stack; tests/test_stack.py adds users",
    "make user-add NAME=carol GRANT=linclass-cifar10=READ": "needs the stack; tests/test_stack.py checks a READ grant",
    "source /path/to/bob.env": "a placeholder path; tests/test_stack.py",
    "export LINCLASS_BACKEND_STORE=postgresql://mlflow:<password>@db.example.internal:5432/mlflow": "a placeholder",
    "export LINCLASS_ARTIFACTS=s3://team-bucket/mlflow": "a placeholder bucket",
    "make remote REMOTE=s3://team-bucket/linclass-dvc":
        "a placeholder bucket; tests/test_stack.py pushes to a local S3",
    ".venv/bin/dvc remote modify team endpointurl https://s3.example.internal": "a placeholder host",
    "sudo usermod -aG linclass-team alice": "changes this machine's accounts; tests/test_stack_attacks.py",
    ".venv/bin/dvc remote add --default --force team /path/to/project/.services/dvc-remote": "a placeholder path",
    ".venv/bin/dvc remote modify team shared group": "follows the line above; tests/test_stack_attacks.py",
    ".venv/bin/dvc remote modify team verify true": "follows the line above; tests/test_remote.py (make remote)",
    "make services-up LINCLASS_ALLOWED_HOSTS=team-box.example.org LINCLASS_TRUSTED_PROXY=127.0.0.1 "
    "LINCLASS_PUBLIC_URL=https://team-box.example.org": "needs a TLS proxy; tests/test_stack_attacks.py",
}


def page_commands(text: str) -> list[str]:
    """The commands of the ```bash blocks, continuation lines joined, trailing `# comments` dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            line = re.sub(r"\s+", " ", line)
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def all_commands() -> list[str]:
    return list(dict.fromkeys(c for page in PAGES for c in page_commands(page.read_text())))


def test_every_command_of_the_docs_is_run_or_skipped_with_a_reason():
    commands = all_commands()
    unknown = [c for c in commands if c not in RUN and c not in SKIP]
    assert not unknown, f"commands of the docs that tests/test_docs.py neither runs nor skips: {unknown}"
    stale = [c for c in (*RUN, *SKIP) if c not in commands]
    assert not stale, f"no longer in the docs (remove them here): {stale}"
    assert not set(RUN) & set(SKIP)
    assert all(reason.strip() for reason in SKIP.values())


def test_every_client_of_an_http_tracking_server_is_given_its_token():
    """`make server` answers only its token: an export of an http MLFLOW_TRACKING_URI without MLFLOW_TRACKING_TOKEN
    (docs/parallel.md's real cluster) sends the sweep to a 401. The team stack's clients source their env file."""
    tokenless = [c for c in all_commands() if re.search(r"MLFLOW_TRACKING_URI=https?://", c)
                 and "MLFLOW_TRACKING_TOKEN=" not in c]
    assert not tokenless, tokenless


def test_the_readme_stays_short_with_the_four_tasks_and_links_that_exist():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for task in ("## Run it", "## Change a setting and rerun", "## Compare runs in MLflow", "## Share with a teammate"):
        assert task in text, task
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to {target}, which does not exist"
    assert "../shared" not in text and "local-data" not in text   # the project's own machines: CONTRIBUTING.md


def test_the_layout_in_the_development_page_names_every_module_where_it_is():
    """docs/development.md's tree of src/linclass/: each module and package listed under its own folder, once."""
    text = (ROOT / "docs" / "development.md").read_text()
    block = text.split("## The layout of `src/linclass`", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    listed, folder = set(), ""
    for line in block.splitlines()[1:]:   # below the root line, src/linclass/
        name = line.split()[0] if line.strip() else ""
        depth = (len(line) - len(line.lstrip())) // 2
        if depth == 1:   # a top-level module or package of linclass; anything further left is outside it
            folder = name if name.endswith("/") else ""
            listed.add(name.rstrip("/"))
        elif depth == 2 and folder and name.endswith(".py"):
            listed.add(folder + name)
    source = ROOT / "src" / "linclass"
    actual = {str(p.relative_to(source)) for p in source.rglob("*.py") if p.name != "__init__.py"}
    actual |= {p.name for p in source.iterdir() if (p / "__init__.py").exists()}
    assert listed == actual, f"listed, not there: {sorted(listed - actual)}; not listed: {sorted(actual - listed)}"


def test_the_site_builds_strictly(tmp_path):
    mkdocs = ROOT / ".venv" / "bin" / "mkdocs"
    if not mkdocs.exists():
        pytest.skip("the docs extra is not installed: make docs installs it")
    proc = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = (tmp_path / "site" / "configuration.html").read_text()
    assert "<code>train.epochs</code>" in page and "settings-table" not in page   # the table was generated


def fresh_shell_env(home: Path) -> dict:
    """What a new login shell has: no venv on PATH, no VIRTUAL_ENV, no DVC/MLflow settings."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
            "DVC_NO_ANALYTICS": "1", "OPENBLAS_NUM_THREADS": "1",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


SHRINK = (*SMALL, "train.epochs=2", "grid.losses=[svm]", "grid.regularizers=[l2]")
USER_FILES = ("Makefile", "README.md", "pyproject.toml", "uv.lock", ".pre-commit-config.yaml")


def link_venv(path: Path) -> None:
    """The worktree's .venv in a copy, without make reinstalling it: pyproject.toml and uv.lock older than it;
    and uv where make installed it (.tools, about 5 s of CPU to install again)."""
    (path / ".venv").symlink_to(ROOT / ".venv")
    for name in ("pyproject.toml", "uv.lock"):
        os.utime(path / name, (0, 0))
    linked = [".venv"]
    if (ROOT / ".tools").is_dir():
        (path / ".tools").symlink_to(ROOT / ".tools")
        linked.append(".tools")
    with open(path / ".git" / "info" / "exclude", "a") as f:
        f.write("".join(f"{name}\n" for name in linked))


@pytest.fixture(scope="module")
def project(tmp_path_factory, synthetic_archive):
    """A copy of the project with what a user clones (Makefile, README, pyproject.toml, uv.lock) committed,
    .venv linked, conf/ shrunk, this machine's data source in local.env (the synthetic archive), and a bare
    repository as its origin; nothing run yet."""
    path, md5 = synthetic_archive
    base = tmp_path_factory.mktemp("docs")
    project = make_project(base / "project")
    for name in USER_FILES:
        (project.path / name).write_bytes((ROOT / name).read_bytes())
    project.git_commit("what a user clones")
    link_venv(project.path)
    (project.path / "local.env").write_text(f"LINCLASS_DATA_URL={path.as_uri()}\nLINCLASS_DATA_MD5={md5}\n")
    shrink_conf(project, SHRINK)   # params.yaml = the shrunk conf/, committed: "as committed" below means this
    project.run("git", "init", "-q", "--bare", "-b", "main", str(base / "origin.git"))   # HEAD: main, as on a host
    project.run("git", "remote", "add", "origin", str(base / "origin.git"))
    project.run("git", "push", "-q", "-u", "origin", "main")
    project.env = fresh_shell_env(tmp_path_factory.mktemp("home"))
    project.places = {"/mnt/team/linclass-dvc": str(base / "share" / "linclass-dvc"),
                      "<your repository>": str(base / "origin.git")}
    (base / "share").mkdir()
    return project


def assert_stages_ran_warm(path: Path) -> None:
    """`make repro` started its stages from a warm interpreter (the last one at least: the first ones may start
    before it is ready), declined none, and stopped it."""
    lines, server, _ = warm_log(path)
    assert any(line.endswith("exit 0: pipeline/report.py") for line in lines), lines
    assert not [line for line in lines if line.startswith("declined")], lines
    assert gone(server)


def sh(cwd: Path, env: dict, command: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def show(proc) -> str:
    return f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def params_changes(before: str, after: str) -> dict:
    from linclass.config import flatten

    old, new = flatten(yaml.safe_load(before)), flatten(yaml.safe_load(after))
    return {key: new.get(key) for key in old.keys() | new.keys() if old.get(key) != new.get(key)}


def serve_and_ask(cwd: Path, env: dict, command: str, path: str) -> str:
    """Start a server command (PORT from the environment), wait for its first line and for `path` to answer,
    stop its whole process group; the first line it printed."""
    port = free_port()
    proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, env={**env, "PORT": str(port)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not any("http://" in line for line in lines):
            line = proc.stdout.readline()
            assert line, f"{command} ended: {''.join(lines)}"
            lines.append(line)
        first = next(line for line in lines if "http://" in line)
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
                    assert answer.status == 200
                    return first
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, f"{command}: {''.join(lines)}"
                time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_the_docs_commands_work_from_a_fresh_shell(project):
    committed = (project.path / "params.yaml").read_text()
    clone = project.path / "linclass"
    for command in RUN:
        cwd = clone if command == "make pull" else project.path
        if command == "make pull":
            link_venv(clone)
        if RUN[command] == "serves":
            first = serve_and_ask(cwd, project.env, command, "/health" if command == "make server" else "/")
            if command == "make ui":   # the link to the training runs, in the model-training view
                assert "#/experiments/" in first and "workflowType=machine_learning" in first, first
            continue
        actual = command
        for placeholder, place in project.places.items():
            actual = actual.replace(placeholder, place)
        proc = sh(cwd, project.env, actual)
        assert proc.returncode == 0, f"{command}: {show(proc)}"
        if command.startswith("make exp SET="):
            # as make repro, it ends with the models' accuracies (DVC's own last line named none), then the way on
            assert "metrics/test.json: " in proc.stdout, proc.stdout[-3000:]
            assert proc.stdout.rstrip().splitlines()[-1].startswith("beside the models before it: make compare"), \
                proc.stdout[-3000:]
            # DVC's design: the workspace holds the experiment just run, i.e. exactly its settings
            sets = dict(item.split("=", 1) for item in command.split("SET=", 1)[1].strip("'").split())
            changes = params_changes(committed, (project.path / "params.yaml").read_text())
            assert changes == {key: yaml.safe_load(value) for key, value in sets.items()}, changes
            back = sh(project.path, project.env, "git checkout params.yaml && make repro")   # the README's way back
            assert "Running stage 'train@" not in back.stdout, show(back)   # from the run-cache
            assert back.returncode == 0, show(back)
        else:
            # every other command leaves params.yaml as committed (the data source is not a parameter)
            changes = params_changes(committed, (project.path / "params.yaml").read_text())
            assert changes == {}, f"{command} changed params.yaml: {changes}"
        if command == "make repro":
            assert (project.path / "reports" / "report.html").is_file()
            assert "test_accuracy" in proc.stdout, proc.stdout[-2000:]
            # as the README says, it ends with every model's accuracies (a header line, then one row per model)
            models = json.loads((project.path / "metrics" / "test.json").read_text())
            assert proc.stdout.rstrip().splitlines()[-len(models) - 2].startswith("metrics/test.json: "), \
                proc.stdout[-3000:]
            assert_stages_ran_warm(project.path)
        if command == "make settings KEY=train":
            assert "\ntrain.epochs = " in proc.stdout and "data." not in proc.stdout, proc.stdout   # after make's echo
        if command == "make compare":
            assert "svm-l2" in proc.stdout, proc.stdout
        if command == ".venv/bin/pre-commit install":
            assert (project.path / ".git" / "hooks" / "pre-commit").is_file()
        if command == "make push":
            assert "not committed" not in proc.stderr, proc.stderr   # dvc.lock and metrics/ were committed before
        if command == "make pull":
            assert "Data and pipelines are up to date." in proc.stdout, show(proc)
            weights = "models/svm-l2/W.npy"
            assert (clone / weights).read_bytes() == (project.path / weights).read_bytes()
    status = sh(project.path, project.env, ".venv/bin/dvc status")
    assert "Data and pipelines are up to date" in status.stdout, show(status)


@pytest.mark.slow
def test_switching_to_another_copy_of_the_data_retrains_nothing(project, tmp_path):
    """A copy with other bytes (same images): download and preprocess rerun, training does not."""
    if not (project.path / "dvc.lock").exists():
        assert sh(project.path, project.env, "make repro").returncode == 0
    archive = project.path / "data" / "raw" / "cifar-10-python.tar.gz"
    repacked = tmp_path / "repack.tar.gz"
    repacked.write_bytes(gzip.compress(gzip.decompress(archive.read_bytes()), compresslevel=1, mtime=1))
    md5 = hashlib.md5(repacked.read_bytes()).hexdigest()
    (project.path / "local.env").write_text(f"LINCLASS_DATA_URL={repacked.as_uri()}\nLINCLASS_DATA_MD5={md5}\n")
    weights = (project.path / "models" / "svm-l2" / "W.npy").read_bytes()
    proc = sh(project.path, project.env, ".venv/bin/dvc repro -f download && .venv/bin/dvc repro")
    assert proc.returncode == 0, show(proc)
    assert "Running stage 'preprocess'" in proc.stdout, show(proc)
    assert "Running stage 'train@" not in proc.stdout, show(proc)
    assert md5 in (project.path / "dvc.lock").read_text()   # the lineage names the file actually read
    assert (project.path / "models" / "svm-l2" / "W.npy").read_bytes() == weights
