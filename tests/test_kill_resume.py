"""SIGKILL at several points of the real pipeline, then `dvc repro`: dvc.lock is byte-identical to an
uninterrupted run's, nothing is left behind, and the killed MLflow runs end KILLED (by `make reap`'s
command, or by the next stage's start), never RUNNING.

SIGKILL cannot be handled: the killed stage's temporaries (its outputs' and tempfile's) stay in
<project>/.dvc/tmp/linclass-scratch/, which DVC never hashes, until the next stage's start removes them.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import BIN, SMALL, make_project, warm_stages

pytestmark = pytest.mark.slow

GRID = ("grid.losses=[svm]", "grid.regularizers=[none,l2]")
SCRATCH = Path(".dvc/tmp/linclass-scratch")


def runs(project) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(project.tracking_uri)
    experiment = client.get_experiment_by_name("linclass-cifar10")
    return {} if experiment is None else {
        r.info.run_id: r for r in client.search_runs([experiment.experiment_id], max_results=1000)}


def kill_when(project, tmp_path, ready, timeout=300.0, interval=0.01) -> None:
    """Start `dvc repro evaluate`, SIGKILL its whole process group once ready(scratch folder) is true (asked
    every `interval` seconds)."""
    scratch = project.path / SCRATCH
    with open(tmp_path / "dvc.log", "w") as log:
        proc = subprocess.Popen([str(BIN / "dvc"), "repro", "evaluate"], cwd=project.path, env=project.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not (scratch.is_dir() and ready(scratch)):
            assert proc.poll() is None, f"dvc ended first:\n{(tmp_path / 'dvc.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, (tmp_path / "dvc.log").read_text()[-3000:]
            time.sleep(interval)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        wait_group_gone(proc.pid)


def wait_group_gone(group: int, timeout: float = 60.0) -> None:
    """Until no process of process group `group` runs (zombies have ended: only init has to collect them)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[2]) == group and fields[0] not in ("Z", "X"):
                alive.append(stat.parent.name)
        if not alive:
            return
        assert time.monotonic() < deadline, f"processes {alive} of the killed group still run"
        time.sleep(0.05)


def temp_dir_of(name: str, holding: str | None = None):
    """ready(): a temporary folder of output `name` (a glob pattern) exists in the scratch folder (holding a
    file `holding`)."""
    def ready(scratch: Path) -> bool:
        return any(d.is_dir() and (holding is None or any(holding in f.name for f in d.iterdir()))
                   for d in scratch.glob(f".{name}.tmp-*"))
    return ready


def junk(project) -> list[str]:
    """Temporaries anywhere in the project's tracked folders or its scratch folder."""
    found = [
        p for folder in ("data", "models", "metrics", "reports", ".") for p in (project.path / folder).glob(".*.tmp-*")
    ]
    found += list((project.path / SCRATCH).glob("*")) if (project.path / SCRATCH).is_dir() else []
    return sorted(str(p.relative_to(project.path)) for p in found)


def lock_differences(project, reference) -> list[str]:
    """The entries (stage, section, path) of the two dvc.lock files that differ, each with both values."""
    mine, theirs = (yaml.safe_load((p.path / "dvc.lock").read_text())["stages"] for p in (project, reference))
    found = [f"stage {name}: only in {'the killed' if name in mine else 'the reference'} project"
             for name in sorted(set(mine) ^ set(theirs))]
    for name in sorted(set(mine) & set(theirs)):
        for section in sorted(set(mine[name]) | set(theirs[name])):
            a, b = mine[name].get(section), theirs[name].get(section)
            if isinstance(a, list) and isinstance(b, list):
                a, b = ({e["path"]: e for e in x} for x in (a, b))
                found += [f"{name} {section} {path}: {a.get(path)} != {b.get(path)}"
                          for path in sorted(set(a) | set(b)) if a.get(path) != b.get(path)]
            elif a != b:
                found.append(f"{name} {section}: {a} != {b}")
    return found


@pytest.fixture(scope="module")
def twins(tmp_path_factory, archive_server):
    """Two copies of the project made at once: the reference ran `dvc repro evaluate` uninterrupted, its stages
    started by a warm interpreter (conftest.warm_stages; the killed copy's are fresh processes, so the same dvc.lock
    also says both ways give the same outputs)."""
    url, md5 = archive_server
    overrides = (f"data.url={url}", f"data.md5={md5}", *SMALL, *GRID)
    reference, project = (make_project(tmp_path_factory.mktemp(name) / "project", overrides)
                          for name in ("uninterrupted", "killed"))
    with warm_stages(reference):
        reference.dvc("repro", "evaluate")
    return reference, project


def test_sigkill_during_preprocess_and_training_then_repro_gives_the_same_dvc_lock(twins, tmp_path):
    reference, project = twins

    # 1. during preprocess: its temporary folder exists (on the small synthetic set the stage writes its uint8
    # arrays in a few milliseconds, so the folder is watched without pause)
    kill_when(project, tmp_path, temp_dir_of("processed"), interval=0)
    assert junk(project), "the kill left no temporary (the test killed too early or too late)"
    assert not (project.path / "data" / "processed").exists()

    # 2. early in training: a model's temporary folder exists, the MLflow run is RUNNING (DVC runs the two
    # train stages in either order, so whichever comes first)
    kill_when(project, tmp_path, temp_dir_of("svm-*"))
    running = [r.info.run_id for r in runs(project).values() if r.info.status == "RUNNING"]
    assert len(running) == 1 and running[0] and not list((project.path / "models").glob(".*")), junk(project)
    reap = project.run(str(BIN / "python"), "-m", "linclass.cli", "reap",
                       env={**project.env, "PYTHONPATH": "src"})
    assert "1 run(s) whose process is gone marked KILLED" in reap.stdout, reap.stdout
    killed = runs(project)[running[0]]
    assert killed.info.status == "KILLED" and "ended without ending the run" in killed.data.tags["killed_because"]

    # 3. late in training: the weights are written into the temporary folder, not yet renamed, and the pictures
    # drawn in a temporary folder of the stage's own: in the scratch folder too, nothing in TMPDIR
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    project.env = {**project.env, "TMPDIR": str(tmpdir)}
    kill_when(project, tmp_path, lambda scratch: any(scratch.glob(".tempdir.tmp-*/*/templates_grid.png")))
    late = [r.info.run_id for r in runs(project).values() if r.info.status == "RUNNING"]
    assert len(late) == 1, late
    assert any(".svm-" in p and ".tmp-" in p for p in junk(project)), junk(project)
    assert any(".tempdir.tmp-" in p for p in junk(project)), junk(project)
    assert list(tmpdir.iterdir()) == []

    done = project.dvc("repro", "evaluate")
    assert "leftover(s) of an interrupted run" in done.stdout, done.stdout[-3000:]
    # the same record of every stage (DVC lists stages in the order they first completed, which the kills
    # change; the entries themselves are byte-for-byte the same)
    assert lock_differences(project, reference) == []
    assert junk(project) == []
    assert runs(project)[late[0]].info.status == "KILLED"  # by the next stage's start
    statuses = sorted(r.info.status for r in runs(project).values())
    assert "RUNNING" not in statuses and statuses.count("KILLED") == 2, statuses
    assert project.dvc("status", "evaluate").stdout.strip() == "Data and pipelines are up to date."


def test_sigterm_during_download_removes_the_part_file(tmp_path, archive_server):
    import socket

    with socket.socket() as silent:  # accepts the connection, never answers: the download hangs
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/cifar-10-python.tar.gz"
        project = make_project(tmp_path / "project", (f"data.url={url}", f"data.md5={archive_server[1]}"))
        proc = subprocess.Popen([str(BIN / "python"), "pipeline/download.py"], cwd=project.path, text=True,
                                env={**project.env, "PYTHONPATH": "src"}, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while not list((project.path / SCRATCH).glob("*.part")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == "error: stopped (received signal SIGTERM); nothing was written", stderr
    assert junk(project) == [] and not list(project.path.glob("data/raw/*"))


@pytest.mark.parametrize("stages", ["fresh", "warm"])
def test_params_yaml_rewritten_under_a_running_pipeline_stops_its_next_stage(twins, tmp_path, stages):
    """What a second `dvc exp run` in the same workspace does before it fails on DVC's lock; with stages forked
    from the warm interpreter (as make repro, make exp, grid and sweep start them) too: their parents are not
    DVC's, their client is (the check used to find no `dvc` and let the stage train with the new settings)."""
    reference, _ = twins
    with warm_stages(reference) if stages == "warm" else contextlib.nullcontext():
        check_rewrite_stops_the_next_stage(reference, tmp_path)


def check_rewrite_stops_the_next_stage(reference, tmp_path):
    params = reference.path / "params.yaml"
    saved = params.read_bytes()
    before = set(runs(reference))

    def new_runs() -> list[str]:
        return [r.info.run_name for i, r in runs(reference).items() if i not in before]

    log = tmp_path / "dvc.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(BIN / "dvc"), "repro", "--force", "--single-item", "train@svm-none", "train@svm-l2"],
            cwd=reference.path,
            env=reference.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        deadline = time.monotonic() + 300
        while not new_runs():  # the first train stage runs
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        params.write_bytes(saved.replace(b"epochs: 3", b"epochs: 7"))
        assert proc.wait(timeout=300) != 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        params.write_bytes(saved)
    output = log.read_text()
    assert "error: params.yaml changed while this pipeline ran (dvc pid" in output, output[-3000:]
    assert output.count("Running stage 'train@") == 2 and len(new_runs()) == 1, (new_runs(), output[-3000:])
