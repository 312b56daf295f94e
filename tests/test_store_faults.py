"""The MLflow store is never silently replaced: empty or malformed sqlite files are one-line errors naming
the file and how to recover; a fresh store created by several processes at once; a shared sqlite store
keeps its artifacts next to itself. Real sqlite stores, real processes."""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import linclass.tracking.runs as runs

SETUP = """
import json, os, sys, time
from pathlib import Path
while not Path(sys.argv[2]).exists():  # start together
    time.sleep(0.001)
from linclass.tracking import runs
from mlflow.tracking import MlflowClient
print(json.dumps(runs.setup("race", None, root=sys.argv[1])))
"""


@pytest.fixture
def clean_env(monkeypatch):
    for name in [n for n in os.environ if n.startswith(("MLFLOW_TRACKING", "DVC_"))]:
        monkeypatch.delenv(name)


def assert_one_line_naming(exc_info, db: Path, *texts: str) -> None:
    message = str(exc_info.value)
    assert "\n" not in message and str(db) in message and f"mv {db} {db}.broken" in message, message
    for text in texts:
        assert text in message, message


def test_an_empty_store_is_an_error_not_a_new_store(tmp_path, clean_env):
    db = tmp_path / "mlflow.db"
    db.touch()
    with pytest.raises(runs.StoreError) as exc_info:
        runs.setup("x", None, root=tmp_path)
    assert_one_line_naming(exc_info, db, "is empty (0 bytes)")
    assert db.stat().st_size == 0, "the empty store was filled with a new one"


@pytest.mark.parametrize("content", ["text", "truncated"])
def test_a_malformed_store_is_a_one_line_error(tmp_path, clean_env, content):
    db = tmp_path / "mlflow.db"
    if content == "text":
        db.write_text("these are not the runs you are looking for\n" * 100)
    else:
        runs.setup("x", None, root=tmp_path)  # a real store, then cut after its first page
        data = db.read_bytes()
        db.write_bytes(data[:4096 + 100])
    before = db.read_bytes()
    with pytest.raises(runs.StoreError) as exc_info:
        runs.setup("x", None, root=tmp_path)
    assert_one_line_naming(exc_info, db, "not an sqlite database" if content == "text" else "malformed")
    assert db.read_bytes() == before


KILLED_WRITER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("pragma cache_size=1")   # 2 MB of changed pages spill into the file before the commit; the journal
db.execute("begin immediate")       # holds the old ones
db.execute("update padding set x = upper(x)")
print("writing", flush=True)
time.sleep(120)
"""


def test_a_store_whose_writer_was_killed_mid_write_is_recovered_not_called_malformed(tmp_path, clean_env):
    # A stage killed outright (SIGKILL) while it wrote left the store's journal behind ("hot"): a read-only check
    # cannot roll it back ("attempt to write a readonly database") and called the store malformed, with the advice
    # to move it away. SQLite's next writer rolls it back: the store is as it was before the killed write.
    runs.setup("x", None, root=tmp_path)
    db = tmp_path / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("x")
    for k in range(20):
        client.create_run(experiment.experiment_id, run_name=f"run-{k:02d}")
    names = sorted(r.info.run_name for r in client.search_runs([experiment.experiment_id]))
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:   # a table big enough to spill, in the same file
        conn.execute("create table padding (x text)")
        conn.executemany("insert into padding values (?)", [("a" * 1000,)] * 2000)
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
    writer.kill()
    writer.wait()
    with pytest.raises(sqlite3.OperationalError) as hot, contextlib.closing(
            sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as reader:
        reader.execute("select count(*) from sqlite_master").fetchone()
    assert hot.value.sqlite_errorname == "SQLITE_READONLY_ROLLBACK", "the killed writer left a hot journal"
    runs.setup("x", None, root=tmp_path)   # raised StoreError "malformed (attempt to write a readonly database)"
    assert sorted(r.info.run_name for r in client.search_runs([experiment.experiment_id])) == names
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("select count(*) from padding where x = upper(x)").fetchone() == (0,), "rolled back"


def test_a_fresh_store_created_by_three_processes_at_once(tmp_path, clean_env):
    go = tmp_path / "go"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "DVC_"))}
    procs = [subprocess.Popen([sys.executable, "-c", SETUP, str(tmp_path), str(go)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    time.sleep(6)  # let all three import mlflow and wait at the line
    go.touch()
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in results]
    assert len({json.loads(out.splitlines()[-1]) for out, _ in results}) == 1


def test_a_shared_sqlite_store_keeps_artifacts_next_to_itself(tmp_path, clean_env):
    shared = tmp_path / "shared"
    for clone in ("clone-a", "clone-b"):
        experiment_id = runs.setup("shared", f"sqlite:///{shared / 'mlflow.db'}", root=tmp_path / clone)
    experiment = MlflowClient(f"sqlite:///{shared / 'mlflow.db'}").get_experiment(experiment_id)
    assert experiment.artifact_location == (shared / "mlartifacts").as_uri()
    assert (shared / "mlflow.db.lock").exists()


def test_a_zombie_process_is_gone_and_a_live_one_is_not():
    """A SIGKILLed stage whose parent died with it is a zombie until init collects it: its run must be reaped."""
    from linclass.tracking.store import process_gone, process_start

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    start = None
    deadline = time.monotonic() + 30
    while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":  # ended, not collected
        start = start or process_start(child.pid)
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert process_gone(child.pid, start or "")
    child.wait()
    assert process_gone(child.pid, "")
    assert not process_gone(os.getpid(), process_start(os.getpid()))


def test_reap_leaves_a_run_that_ended_itself_between_the_search_and_the_check(tmp_path):
    """Two pipelines on one store: one stage reaps while the other's stage finishes its run and exits. The
    search still saw RUNNING; the process is gone by the check; the run is FINISHED and must stay so."""
    import socket

    from linclass.tracking import runs, store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = runs.setup("race", uri, root=tmp_path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone_start = store.process_start(gone.pid) or ""
    gone.wait()
    tags = {"host": socket.gethostname(), "pid": str(gone.pid), "pid_start": gone_start}

    class FinishesAfterTheSearch(MlflowClient):   # the real store; only the interleaving is forced
        def search_runs(self, *args, **kwargs):
            found = super().search_runs(*args, **kwargs)
            for run in found:
                if run.data.tags.get("model") == "finished-meanwhile":
                    super().set_terminated(run.info.run_id, "FINISHED")
            return found

    client = FinishesAfterTheSearch(uri)
    finished = client.create_run(experiment_id, tags={**tags, "model": "finished-meanwhile"}).info.run_id
    abandoned = client.create_run(experiment_id, tags={**tags, "model": "abandoned"}).info.run_id
    assert store.reap(client, [experiment_id]) == [abandoned]
    assert client.get_run(finished).info.status == "FINISHED"
    assert client.get_run(abandoned).info.status == "KILLED"
