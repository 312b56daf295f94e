"""What every DVC stage entry point shares: validated params, atomic outputs, one-line errors.

Set LINCLASS_DEBUG=1 to get the full traceback instead of the one-line error.

A stage script is `def main(): ...` plus `if __name__ == "__main__": run(main)`.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

from linclass.files import atomic_dir, atomic_file  # noqa: F401  (stage scripts write through these)
from linclass.plumbing.config import ConfigError, compose, load_params, validate

EXIT_ERROR = 1
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


def stage_params(params_path: str | Path = "params.yaml", conf_dir: str | Path = "conf") -> dict:
    """params.yaml, validated against the conf/ tree (unknown keys, names, ranges)."""
    params = load_params(params_path)
    reference = compose(conf_dir) if Path(conf_dir, "config.yaml").exists() else None
    return validate(params, reference)


def run(main: Callable[[], None]) -> None:
    """Run a stage's main(): known failures become one line on stderr and a non-zero exit.

    mlflow is not imported here (it costs seconds): a stage that never imported it cannot raise its errors.
    """
    try:
        main()
    except KeyboardInterrupt as exc:
        tracking = sys.modules.get("linclass.plumbing.tracking")  # only a tracking stage turns SIGTERM into this
        if tracking is not None and isinstance(exc, tracking.Terminated):
            print(f"error: stopped ({exc}); nothing was written", file=sys.stderr)
            sys.exit(EXIT_SIGTERM)
        print("error: interrupted (SIGINT); nothing was written", file=sys.stderr)
        sys.exit(EXIT_SIGINT)
    except Exception as exc:
        if not isinstance(exc, _known_errors()) or os.environ.get("LINCLASS_DEBUG"):
            raise
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, whatever the message
        sys.exit(EXIT_ERROR)


def _known_errors() -> tuple[type[BaseException], ...]:
    known = (ConfigError, ValueError, RuntimeError, OSError, FloatingPointError)
    mlflow_exceptions = sys.modules.get("mlflow.exceptions")  # e.g. a tracking URI that MLflow has no store for
    return known + (mlflow_exceptions.MlflowException,) if mlflow_exceptions else known


def write_json(path: str | Path, data) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
