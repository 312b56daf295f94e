"""What every DVC stage entry point shares: validated params, atomic outputs, one-line errors.

Set LINCLASS_DEBUG=1 to get the full traceback instead of the one-line error.

A stage script is `def main(): ...` plus `if __name__ == "__main__": run(main)`. run() first removes
the temporaries that a killed earlier attempt left behind (linclass.files.remove_leftovers) and turns
SIGTERM into an exception, so that a stopped stage removes its own. main() makes its other temporary files
(tempfile's) in the project's scratch folder too (linclass.files.scratch_tempdir), never in /tmp.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import psutil

from linclass import files
from linclass.config import load_params
from linclass.files import atomic_dir, atomic_file  # noqa: F401  (stage scripts write through these)
from linclass.settings import LOSS_NAMES, REGULARIZER_NAMES, ConfigError, Settings, validate

EXIT_ERROR = 1
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
# Where earlier versions put temporaries (beside the outputs): cleaned too, for workspaces that have them.
OUTPUT_PARENTS = (".", "data", "data/raw", "data/features", "models", "metrics", "metrics/train", "reports")


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that `finally` blocks and run status still happen."""


def stage_params(params_path: str | Path = "params.yaml") -> Settings:
    """params.yaml, checked against linclass.settings (unknown keys, types, ranges, names)."""
    return validate(load_params(params_path))


def train_models(params: Settings, argv: list[str] | None = None) -> list[tuple[str, str, str]]:
    """The (loss, regularizer, input) models a train stage trains; input is 'pixels' or a kind of features.

    From DVC_STAGE: train@<loss>-<regularizer> is one model on the pixels; train_features@<kind> is every
    loss x regularizer of the grid on that kind of features (one process for all of them: see
    pipeline/train.py). So the stage's command line carries no value from params (a value pasted into a
    shell command would be run by the shell before any check). By hand: --loss L --regularizer R, one
    model on the pixels.
    """
    parser = argparse.ArgumentParser(description="train one loss x regularizer of the grid on the pixels")
    parser.add_argument("--loss")
    parser.add_argument("--regularizer")
    args = parser.parse_args(argv)
    pairs = [(loss, reg) for loss in params.grid.losses for reg in params.grid.regularizers]
    stages: dict[str, list[tuple[str, str, str]]] = {f"train@{loss}-{reg}": [(loss, reg, "pixels")]
                                                    for loss, reg in pairs}
    stages.update({f"train_features@{kind}": [(loss, reg, kind) for loss, reg in pairs]
                   for kind in params.grid.features})
    if args.loss is None and args.regularizer is None:
        stage = os.environ.get("DVC_STAGE")
        if stage not in stages:
            given = f"DVC_STAGE={stage!r} is not a train stage of the grid" if stage else "no model given"
            raise ConfigError(f"{given}; allowed: {', '.join(stages)} (as DVC_STAGE, or --loss L --regularizer R)")
        return stages[stage]
    if args.loss is None or args.regularizer is None:
        raise ConfigError("--loss and --regularizer go together: give both or neither")
    for kind, name, known in (("loss", args.loss, LOSS_NAMES), ("regularizer", args.regularizer, REGULARIZER_NAMES)):
        if name not in known:
            raise ConfigError(f"unknown {kind} {name!r}; known: {', '.join(known)}")
    if (args.loss, args.regularizer) not in pairs:
        raise ConfigError(f"--loss {args.loss} --regularizer {args.regularizer} is not a model of the grid "
                          f"(grid.losses={params.grid.losses}, grid.regularizers={params.grid.regularizers})")
    return [(args.loss, args.regularizer, "pixels")]


def remove_leftovers(root: str | Path = ".") -> list[Path]:
    """Remove the temporaries of killed earlier attempts: the project's scratch folder, and beside outputs."""
    root = Path(root)
    project = files.project_root_of(root)
    folders = [project / files.SCRATCH] if project is not None else []
    removed = [p for folder in (*folders, *(root / name for name in OUTPUT_PARENTS))
               for p in files.remove_leftovers(folder)]
    if removed:
        print(f"removed {len(removed)} leftover(s) of an interrupted run: "
              f"{', '.join(p.name for p in removed[:5])}{' ...' if len(removed) > 5 else ''}")
    return removed


def _dvc_ancestor() -> tuple[int, float] | None:
    """(pid, start time) of the `dvc` process that runs this stage, None if there is none: among this process's
    parents or, for a stage forked from the warm interpreter (whose parents are its), its client's
    (warm_client.py, which DVC started, names itself in LINCLASS_WARM_CLIENT_PID)."""
    try:
        client = os.environ.get("LINCLASS_WARM_CLIENT_PID", "")
        start = psutil.Process(int(client)) if client.isdigit() else psutil.Process()
        for process in [start, *start.parents()][:9]:
            if any(os.path.basename(arg) == "dvc" for arg in process.cmdline()[:3]):
                return process.pid, process.create_time()
    except psutil.Error:
        return None
    return None


PARAMS_SEEN = Path(".dvc", "tmp", "linclass-params-seen.json")


def check_params_unchanged(params_path: str | Path = "params.yaml") -> None:
    """Refuse when params.yaml changed since an earlier stage of the same `dvc` run read it.

    A second `dvc exp run` in the same workspace rewrites params.yaml before it fails on DVC's lock; the
    running pipeline's next stages would then silently use its settings.
    """
    dvc = _dvc_ancestor()
    if dvc is None or not Path(".dvc").is_dir() or not Path(params_path).is_file():
        return
    digest = files.md5_file(params_path)
    try:
        seen = json.loads(PARAMS_SEEN.read_text())
    except (OSError, ValueError):
        seen = {}
    if seen.get("dvc") == list(dvc) and seen.get("md5") != digest:
        raise ConfigError(f"{params_path} changed while this pipeline ran (dvc pid {dvc[0]}): another `dvc exp run` "
                          "in this workspace rewrote it, and this stage would use its settings; run one at a time "
                          "(make exp SET=...) or side by side through the queue (dvc exp run --queue)")
    write_json(PARAMS_SEEN, {"dvc": list(dvc), "md5": digest})


def _on_sigterm(signum, frame):
    raise Terminated(f"received signal {signal.Signals(signum).name}")


def run(main: Callable[[], None]) -> None:
    """Run a stage's main(): known failures become one line on stderr and a non-zero exit.

    mlflow is not imported here (it costs seconds): a stage that never imported it cannot raise its errors.
    """
    signal.signal(signal.SIGTERM, _on_sigterm)
    finished: list[bool] = []
    if main.__module__ == "__main__":   # a stage script, not a caller that goes on
        atexit.register(_end_without_teardown, finished)   # first registered: runs after every other handler
    try:
        remove_leftovers()
        check_params_unchanged()
        with files.scratch_tempdir():   # a stage killed by SIGKILL leaves its temporary files to remove_leftovers
            main()
        finished.append(True)
    except KeyboardInterrupt as exc:
        if isinstance(exc, Terminated):
            print(f"error: stopped ({exc}); nothing was written", file=sys.stderr)
            sys.exit(EXIT_SIGTERM)
        print("error: interrupted (SIGINT); nothing was written", file=sys.stderr)
        sys.exit(EXIT_SIGINT)
    except Exception as exc:
        if not isinstance(exc, _known_errors()) or os.environ.get("LINCLASS_DEBUG"):
            raise
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, whatever the message
        sys.exit(EXIT_ERROR)


def _end_without_teardown(finished: list) -> None:
    """The last exit handler of a finished stage: end the process without the interpreter's teardown.

    With MLflow, pandas, SQLAlchemy and matplotlib loaded, freeing every module's objects takes about
    0.5 s, paid by each of the pipeline's stage processes, and nothing a stage wrote depends on it: its
    files are closed and renamed, its store writes committed, and every other exit handler (MLflow's,
    logging's) has run, since this one was registered before them. Not under a profiler or a tracer
    (coverage writes its data from a handler registered before this one), nor after a failure.
    """
    if finished and sys.getprofile() is None and sys.gettrace() is None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(0)


def _known_errors() -> tuple[type[BaseException], ...]:
    known = (ConfigError, ValueError, RuntimeError, OSError, FloatingPointError)
    mlflow_exceptions = sys.modules.get("mlflow.exceptions")  # e.g. a tracking URI that MLflow has no store for
    return known + (mlflow_exceptions.MlflowException,) if mlflow_exceptions else known


def write_json(path: str | Path, data) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
