"""The README's commands, run as written from a fresh shell (venv not activated) in a copy of the project.

Every command of every ```bash block must be listed below: RUN (run here, in order, on the synthetic
archive with a shrunk conf/) or SKIP (with the reason and, where there is one, the test that covers it).
A new README command that is in neither list fails the test, so the README cannot drift unnoticed.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SMALL, make_project, shrink_conf

README = ROOT / "README.md"

# command (after the README's own comment is stripped) -> what must be true afterwards
RUN = {
    "make repro": "ok",
    "make params && .venv/bin/dvc repro": "ok",
    ".venv/bin/dvc exp run -S regularizer.l1.strength=0.001": "ok",
    ".venv/bin/dvc exp run -S regularizer.l2.strength=-1": "fails, nothing changed",
    "git status --short params.yaml": "ok",
    "make compare": "ok",
    "make experiments": "ok",
}
SKIP = {
    "make test": "this is the test suite",
    ".venv/bin/dvc exp run -S train=smoke": "retrains the grid; the -S mechanism is run above",
    ".venv/bin/dvc exp run -S loss.svm.learning_rate=0.01": "retrains the 4 SVM stages; the -S mechanism is run above, "
        "test_pipeline checks which stages a per-loss rate reruns",
    ".venv/bin/dvc exp run -S 'grid.losses=[svm,softmax,squared_svm]'": "trains two more losses; tests/test_pipeline.py",
    "export LINCLASS_DATA_URL=https://mirror.example/cifar-10-python.tar.gz": "a placeholder mirror; the fixture writes local.env",
    "printf 'LINCLASS_DATA_URL=file:///abs/path/cifar-10-python.tar.gz\\nLINCLASS_DATA_MD5=<md5sum of it>\\n' > local.env":
        "placeholders; the fixture writes the same lines for its archive",
    ".venv/bin/dvc repro -f download && .venv/bin/dvc repro": "test_switching_to_another_copy_of_the_data_retrains_nothing",
    "make local-data": "needs ../shared/data; tests/test_real_data.py reads that copy",
    "make sweep LOSS=softmax REG=l2 LRS=0.01,0.02,0.05 STRENGTHS=1e-4,1e-3,1e-2 JOBS=2": "9 trainings; tests/test_sweep.py runs a 2-point sweep",
    ".venv/bin/dvc exp run --queue -n sweep-softmax-l2 -S 'grid.losses=[softmax]' -S 'grid.regularizers=[l2]' "
    "-S 'loss.softmax.learning_rate=0.01,0.02,0.05' -S 'regularizer.l2.strength=0.0001,0.001,0.01' evaluate":
        "what make sweep runs; tests/test_sweep.py",
    ".venv/bin/dvc exp run --run-all -j 2": "what make sweep runs; tests/test_sweep.py",
    "make grid-parallel JOBS=2": "8 queued experiments; tests/test_parallel.py",
    "export MLFLOW_TRACKING_URI=http://<server-host>:5000": "a placeholder host; tests/test_team.py",
    "make remote REMOTE=/mnt/team/linclass-dvc": "a placeholder folder; tests/test_team.py",
    'git add .dvc/config && git commit -m "team DVC remote"': "follows make remote",
    "make push": "needs the team remote; tests/test_team.py",
    "git clone <repo> linclass && cd linclass": "a placeholder repository",
    "make pull": "needs the team remote; tests/test_team.py",
    # the Ray cluster: tests/test_ray.py runs the same steps on a real two-node cluster on loopback
    "make cluster-up": "starts Ray nodes; tests/test_ray.py",
    "make server &": "a long-running server; tests/test_ray.py starts its own",
    "export MLFLOW_TRACKING_URI=http://127.0.0.1:5000": "follows make server; tests/test_ray.py",
    "make remote REMOTE=$PWD/../linclass-dvc": "writes outside the project; tests/test_ray.py uses a directory remote",
    "git init --bare ../linclass.git && git remote add origin ../linclass.git": "writes outside the project; tests/test_ray.py",
    'git commit -m "team DVC remote" .dvc/config && git push origin HEAD': "follows make remote; tests/test_ray.py",
    "make sweep BACKEND=ray LOSS=softmax REG=l2 LRS=0.01,0.02,0.05 STRENGTHS=1e-4,1e-3,1e-2": "9 trainings on Ray; tests/test_ray.py sweeps 4 points",
    "make grid-parallel BACKEND=ray": "8 trainings on Ray; tests/test_ray.py",
    "make cluster-down": "follows make cluster-up; tests/test_ray.py",
    "ray start --head --port=6379 --num-cpus=<cores>": "placeholders for a real cluster",
    "ray start --address=<head-host>:6379 --num-cpus=<cores>": "placeholders for a real cluster",
    "export RAY_ADDRESS=<head-host>:6379": "a placeholder host",
    "make sweep BACKEND=ray LOSS=svm REG=l2 LRS=0.005,0.01,0.02 STRENGTHS=1e-4,1e-3,1e-2": "a real cluster; tests/test_ray.py",
    # the team stack: tests/test_stack.py starts it and runs these steps for real (PostgreSQL, MLflow with
    # logins, a DVC remote, two clones)
    "make services-up": "starts PostgreSQL and an MLflow server; tests/test_stack.py",
    "make services-status": "follows make services-up; tests/test_stack.py",
    "make services-down": "follows make services-up; tests/test_stack.py",
    "make user-add NAME=bob": "needs the stack; tests/test_stack.py adds users",
    "make user-add NAME=carol GRANT=linclass-cifar10=READ": "needs the stack; tests/test_stack.py checks a READ grant",
    "source /path/to/bob.env": "a placeholder path",
    "dvc remote add --default team /path/to/.services/dvc-remote": "a placeholder path; tests/test_stack.py",
    "dvc repro": "the pipeline against the stack; tests/test_stack.py",
    'dvc push --run-cache && git add -A && git commit -m "results" && git push': "needs a git remote; tests/test_stack.py",
    "git pull && dvc pull --run-cache && dvc status": "needs a git remote; tests/test_stack.py (clone B)",
    "export LINCLASS_BACKEND_STORE=postgresql://mlflow:<password>@db.example.internal:5432/mlflow": "a placeholder host",
    "export LINCLASS_AUTH_STORE=postgresql://mlflow:<password>@db.example.internal:5432/mlflow_auth": "a placeholder host",
    "export LINCLASS_ARTIFACTS=s3://team-bucket/mlflow": "a placeholder bucket",
    "dvc remote add --default team s3://team-bucket/linclass-dvc": "a placeholder bucket; tests/test_stack.py pushes to moto's S3",
    "dvc remote modify team endpointurl https://s3.example.internal": "a placeholder host",
    "dvc push --run-cache": "needs the S3 remote; tests/test_stack.py pushes to moto's S3",
}


def readme_commands(text: str) -> list[str]:
    """The commands of the ```bash blocks, continuation lines joined, trailing `# comments` dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            line = re.sub(r"\s+", " ", line)
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def test_every_readme_command_is_run_or_skipped_with_a_reason():
    commands = readme_commands(README.read_text())
    unknown = [c for c in commands if c not in RUN and c not in SKIP]
    assert not unknown, f"README commands that tests/test_readme.py neither runs nor skips: {unknown}"
    stale = [c for c in (*RUN, *SKIP) if c not in commands]
    assert not stale, f"no longer in the README (remove them here): {stale}"


def fresh_shell_env(home: Path) -> dict:
    """What a new login shell has: no venv on PATH, no VIRTUAL_ENV, no DVC/MLflow settings."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
            "DVC_NO_ANALYTICS": "1", "OPENBLAS_NUM_THREADS": "1",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


SHRINK = (*SMALL, "train.epochs=2", "grid.losses=[svm]", "grid.regularizers=[l2]")


@pytest.fixture(scope="module")
def project(tmp_path_factory, synthetic_archive):
    """A copy of the project with the README, Makefile and .venv, conf/ shrunk, and this machine's
    data source in local.env (the synthetic archive); nothing run yet."""
    path, md5 = synthetic_archive
    home = tmp_path_factory.mktemp("home")
    dest = tmp_path_factory.mktemp("readme") / "project"
    project = make_project(dest)
    for name in ("Makefile", "README.md", "pyproject.toml", "uv.lock"):
        (project.path / name).write_bytes((ROOT / name).read_bytes())
    for name in ("pyproject.toml", "uv.lock"):
        os.utime(project.path / name, (0, 0))   # older than .venv/bin/.installed: no reinstall
    (project.path / ".venv").symlink_to(ROOT / ".venv")
    with open(project.path / ".git" / "info" / "exclude", "a") as f:
        f.write(".venv\n")
    (project.path / "local.env").write_text(f"LINCLASS_DATA_URL={path.as_uri()}\nLINCLASS_DATA_MD5={md5}\n")
    shrink_conf(project, SHRINK)   # params.yaml = the shrunk conf/, committed: "as committed" below means this
    project.env = fresh_shell_env(home)
    return project


def sh(project, command: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=project.path, env=project.env, capture_output=True,
                          text=True, timeout=timeout)


def show(proc) -> str:
    return f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def params_changes(before: str, after: str) -> dict:
    from linclass.config import flatten

    old, new = flatten(yaml.safe_load(before)), flatten(yaml.safe_load(after))
    return {key: new.get(key) for key in old.keys() | new.keys() if old.get(key) != new.get(key)}


@pytest.mark.slow
def test_readme_commands_work_from_a_fresh_shell(project):
    committed = (project.path / "params.yaml").read_text()
    for command in [c for c in readme_commands(README.read_text()) if c in RUN]:
        before = {p: p.read_bytes() for p in (project.path / "models").rglob("*") if p.is_file()}
        params_before = (project.path / "params.yaml").read_text()
        proc = sh(project, command)
        changes = params_changes(committed, (project.path / "params.yaml").read_text())
        if RUN[command] == "ok":
            assert proc.returncode == 0, f"{command}: {show(proc)}"
        else:
            assert proc.returncode != 0, f"{command} should fail: {show(proc)}"
            assert "regularizer.l2.strength=-1 is out of range" in proc.stdout + proc.stderr, show(proc)
            after = {p: p.read_bytes() for p in (project.path / "models").rglob("*") if p.is_file()}
            assert before and after == before, f"{command} changed or deleted outputs"
            assert (project.path / "params.yaml").read_text() == params_before, f"{command} changed params.yaml"
        if command.startswith(".venv/bin/dvc exp run -S") and RUN[command] == "ok":
            # DVC's design: the workspace holds the experiment just run, i.e. exactly its override
            key, _, value = command.split("-S ", 1)[1].partition("=")
            assert changes == {key: yaml.safe_load(value)}, changes
        else:
            # every other workflow leaves params.yaml as committed (the data source is not a parameter)
            assert changes == {}, f"{command} changed params.yaml: {changes}"
        if command == "make repro":
            assert (project.path / "reports" / "report.html").is_file()
    status = sh(project, ".venv/bin/dvc status")
    assert "Data and pipelines are up to date" in status.stdout, show(status)


@pytest.mark.slow
def test_switching_to_another_copy_of_the_data_retrains_nothing(project, tmp_path):
    """A copy with other bytes (same images): download and preprocess rerun, training does not."""
    if not (project.path / "dvc.lock").exists():
        assert sh(project, "make repro").returncode == 0
    archive = project.path / "data" / "raw" / "cifar-10-python.tar.gz"
    repacked = tmp_path / "repack.tar.gz"
    repacked.write_bytes(gzip.compress(gzip.decompress(archive.read_bytes()), compresslevel=1, mtime=1))
    md5 = hashlib.md5(repacked.read_bytes()).hexdigest()
    (project.path / "local.env").write_text(f"LINCLASS_DATA_URL={repacked.as_uri()}\nLINCLASS_DATA_MD5={md5}\n")
    weights = (project.path / "models" / "svm-l2" / "W.npy").read_bytes()
    proc = sh(project, ".venv/bin/dvc repro -f download && .venv/bin/dvc repro")
    assert proc.returncode == 0, show(proc)
    assert "Running stage 'preprocess'" in proc.stdout, show(proc)
    assert "Running stage 'train@" not in proc.stdout, show(proc)
    lock = (project.path / "dvc.lock").read_text()
    assert md5 in lock   # the lineage names the file actually read
    assert (project.path / "models" / "svm-l2" / "W.npy").read_bytes() == weights
