"""SIGINT / SIGTERM during a tracked run, raised where they cannot leave the store locked.

An exception raised half-way through an MLflow call can leave its sqlite transaction open, holding the
database lock: setting the run KILLED then fails and the run stays RUNNING. So a signal that arrives
inside store code (the modules in STORE_MODULES) is raised when the outermost store call returns, as
KeyboardInterrupt (SIGINT) or Terminated (SIGTERM); a second signal is raised at once.
"""
from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from types import FrameType

from linclass.plumbing.stage import Terminated

STORE_MODULES = ("mlflow", "sqlalchemy", "sqlite3", "alembic", "requests", "urllib3")
_pending: list[int] = []


def _outermost_store_frame(frame: FrameType | None) -> FrameType | None:
    """The store frame that will return to our code, if `frame` is inside a store call; else None."""
    outermost = None
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] in STORE_MODULES:
        outermost, frame = frame, frame.f_back
    return outermost


def _raise_pending() -> None:
    sys.setprofile(None)
    first = _pending[0]
    _pending.clear()
    if first == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(f"received signal {signal.Signals(first).name}")


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _pending.append(signum)
    store_frame = _outermost_store_frame(frame) if len(_pending) == 1 else None
    if store_frame is None:
        _raise_pending()

    def raise_when_it_returns(f, event, arg):
        if event == "return" and f is store_frame:
            _raise_pending()

    sys.setprofile(raise_when_it_returns)


@contextlib.contextmanager
def deferred_in_store_calls() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM are raised outside store calls (the handlers are restored after)."""
    _pending.clear()
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
