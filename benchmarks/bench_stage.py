"""Where the wall time of one real train stage goes, and its ratio wall / SGD (goal <= 1.5x).

Not a test. Run: .venv/bin/python benchmarks/bench_stage.py [--stage train@svm-l2] [--synthetic] [--keep DIR]
(`make bench-stage` does this.) It copies the project into a temporary git + DVC folder, prepares the data
(`dvc repro preprocess`: the real CIFAR-10 from ../shared/data when it exists, through a file:// URL,
else a synthetic archive of the same shape), then times `dvc repro <stage>` with the stage's command
run under benchmarks/stage_timer.py, which accounts for the stage process's time per category
(interpreter, imports, params, data, store set-up, SGD, logging, pictures, artifacts, other; see there).
DVC bookkeeping = the `dvc repro` wall minus the stage process's wall.
Defaults of conf/ (20 epochs, batch 200), one BLAS thread, MLflow into the copy's own sqlite store.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import BIN, PROJECT_FILES, ROOT, SHARED_CIFAR, SHARED_CIFAR_MD5  # noqa: E402  (one list of the project's files)

PROJECT_FILES = (*PROJECT_FILES, "benchmarks/stage_timer.py")
ORDER = ("interpreter", "imports", "params", "data", "store set-up", "SGD", "logging", "pictures", "artifacts",
         "other")
GOAL = 1.5


def run(cmd, cwd, env, check=True):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        sys.exit(f"error: {' '.join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc


def make_copy(dest: Path, env: dict, synthetic: bool, timer: bool = True) -> tuple[str, str, str]:
    """The project in dest (git repo), params composed for the data, with timer=True the train stages' command
    run under stage_timer.py (only the copy's dvc.yaml changes); returns (a description of the data, its url, its md5)."""
    for name in PROJECT_FILES:
        src, target = ROOT / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, target)
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
        text, count = re.subn(r"python pipeline/train\.py", "python benchmarks/stage_timer.py pipeline/train.py",
                              dvc_yaml.read_text())
        if count != 1:
            sys.exit("error: dvc.yaml has no single 'python pipeline/train.py' command to time")
        dvc_yaml.write_text(text)
    run(["git", "add", "-A"], dest, env)
    run(["git", "commit", "-qm", "project copy"], dest, env)
    return what, url, md5


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="train@svm-l2", help="a train@<loss>-<regularizer> stage (default svm-l2)")
    parser.add_argument("--synthetic", action="store_true", help="synthetic data even if the real copy exists")
    parser.add_argument("--keep", type=Path, default=None, help="build the copy here and keep it (default: a temp dir)")
    args = parser.parse_args()
    if not re.fullmatch(r"train@[a-z_]+-[a-z0-9]+", args.stage):
        parser.error(f"--stage must be train@<loss>-<regularizer>, got {args.stage!r}")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="bench",
               GIT_AUTHOR_EMAIL="bench@localhost", GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@localhost")
    with tempfile.TemporaryDirectory(prefix="bench-stage-") as tmp:
        dest = (args.keep or Path(tmp)) / "project"
        if dest.exists():
            parser.error(f"--keep: {dest} exists already")
        what, _, _ = make_copy(dest, env, args.synthetic)
        print(f"project copy: {dest}\ndata: {what}")
        print(f"load average before start: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs "
              "(other processes skew timings)")
        run([BIN / "dvc", "repro", "preprocess"], dest, env)
        times = dest / "stage-times.json"
        start = time.perf_counter()
        proc = run([BIN / "dvc", "repro", args.stage], dest, {**env, "STAGE_TIMES": str(times)})
        wall = time.perf_counter() - start
        stage = json.loads(times.read_text())
        seconds = {**stage["seconds"], "DVC bookkeeping": wall - stage["process_wall"]}
        print(proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "")
        print(f"\n`dvc repro {args.stage}` wall {wall:.1f} s, of which the stage process {stage['process_wall']:.1f} s\n")
        print(f"{'where':18s} {'seconds':>8s} {'share':>6s}")
        for name in (*ORDER, "DVC bookkeeping"):
            value = seconds.get(name, 0.0)
            print(f"{name:18s} {value:8.2f} {value / wall:6.1%}")
        sgd = seconds.get("SGD", 0.0)
        ratio = wall / sgd if sgd else float("inf")
        print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        print(f"goal: stage wall / SGD <= {GOAL}x: {ratio:.2f}x -> {'PASS' if ratio <= GOAL else 'MISS'}")


if __name__ == "__main__":
    main()
