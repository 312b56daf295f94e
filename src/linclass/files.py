"""Files that appear whole or not at all, and their md5: the one place every layer writes through.

`atomic_file(path)` / `atomic_dir(path)` yield a temporary name beside `path`; when the block ends
without an error it replaces `path` (os.replace: readers see the old or the new version, never half
of one); on an error, a signal or a kill signal's unwinding, the temporary is removed.
Temporaries are ordinary files (the umask applies), not mkstemp's private 0600 ones.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

CHUNK_SIZE = 1 << 20  # 1 MiB
TEMP_MARK = ".tmp-"   # every temporary name holds it: `.<name>.tmp-<random><suffix>`


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_prefix(path: Path) -> str:
    """The start of the names of `path`'s temporaries (hidden, carrying TEMP_MARK)."""
    return f".{path.name}{TEMP_MARK}"


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary file name beside `path` (same suffix); on success it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=temp_prefix(path), suffix=path.suffix if suffix is None else suffix,
                                dir=path.parent)
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
    """Yield a temporary folder beside `path`; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path), dir=path.parent))
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def md5_file(*paths: str | os.PathLike, chunk_size: int = CHUNK_SIZE) -> str:
    """Hex md5 of the bytes of `paths`, one after the other, read in chunks."""
    h = hashlib.md5()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(chunk_size):
                h.update(chunk)
    return h.hexdigest()
