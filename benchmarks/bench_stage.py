"""Where the wall time of one real train stage goes, and its ratio wall / SGD (goal <= 1.5x).

Not a test. Run: .venv/bin/python benchmarks/bench_stage.py [--stage train@svm-l2] [--synthetic] [--keep DIR] [--warm]
(`make bench-stage` does this; --warm: the stage started from a warm interpreter, as `make repro` starts it,
instead of a fresh python.) It copies the project into a temporary git + DVC folder, prepares the data
(`dvc repro preprocess`: the real CIFAR-10 from ../shared/data when it exists, through a file:// URL,
else a synthetic archive of the same shape), then times `dvc repro <stage>` with the stage's command
run under benchmarks/stage_timer.py, which accounts for the stage process's time per category
(interpreter, imports, params, data, store set-up, SGD, logging, pictures, artifacts, other; see there).
DVC bookkeeping = the `dvc repro` wall minus the stage process's wall.
Defaults of conf/ (40 epochs, batch 200), one BLAS thread, MLflow into the copy's own sqlite store, made before
the stage runs (`linclass store`), as for every stage but a project's first.
"""

import argparse
import contextlib
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import BIN, ROOT, SHARED_CIFAR, SHARED_CIFAR_MD5, environment, load, project_files, run

ORDER = ("interpreter", "imports", "params", "data", "store set-up", "SGD", "logging", "pictures", "artifacts",
         "other")
GOAL = 1.5


def make_copy(dest: Path, env: dict, synthetic: bool, timer: bool = True) -> tuple[str, str, str]:
    """The project in dest (git repo), params composed for the data, with timer=True the train stages' command
    run under stage_timer.py (only the copy's dvc.yaml changes); returns (what the data is, its url, its md5)."""
    for name in project_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    if not synthetic and SHARED_CIFAR.exists():
        url, md5, what = f"file://{SHARED_CIFAR}", SHARED_CIFAR_MD5, f"real CIFAR-10 ({SHARED_CIFAR})"
    else:
        from linclass.data.synthetic import make_synthetic_cifar10

        archive = dest.parent / "synthetic-cifar-10-python.tar.gz"
        md5 = make_synthetic_cifar10(archive, n_train=50_000, n_test=10_000, seed=0)
        url, what = f"file://{archive}", "synthetic CIFAR-10-shaped archive (50,000 + 10,000 images)"
    run(["git", "init", "-q", "-b", "main"], dest, env)
    run([BIN / "python", "-m", "linclass.cli", "config", f"data.url={url}", f"data.md5={md5}"], dest, env)
    if timer:
        dvc_yaml = dest / "dvc.yaml"
        text = dvc_yaml.read_text()
        start = text.find("\n  train:\n")   # the pixel models' stage (train_features runs the same script)
        timed, count = re.subn(r"python pipeline/train\.py", "python benchmarks/stage_timer.py pipeline/train.py",
                               text[start:], count=1)
        if start < 0 or count != 1:
            sys.exit("error: dvc.yaml has no stage train with a 'python pipeline/train.py' command to time")
        dvc_yaml.write_text(text[:start] + timed)
    run(["git", "add", "-A"], dest, env)
    run(["git", "commit", "-qm", "project copy"], dest, env)
    return what, url, md5


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="train@svm-l2", help="a train@<loss>-<regularizer> stage (default svm-l2)")
    parser.add_argument("--synthetic", action="store_true", help="synthetic data even if the real copy exists")
    parser.add_argument("--keep", type=Path, default=None, help="build the copy here and keep it (default: a temp dir)")
    parser.add_argument("--warm", action="store_true",
                        help="start the stage from a warm interpreter, as `make repro` does (default: a fresh python)")
    args = parser.parse_args()
    if not re.fullmatch(r"train@[a-z_]+-[a-z0-9]+", args.stage):
        parser.error(f"--stage must be train@<loss>-<regularizer>, got {args.stage!r}")

    env = environment()
    with tempfile.TemporaryDirectory(prefix="bench-stage-") as tmp:
        dest = (args.keep or Path(tmp)) / "project"
        if dest.exists():
            parser.error(f"--keep: {dest} exists already")
        what, _, _ = make_copy(dest, env, args.synthetic)
        print(f"project copy: {dest}\ndata: {what}")
        print(f"before start: {load()} (other processes skew timings)")
        run([BIN / "dvc", "repro", "preprocess"], dest, env)
        # the MLflow store made beforehand, as for every stage but a project's first (creating it: about 0.6 s)
        run([BIN / "python", "-m", "linclass.cli", "store"], dest, env)
        times = dest / "stage-times.json"
        with contextlib.ExitStack() as stack:
            warm = {}
            if args.warm:   # ready before the stage starts; one BLAS thread, the train stages' (train.blas_threads)
                from linclass.orchestration.warm import serving

                warm = stack.enter_context(serving(dest, {**env, "OPENBLAS_NUM_THREADS": "1"},
                                                   dest.parent / "warm.log", wait=180))
            start = time.perf_counter()
            proc = run([BIN / "dvc", "repro", args.stage], dest, {**env, "STAGE_TIMES": str(times), **warm})
            wall = time.perf_counter() - start
        stage = json.loads(times.read_text())
        seconds = {**stage["seconds"], "DVC bookkeeping": wall - stage["process_wall"]}
        print(proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "")
        how = " (warm)" if args.warm else ""
        print(f"\n`dvc repro {args.stage}`{how} wall {wall:.1f} s, of which the stage process "
              f"{stage['process_wall']:.1f} s\n")
        print(f"{'where':18s} {'seconds':>8s} {'share':>6s}")
        for name in (*ORDER, "DVC bookkeeping"):
            value = seconds.get(name, 0.0)
            print(f"{name:18s} {value:8.2f} {value / wall:6.1%}")
        sgd = seconds.get("SGD", 0.0)
        ratio = wall / sgd if sgd else float("inf")
        print(f"\nat the end: {load()}")
        print(f"goal: stage wall / SGD <= {GOAL}x: {ratio:.2f}x -> {'PASS' if ratio <= GOAL else 'MISS'}")


if __name__ == "__main__":
    main()
