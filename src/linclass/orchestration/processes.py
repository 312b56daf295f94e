"""Ending processes: SIGTERM first, SIGKILL for those that outlive a grace period."""
from __future__ import annotations

import contextlib

import psutil


def end_processes(processes: list[psutil.Process], grace: float) -> None:
    """SIGTERM to each of `processes`; SIGKILL to those still alive `grace` seconds later (then waited for)."""
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5)
