"""One line per update for work that takes more than a few seconds (preprocess, training epochs).

Quiet under CI (CI set to anything but "", "0", "false") or with LINCLASS_QUIET=1. Lines go to
stdout, flushed at once, so that `dvc repro` shows them while the stage runs.
"""
from __future__ import annotations

import os


def enabled() -> bool:
    quiet = (
        os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no") for name in ("CI", "LINCLASS_QUIET")
    )
    return not any(quiet)


def say(line: str) -> None:
    if enabled():
        print(line, flush=True)
