"""Files that appear whole or not at all, and their md5: the one place every layer writes through.

`atomic_file(path)` / `atomic_dir(path)` yield a temporary name; when the block ends without an error
it replaces `path` (os.replace: readers see the old or the new version, never half of one); on an
error, a signal or a kill signal's unwinding, the temporary is removed.

Temporaries live in a scratch folder that DVC never hashes: `<project>/.dvc/tmp/linclass-scratch/`
when `path` is inside a DVC project (the nearest folder above it holding `.dvc/`), on the same
filesystem so that the rename stays atomic; elsewhere (or across filesystems) beside `path`. A
process killed by SIGKILL cannot remove its temporary: `remove_leftovers` does, at the next stage's
start. Names carry the owner's pid (`.<name>.tmp-<pid>-<random><suffix>`), so a live writer's
temporaries are never taken for leftovers.
Temporaries are ordinary files (the umask applies), not mkstemp's private 0600 ones.

`scratch_tempdir()` points a stage's other temporary files (tempfile's, so also MLflow's and matplotlib's) at a
private folder in the same scratch folder, named the same way: a SIGKILL leaves it there, not in /tmp.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil

CHUNK_SIZE = 1 << 20  # 1 MiB
TEMP_MARK = ".tmp-"   # every temporary name holds it: `.<name>.tmp-<pid>-<random><suffix>`
SCRATCH = Path(".dvc", "tmp", "linclass-scratch")
_OWNER = re.compile(re.escape(TEMP_MARK) + r"(\d+)-")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_prefix(path: Path) -> str:
    """The start of the names of `path`'s temporaries (hidden, carrying TEMP_MARK and this pid)."""
    return f".{path.name}{TEMP_MARK}{os.getpid()}-"


def project_root_of(folder: str | os.PathLike) -> Path | None:
    """The nearest folder at or above `folder` that holds a `.dvc/` folder, or None."""
    folder = Path(os.path.abspath(folder))
    for candidate in (folder, *folder.parents):
        if (candidate / ".dvc").is_dir():
            return candidate
    return None


def scratch_dir(path: str | os.PathLike) -> Path:
    """Where the temporaries of `path` go (created): the project's scratch folder, or beside `path`."""
    parent = Path(os.path.abspath(path)).parent
    parent.mkdir(parents=True, exist_ok=True)
    root = project_root_of(parent)
    if root is not None:
        scratch = root / SCRATCH
        scratch.mkdir(parents=True, exist_ok=True)
        if scratch.stat().st_dev == parent.stat().st_dev:  # os.replace cannot cross filesystems
            return scratch
    return parent


def owner_alive(name: str) -> bool:
    """Whether the process that made the temporary `name` still runs (False when no pid is in it)."""
    match = _OWNER.search(name)
    return match is not None and psutil.pid_exists(int(match.group(1)))


def remove_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries in `folder` whose owner process is gone; return what was removed."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if entry.name.startswith(".") and TEMP_MARK in entry.name and not owner_alive(entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def ensure_free_space(folder: str | os.PathLike, needed: int, what: str) -> None:
    """OSError in one line unless the filesystem of `folder` has `needed` bytes free for `what`."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise OSError(f"not enough free space in {os.path.abspath(folder)} for {what}: "
                      f"{needed / 2**20:.1f} MiB needed, {free / 2**20:.1f} MiB free")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary file name (same suffix as `path`); on success it replaces `path`."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=temp_prefix(path), suffix=path.suffix if suffix is None else suffix,
                                dir=scratch_dir(path))
    os.close(fd)
    tmp = Path(name)
    tmp.chmod(0o666 & ~_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path), dir=scratch_dir(path)))
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def scratch_tempdir(root: str | os.PathLike = ".") -> Iterator[Path | None]:
    """For the block, tempfile's folder (this process's temporary files, its libraries' too) is a private (0700)
    folder in the scratch folder of the project at or above `root`, removed at the end; outside a project, as it was.
    """
    project = project_root_of(root)
    if project is None:
        yield None
        return
    before, name = tempfile.tempdir, project / "tempdir"   # named as a temporary of <project>/tempdir
    with tempfile.TemporaryDirectory(prefix=temp_prefix(name), dir=scratch_dir(name)) as folder:
        tempfile.tempdir = folder
        try:
            yield Path(folder)
        finally:
            tempfile.tempdir = before


def md5_file(*paths: str | os.PathLike, chunk_size: int = CHUNK_SIZE) -> str:
    """Hex md5 of the bytes of `paths`, one after the other, read in chunks."""
    h = hashlib.md5()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(chunk_size):
                h.update(chunk)
    return h.hexdigest()
