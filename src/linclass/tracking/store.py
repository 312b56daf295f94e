"""The MLflow store's safety: never silently replaced, safely created, no run left RUNNING.

- check_store: an empty (0-byte) or malformed sqlite file is one error naming it and how to recover
  (MLflow would silently make a new, empty store in a 0-byte file).
- store_lock: creating a sqlite store from two processes at once races on its tables; every
  linclass process takes `<db>.lock` (a file lock) around checking and creating it.
- artifact_root: a sqlite store keeps its artifacts next to itself (`<dir of the db>/mlartifacts`),
  so a store shared by several clones does not keep them inside whichever clone came first.
- reap: a run is tagged with host, pid and the process's start time; a RUNNING run of this host
  whose process is gone (or whose pid now belongs to a newer process) is marked KILLED.
- quiet: MLflow's loggers that speak of its own housekeeping ("Creating initial MLflow database tables...")
  say only errors for a while.
This module imports no MLflow; `reap` gets a client.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psutil
from filelock import FileLock

SQLITE_HEADER = b"SQLite format 3\x00"
# what MLflow says at INFO while it makes a new store's tables: its own housekeeping, two lines in the first stage
STORE_CREATION = "mlflow.store.db.utils"
ARTIFACTS = "mlartifacts"   # the artifact folder of a local store, beside its database


@contextlib.contextmanager
def quiet(*loggers: str) -> Iterator[None]:
    """These loggers say only errors for the duration."""
    saved = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


class StoreError(RuntimeError):
    """The tracking store cannot be used; the message is one line and says what to do."""


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///path` URI (absolute or relative to the cwd), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):].split("?", 1)[0]).absolute()


def check_store(uri: str) -> None:
    """StoreError unless a sqlite store's file is missing (a new store) or a readable sqlite database."""
    db = sqlite_path(uri)
    if db is None or not db.exists():
        return
    recover = (f"restore it from a backup, or move it away (mv {db} {db}.broken) "
               "and the next run starts a new, empty store")
    if db.stat().st_size == 0:
        raise StoreError(f"MLflow store {db} is empty (0 bytes): its runs are not there; {recover}")
    with open(db, "rb") as f:
        if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise StoreError(f"MLflow store {db} is not an sqlite database; {recover}")
    for mode in ("ro", "rw"):
        try:
            with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode={mode}", uri=True)) as db_conn:
                db_conn.execute("select count(*) from sqlite_master").fetchone()
            return
        except sqlite3.DatabaseError as exc:
            # A process killed while it wrote left its journal: a reader may not roll it back, the next writer does
            # (SQLite's own recovery, as MLflow's connection would). Not a malformed store.
            if mode == "ro" and getattr(exc, "sqlite_errorname", "") == "SQLITE_READONLY_ROLLBACK":
                continue
            raise StoreError(f"MLflow store {db} is malformed ({exc}); {recover}") from None


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold `<db>.lock` (an exclusive file lock) for a sqlite store; nothing for other stores."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{db}.lock"):
        yield


def keep_private(uri: str) -> None:
    """A sqlite store and its artifact folder for this account alone (the database 0600, the folder 0700), as the
    project's `make ui` answers no other account: MLflow makes them with the umask, readable by every account."""
    db = sqlite_path(uri)
    if db is None:
        return
    artifacts = db.parent / ARTIFACTS
    artifacts.mkdir(mode=0o700, exist_ok=True)
    for path, mode in ((db, 0o600), (artifacts, 0o700)):
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o777 != mode:
            path.chmod(mode)


def artifact_root(uri: str, root: Path) -> str | None:
    """Artifact location of new experiments: beside a sqlite store, `<root>/mlartifacts` for other
    local stores, the server's choice for remote ones."""
    db = sqlite_path(uri)
    if db is not None:
        return (db.parent / ARTIFACTS).as_uri()
    if uri.startswith("file:") or "://" not in uri:
        return (Path(root) / ARTIFACTS).as_uri()
    return None


def process_start(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), None if it is gone.

    A zombie (it has ended, its parent has not collected it yet) is gone: a SIGKILLed stage whose
    parent died with it stays one until init reaps it, and its run will never end by itself.
    """
    try:
        process = psutil.Process(pid)
        return None if process.status() == psutil.STATUS_ZOMBIE else process.create_time()
    except psutil.Error:
        return None


def process_tags() -> dict[str, str]:
    """Who makes a run: this process's pid and start time (with the `host` tag they name it)."""
    return {"pid": str(os.getpid()), "pid_start": str(process_start(os.getpid()))}


def process_gone(pid: int, start: str | float) -> bool:
    """Whether process `pid` of this host, started at `start`, has ended (its pid may be reused)."""
    now = process_start(pid)
    return now is None or (bool(start) and str(now) != str(start))


def reap(client, experiment_ids: list[str]) -> list[str]:
    """Mark KILLED the RUNNING runs of this host whose process is gone; return their ids."""
    host = socket.gethostname()
    quoted = host.replace("'", "\\'")
    runs = client.search_runs(experiment_ids, filter_string=f"attributes.status = 'RUNNING' and tags.host = '{quoted}'",
                              max_results=10_000)
    reaped = []
    for run in runs:
        tags = run.data.tags
        if not tags.get("pid", "").isdigit() or not process_gone(int(tags["pid"]), tags.get("pid_start", "")):
            continue
        # The process may have ended its run, then exited, since the search: read the status again. Its
        # process is gone, so from here on nothing but us can change it.
        if client.get_run(run.info.run_id).info.status != "RUNNING":
            continue
        client.set_tag(
            run.info.run_id, "killed_because", f"process {tags['pid']} on {host} ended without ending the run"
        )
        client.set_terminated(run.info.run_id, "KILLED")
        reaped.append(run.info.run_id)
    return reaped
