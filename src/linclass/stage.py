"""What every DVC stage entry point shares: validated params, atomic outputs, one-line errors.

Set LINCLASS_DEBUG=1 to get the full traceback instead of the one-line error.

A stage script is `def main(): ...` plus `if __name__ == "__main__": run(main)`.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from linclass.config import ConfigError, compose, load_params, validate

EXIT_ERROR = 1
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


def stage_params(params_path: str | Path = "params.yaml", conf_dir: str | Path = "conf") -> dict:
    """params.yaml, validated against the conf/ tree (unknown keys, names, ranges)."""
    params = load_params(params_path)
    reference = compose(conf_dir) if Path(conf_dir, "config.yaml").exists() else None
    return validate(params, reference)


def run(main: Callable[[], None]) -> None:
    """Run a stage's main(): known failures become one line on stderr and a non-zero exit."""
    from linclass.tracking import Terminated
    from mlflow.exceptions import MlflowException  # e.g. a tracking URI that MLflow has no store for

    try:
        main()
    except Terminated as exc:
        print(f"error: stopped ({exc}); nothing was written", file=sys.stderr)
        sys.exit(EXIT_SIGTERM)
    except KeyboardInterrupt:
        print("error: interrupted (SIGINT); nothing was written", file=sys.stderr)
        sys.exit(EXIT_SIGINT)
    except (ConfigError, ValueError, RuntimeError, OSError, FloatingPointError, MlflowException) as exc:
        if os.environ.get("LINCLASS_DEBUG"):
            raise
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, whatever the message
        sys.exit(EXIT_ERROR)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; outputs are ordinary folders
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling file name; on success it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.chmod(0o666 & ~_umask())  # mkstemp makes it private; outputs are ordinary files
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, data) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
