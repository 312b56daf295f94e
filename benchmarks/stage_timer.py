"""Run a stage script and account for its wall time; used by bench_stage.py as the stage's command.

    python benchmarks/stage_timer.py pipeline/train.py --loss svm --regularizer l2

runs the script as `__main__` (same argv, same exit code) and writes, to the JSON file named by
$STAGE_TIMES, the seconds spent per category, each call timed exclusively (a call of another category
made inside it, e.g. an import or a log call in the on_epoch callback of train_sgd, counts for that one):
  interpreter  process start -> this file runs (python start-up, site, the editable install hook)
  imports      finding and loading modules (every import, where ever it happens: a meta path finder first on
               sys.meta_path times the other finders and wraps the loader they return)
  params       stage_params: params.yaml read + composed conf/ (Hydra) + validation
  data         load_split / class_names
  store set-up tracking.setup (opens the MLflow store, the experiment)
  SGD          train_sgd
  logging      MlflowClient / mlflow.* calls and linclass.tracking's helpers (run start/end, records, registry)
  pictures     linclass.plots
  artifacts    np.save, DataFrame.to_csv, md5_file, write_json, atomic_dir, MLflow artifact upload
  other        the rest of the process (the stage's own code, numpy outside train_sgd, exit)
Timing only the main thread (a logging thread's work shows where the main thread waits for it).
"""
import time

T0 = time.perf_counter()

import atexit  # noqa: E402
import contextlib  # noqa: E402
import functools  # noqa: E402
import importlib.abc  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import runpy  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from collections import defaultdict  # noqa: E402


def process_age() -> float:
    """Seconds since this process started (10 ms resolution, from /proc)."""
    start_ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
    uptime = float(open("/proc/uptime").read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


AGE_AT_T0 = process_age()


class Clock:
    """Exclusive time per category: a nested call's time is taken off its caller's category."""

    def __init__(self):
        self.totals = defaultdict(float)
        self.stack = []

    def call(self, category, fn, *args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            return fn(*args, **kwargs)
        start = time.perf_counter()
        self.stack.append([category, 0.0])
        try:
            return fn(*args, **kwargs)
        finally:
            _, inner = self.stack.pop()
            elapsed = time.perf_counter() - start
            self.totals[category] += elapsed - inner
            if self.stack:
                self.stack[-1][1] += elapsed

    def wrap(self, category, fn):
        if getattr(fn, "_stage_timer", False):
            return fn

        # a @contextlib.contextmanager function (tracked_run, atomic_dir): its body runs in __enter__/__exit__
        context = fn is not inspect.unwrap(fn) and inspect.isgeneratorfunction(inspect.unwrap(fn))

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            result = self.call(category, fn, *args, **kwargs)
            if context and isinstance(result, contextlib.AbstractContextManager):
                return TimedContext(self, category, result)
            return result

        timed._stage_timer = True
        return timed


class TimedContext:
    def __init__(self, clock, category, inner):
        self.clock, self.category, self.inner = clock, category, inner

    def __enter__(self):
        return self.clock.call(self.category, self.inner.__enter__)

    def __exit__(self, *exc):
        return self.clock.call(self.category, self.inner.__exit__, *exc)

    def __getattr__(self, name):
        return getattr(self.inner, name)


CLOCK = Clock()

# module -> {attribute: category}; "*" = every public function of the module, "Class.*" every public method
PATCHES = {
    "numpy": {"save": "artifacts"},
    "pandas": {"DataFrame.to_csv": "artifacts"},
    "linclass.files": {"md5_file": "artifacts", "atomic_dir": "artifacts", "atomic_file": "artifacts"},
    "linclass.plumbing.stage": {"stage_params": "params", "write_json": "artifacts", "atomic_dir": "artifacts",
                                "atomic_file": "artifacts"},
    "linclass.plumbing.paths": {"load_split": "data", "class_names": "data", "load_model": "data"},
    "linclass.tracking.runs": {"*": "logging", "setup": "store set-up"},
    "linclass.tracking.records": {"*": "logging"},
    "linclass.tracking.registry": {"*": "logging"},
    "linclass.tracking.ui": {"*": "logging"},
    "linclass.core.sgd": {"train_sgd": "SGD"},
    "linclass.plots": {"*": "pictures"},
    "mlflow": {"*": "logging"},
    "mlflow.tracking.client": {"MlflowClient.*": "logging", "MlflowClient.log_artifacts": "artifacts",
                               "MlflowClient.log_artifact": "artifacts"},
}


AT_STAGE_START: list = []   # called as the stage's main() starts


def _patch(module):
    if module.__name__ == "linclass.plumbing.stage":
        module.run = _run_stage(module.run)
    patches = PATCHES.get(module.__name__, {})
    for name, category in patches.items():
        owner, _, attr = name.rpartition(".")
        target = getattr(module, owner) if owner else module
        if attr != "*":
            if hasattr(target, attr):
                setattr(target, attr, CLOCK.wrap(category, getattr(target, attr)))
            continue
        for key, value in list(vars(target).items()):
            if key.startswith("_") or not inspect.isfunction(value) or (f"{owner}.{key}" if owner else key) in patches:
                continue
            # a module's own functions (mlflow re-exports its fluent API), a class's methods
            if owner or module.__name__ == "mlflow" or value.__module__ == module.__name__:
                setattr(target, key, CLOCK.wrap(category, value))


def _run_stage(run):
    """linclass.plumbing.stage.run, with AT_STAGE_START called when the stage's main() starts: after run() has
    registered its exit handler (which ends the process), so that what is registered then runs before it."""

    def timed_run(main):
        @functools.wraps(main)
        def started():
            for call in AT_STAGE_START:
                call()
            return main()

        return run(started)

    return timed_run


class TimedLoader(importlib.abc.Loader):
    """A module's loader, its work timed as imports; the module patched once loaded."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return CLOCK.call("imports", self.loader.create_module, spec)

    def exec_module(self, module):
        CLOCK.call("imports", self.loader.exec_module, module)
        if module.__name__ in PATCHES:
            _patch(module)

    def __getattr__(self, name):   # get_resource_reader, get_data, ...
        return getattr(self.loader, name)


class TimedFinder(importlib.abc.MetaPathFinder):
    """First on sys.meta_path: asks the other finders (timed as imports) and wraps the loader found."""

    def find_spec(self, name, path, target=None):
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = CLOCK.call("imports", find, name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = TimedLoader(spec.loader)
                return spec
        return None


def main():
    script, *argv = sys.argv[1:]
    finder = TimedFinder()
    sys.meta_path.insert(0, finder)
    for loaded in [m for name, m in list(sys.modules.items()) if name in PATCHES]:
        _patch(loaded)
    sys.argv = [script, *argv]
    exit_code = [0]

    def report():  # an exit handler registered as the stage starts: it runs before the stage's own (os._exit)
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)
        wall = time.perf_counter() - T0
        totals = dict(CLOCK.totals)
        totals["other"] = wall - sum(totals.values())
        totals["interpreter"] = AGE_AT_T0
        out = os.environ.get("STAGE_TIMES")
        if out:
            with open(out, "w") as f:
                json.dump({"script": script, "argv": argv, "exit": exit_code[0], "process_wall": wall + AGE_AT_T0,
                           "seconds": totals}, f, indent=2)

    AT_STAGE_START.append(lambda: atexit.register(report))
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        exit_code[0] = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    sys.exit(exit_code[0])


if __name__ == "__main__":
    main()
