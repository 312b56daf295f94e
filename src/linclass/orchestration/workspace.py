"""One pipeline at a time in a workspace: `python -m linclass.orchestration.workspace <command...>`.

Takes `.dvc/tmp/linclass-workspace.lock` (fcntl, without waiting) and then becomes <command>
(exec: the lock stays held until it ends, however it ends). A second one refuses at once, in one line,
before <command> runs, so a second `dvc exp run` cannot rewrite params.yaml under a running one
(DVC itself takes its lock only after writing params.yaml). The `make` targets that run the pipeline
in the workspace go through it; experiments side by side go through DVC's queue instead.
"""
from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

LOCK = Path(".dvc", "tmp", "linclass-workspace.lock")


def acquire(root: str | Path = ".") -> int:
    """The fd of the held workspace lock (inheritable); RuntimeError in one line if another holds it."""
    path = Path(root) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RuntimeError(f"another pipeline runs in this workspace ({holder}); wait for it to end, or run "
                           "experiments side by side through the queue: dvc exp run --queue -S ... && "
                           "dvc queue start") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv[1:])[:300]}".encode(), 0)
    os.set_inheritable(fd, True)
    return fd


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m linclass.orchestration.workspace <command> [args...]")
    try:
        acquire()
    except RuntimeError as exc:
        sys.exit(f"error: {exc}")
    os.execvp(sys.argv[1], sys.argv[1:])
