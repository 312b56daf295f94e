"""`make push` / `make pull` (linclass.orchestration.remote) against real DVC remotes: a shared folder
that is there, one whose share is not mounted, an S3 endpoint that does not answer, a remote that
does not exist. Unreachable is one line naming the remote, and nothing moves; the S3 remote that
answers is tested with the team stack (tests/test_stack.py)."""
from __future__ import annotations

import subprocess
import time

import pytest
from conftest import BIN, ROOT, Project, env_for_pipeline, free_port


@pytest.fixture
def repo(tmp_path) -> Project:
    """A git + DVC repository with one tracked file, its cache filled, no remote yet."""
    project = Project(tmp_path / "repo", env_for_pipeline(AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s"))
    project.path.mkdir()
    project.run("git", "init", "-q")
    project.dvc("init", "-q")
    (project.path / "weights.txt").write_text("W = 1 2 3\n")
    project.dvc("add", "-q", "weights.txt")
    project.git_commit("tracked")
    return project


def make(project: Project, command: str, *args: str) -> subprocess.CompletedProcess:
    return project.run(str(BIN / "python"), "-m", "linclass.cli", command, *args, check=False)


def cache_files(project: Project) -> list[str]:
    return sorted(str(p.relative_to(project.path)) for p in (project.path / ".dvc/cache").rglob("*") if p.is_file())


def test_a_shared_folder_takes_the_push_and_gives_it_back(repo, tmp_path):
    (tmp_path / "share").mkdir()
    repo.dvc("remote", "add", "--default", "team", str(tmp_path / "share" / "linclass-dvc"))
    pushed = make(repo, "push")
    assert pushed.returncode == 0, pushed.stderr
    assert "1 file pushed" in pushed.stdout, pushed.stdout

    (repo.path / "weights.txt").unlink()
    repo.run("rm", "-rf", ".dvc/cache")
    pulled = make(repo, "pull")
    assert pulled.returncode == 0, pulled.stderr
    assert (repo.path / "weights.txt").read_text() == "W = 1 2 3\n"
    assert "Data and pipelines are up to date." in pulled.stdout


def test_a_file_a_teammate_changed_in_the_remote_is_refused_at_pull(repo, tmp_path):
    """Every member of the team's group may write in a shared remote. A file changed there (the same name, other
    bytes) came back at the next pull as if it were the pushed one, and `dvc status` found nothing wrong: `make
    remote` sets `verify`, and DVC checks each file it fetches against its name (its md5)."""
    (tmp_path / "share").mkdir()
    remote = tmp_path / "share" / "linclass-dvc"
    made = repo.run("make", "-s", "-f", str(ROOT / "Makefile"), f"VENV={BIN.parent}", "-o", f"{BIN}/.installed",
                    "remote", f"REMOTE={remote}", check=False)
    assert made.returncode == 0, made.stdout + made.stderr
    assert make(repo, "push").returncode == 0
    [stored] = [path for path in remote.rglob("*") if path.is_file()]
    stored.write_text("W = 6 6 6\n")   # what a teammate put there instead
    (repo.path / "weights.txt").unlink()
    repo.run("rm", "-rf", ".dvc/cache")
    pulled = make(repo, "pull")
    assert pulled.returncode != 0, pulled.stdout + pulled.stderr
    assert not (repo.path / "weights.txt").exists(), "the changed file was checked out"
    assert pulled.stderr.startswith("error: `dvc pull --run-cache -r team` checked out nothing of weights.txt: DVC "
                                    "remote 'team'") and "than their md5 says" in pulled.stderr, pulled.stderr
    assert len(pulled.stderr.strip().splitlines()) == 1, pulled.stderr


def test_a_folder_remote_is_writable_by_its_group_after_the_first_push(repo, tmp_path):
    """The simple recipe's shared folder: the first push (umask 022) made folders writable by its owner alone, so
    the next teammate's `make push` failed with Permission denied in the remote. `make remote` sets `shared group`
    for a folder: every folder DVC makes there is 2775, every file 0664 (the group may add, nobody may change)."""
    import os
    import stat

    remote = tmp_path / "share" / "linclass-dvc"
    remote.parent.mkdir()
    made = repo.run("bash", "-c", f"umask 022 && make -s -f {ROOT / 'Makefile'} VENV={BIN.parent} "
                    f"-o {BIN}/.installed remote REMOTE={remote}", check=False)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "shared = group" in (repo.path / ".dvc/config").read_text()
    pushed = repo.run("bash", "-c", f"umask 022 && {BIN / 'python'} -m linclass.cli push", check=False)
    assert pushed.returncode == 0, pushed.stderr
    folders = [path for path in remote.rglob("*") if path.is_dir()]
    files = [path for path in remote.rglob("*") if path.is_file()]
    assert folders and files
    assert {oct(stat.S_IMODE(os.stat(path).st_mode)) for path in folders} == {"0o2775"}, folders
    assert {oct(stat.S_IMODE(os.stat(path).st_mode) & 0o770) for path in files} <= {"0o440", "0o660"}, files

    # an S3 remote has no such setting: DVC's config refuses `shared` there
    s3 = repo.run("make", "-s", "-f", str(ROOT / "Makefile"), f"VENV={BIN.parent}", "-o", f"{BIN}/.installed",
                  "remote", "REMOTE=s3://team-bucket/linclass-dvc", check=False)
    assert s3.returncode == 0, s3.stdout + s3.stderr
    assert "shared" not in (repo.path / ".dvc/config").read_text()


def test_an_unmounted_share_is_one_line_and_no_folder_is_made(repo, tmp_path):
    share = tmp_path / "mnt" / "team"   # the mount point is not there
    repo.dvc("remote", "add", "--default", "team", str(share / "linclass-dvc"))
    for command in ("push", "pull"):
        proc = make(repo, command)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1, proc.stderr
        assert lines[0].startswith("error: DVC remote 'team'") and "is not reachable" in lines[0], lines[0]
        assert str(share) in lines[0] and f"nothing was {command}ed" in lines[0], lines[0]
    assert not (tmp_path / "mnt").exists(), "DVC would have made an empty remote where the share should be"


def test_an_s3_endpoint_that_does_not_answer_is_one_line_and_nothing_moves(repo):
    pytest.importorskip("dvc_s3", reason="the team extra is not installed: pip install -e '.[team]'")
    endpoint = f"http://127.0.0.1:{free_port()}"   # nothing listens there
    repo.dvc("remote", "add", "--default", "team", "s3://linclass-team/dvc")
    repo.dvc("remote", "modify", "team", "endpointurl", endpoint)
    before = cache_files(repo)
    started = time.monotonic()
    proc = make(repo, "push")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert f"DVC remote 'team' (s3://linclass-team/dvc at {endpoint}) is not reachable" in lines[0], lines[0]
    assert "nothing was pushed, the local cache is unchanged" in lines[0] and "make push" in lines[0], lines[0]
    assert time.monotonic() - started < 30, "DVC's own retries take longer; the check must come first"
    assert cache_files(repo) == before and (repo.path / "weights.txt").exists()


def test_a_remote_that_is_not_configured_is_one_line(repo):
    for args, expected in ((("push",), "no default DVC remote: set the team's with `make remote REMOTE="),
                           (("pull", "-r", "nas"), "no DVC remote named 'nas'; configured: none")):
        proc = make(repo, *args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and expected in lines[0], proc.stderr


@pytest.fixture
def pipeline_repo(tmp_path) -> Project:
    """A git + DVC repository with a pipeline run but not committed (dvc.lock, a cached metric, an uncached one
    that git must carry), a folder as its DVC remote, and a bare git repository as origin."""
    project = Project(tmp_path / "a", env_for_pipeline())
    project.path.mkdir()
    project.run("git", "init", "-q", "-b", "main")
    project.dvc("init", "-q")
    (project.path / "n.txt").write_text("3\n")
    (project.path / "double.py").write_text("import json, os\nopen('out.txt', 'w').write('6')\n"
                                            "os.makedirs('metrics', exist_ok=True)\n"
                                            "json.dump({'v': 6}, open('metrics/m.json', 'w'))\n")
    (project.path / "params.yaml").write_text("factor: 2\n")
    project.dvc("stage", "add", "-q", "-n", "double", "-d", "n.txt", "-d", "double.py", "-p", "factor", "-o", "out.txt",
                "-m", "metrics/m.json", "python3 double.py")
    project.dvc("stage", "add", "-q", "-n", "summary", "-d", "out.txt", "-M", "summary.json",   # cache: false
                "python3 -c \"open('summary.json', 'w').write(open('out.txt').read())\"")
    project.dvc("remote", "add", "--default", "team", str(tmp_path / "dvc-remote"))
    project.git_commit("pipeline, no results")
    project.dvc("repro", "-q")
    project.run("git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "origin.git"))
    project.run("git", "remote", "add", "origin", str(tmp_path / "origin.git"))
    project.run("git", "push", "-q", "origin", "main")
    return project


def test_push_warns_while_dvc_lock_and_metrics_are_not_committed(pipeline_repo):
    first = make(pipeline_repo, "push")
    assert first.returncode == 0, first.stderr
    warning = [line for line in first.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1, first.stderr
    assert "dvc.lock and summary.json are not committed" in warning[0], warning[0]   # metrics/m.json is in DVC's cache
    assert "git add dvc.lock summary.json && git commit" in warning[0], warning[0]
    assert "file pushed" in first.stdout or "files pushed" in first.stdout, first.stdout   # it still pushes

    pipeline_repo.git_commit("results")
    second = make(pipeline_repo, "push")
    assert second.returncode == 0 and "warning" not in second.stderr, second.stderr


def test_push_warns_while_the_settings_the_results_came_from_are_not_committed(pipeline_repo, tmp_path):
    """A teammate ran `make exp SET=...` (params.yaml changed) and committed what team.md named, dvc.lock and the
    metrics: the clone pulled every output, but `dvc status` found the stages changed, and `make repro` would train
    them again with the commit's settings. make push named nothing."""
    pipeline_repo.git_commit("results")
    (pipeline_repo.path / "params.yaml").write_text("factor: 3\n")   # an experiment's setting
    (pipeline_repo.path / "n.txt").write_text("4\n")                 # and a data file git carries
    pipeline_repo.dvc("repro", "-q")
    pipeline_repo.run("git", "add", "dvc.lock", "summary.json")
    pipeline_repo.run("git", "commit", "-q", "-m", "results of the experiment")
    pushed = make(pipeline_repo, "push")
    assert pushed.returncode == 0, pushed.stderr
    warning = [line for line in pushed.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1, pushed.stderr
    assert "n.txt and params.yaml are not committed" in warning[0], warning[0]
    assert "git add n.txt params.yaml && git commit" in warning[0], warning[0]
    assert "double.py" not in warning[0] and "out.txt" not in warning[0], warning[0]   # committed; an output

    # what the warning says to do: then a clone pulls to "up to date", nothing to run again
    pipeline_repo.run("git", "add", "n.txt", "params.yaml")
    pipeline_repo.run("git", "commit", "-q", "-m", "the experiment's settings")
    pipeline_repo.run("git", "push", "-q", "origin", "main")
    again = make(pipeline_repo, "push")
    assert again.returncode == 0 and "warning" not in again.stderr, again.stderr
    clone = Project(tmp_path / "b", pipeline_repo.env)
    pipeline_repo.run("git", "clone", "-q", "-b", "main", str(tmp_path / "origin.git"), str(clone.path))
    pulled = make(clone, "pull")
    assert pulled.returncode == 0 and "Data and pipelines are up to date." in pulled.stdout, pulled.stdout


def test_pull_of_a_commit_without_dvc_lock_names_the_cause_and_the_way_out(pipeline_repo, tmp_path):
    assert make(pipeline_repo, "push").returncode == 0   # outputs and run-cache pushed, dvc.lock never committed
    clone = Project(tmp_path / "b", pipeline_repo.env)
    pipeline_repo.run("git", "clone", "-q", "-b", "main", str(tmp_path / "origin.git"), str(clone.path))
    before = sorted(p.name for p in clone.path.iterdir())
    proc = make(clone, "pull")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: this commit has no dvc.lock") and "nothing was pulled" in lines[0], lines[0]
    assert "dvc repro --pull" in lines[0] and "Checkout failed" not in lines[0], lines[0]
    assert sorted(p.name for p in clone.path.iterdir()) == before and not (clone.path / ".dvc/cache").exists()

    # the way out it names: every stage the team ran comes from the remote, nothing is computed again
    restored = clone.dvc("repro", "--pull")
    assert "Stage 'double' is cached - skipping run" in restored.stdout, restored.stdout
    assert "Running stage 'double'" not in restored.stdout, restored.stdout
    assert (clone.path / "out.txt").read_text() == "6"

    # once dvc.lock is committed and pushed, make pull works in a fresh clone
    pipeline_repo.git_commit("results")
    pipeline_repo.run("git", "push", "-q", "origin", "main")
    fresh = Project(tmp_path / "c", pipeline_repo.env)
    pipeline_repo.run("git", "clone", "-q", "-b", "main", str(tmp_path / "origin.git"), str(fresh.path))
    pulled = make(fresh, "pull")
    assert pulled.returncode == 0, pulled.stderr
    assert (fresh.path / "out.txt").read_text() == "6" and "Data and pipelines are up to date." in pulled.stdout
