"""Wall time of the whole pipeline (download to report), serial and with train stages two at a time.

Not a test. Run: .venv/bin/python benchmarks/bench_pipeline.py [--modes serial parallel] [--expect-md5 FILE]
(`make bench-pipeline` does this.) Data: the real CIFAR-10 archive in ../shared/data through a file:// URL
(else a synthetic archive of the same shape, noted in the output); the default settings of conf/.
Each mode runs in its own fresh copy of the project (git init + commit: no DVC cache or run-cache shared):
  serial    `dvc exp run -S data.url=... -S data.md5=...`: what `make repro` runs, one stage at a time
  parallel  `python -m linclass.orchestration.sweep grid --jobs 2 data.url=... data.md5=...` then `dvc repro`:
            what `make grid-parallel` runs (download + preprocess, the 8 train stages as DVC queue
            experiments two at a time, then evaluation, studies and report with the models from the run-cache)
Both timed from start to the report. Then the weights of every model are compared (md5 of W.npy, b.npy)
between the modes, and with --expect-md5 FILE (lines `<md5>  models/<name>/W.npy` as from `md5sum`) against
a reference run.                                                                 goal: <= 150 s
"""
from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

from bench_stage import make_copy
from common import BIN, environment, load, run

GOAL = 150.0


def weights_md5(project: Path) -> dict[str, str]:
    return {str(p.relative_to(project)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(project.glob("models/*/[Wb].npy"))}


def timed_pipeline(mode: str, dest: Path, env: dict, synthetic: bool) -> tuple[float, str]:
    what, url, md5 = make_copy(dest, env, synthetic, timer=False)
    start = time.perf_counter()
    if mode == "serial":
        run([str(BIN / "dvc"), "exp", "run", "-S", f"data.url={url}", "-S", f"data.md5={md5}"], dest, env)
    else:
        run([str(BIN / "python"), "-m", "linclass.cli", "grid", "--jobs", "2", f"data.url={url}",
             f"data.md5={md5}"], dest, env)
        run([str(BIN / "dvc"), "repro"], dest, env)
    return time.perf_counter() - start, what


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", choices=["serial", "parallel"], default=["serial", "parallel"])
    parser.add_argument("--synthetic", action="store_true", help="synthetic data even if the real copy exists")
    parser.add_argument("--expect-md5", type=Path, default=None, help="md5sum output of a reference run's models")
    parser.add_argument("--keep", type=Path, default=None, help="build the copies here and keep them")
    args = parser.parse_args()
    env = environment()
    expected = None
    if args.expect_md5:
        lines = [line.split() for line in args.expect_md5.read_text().splitlines() if line.strip()]
        expected = {name: md5 for md5, name in lines}
    print(f"before start: {load()} (other processes skew timings)")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        base = args.keep or Path(tmp)
        for mode in args.modes:
            wall, what = timed_pipeline(mode, base / mode / "project", env, args.synthetic)
            results[mode] = (wall, weights_md5(base / mode / "project"))
            print(f"{mode:9s} {wall:7.1f} s  (data: {what})  goal <= {GOAL:g} s -> "
                  f"{'PASS' if wall <= GOAL else 'MISS'}", flush=True)
    print(f"at the end: {load()}")
    if len(results) == 2:
        (serial, md5_s), (parallel, md5_p) = results["serial"], results["parallel"]
        print(f"parallel / serial wall: {parallel / serial:.2f}")
        print(f"weights identical between serial and parallel: {md5_s == md5_p} ({len(md5_s)} files)")
    if expected is not None:
        for mode, (_, md5) in results.items():
            same = md5 == expected
            print(f"{mode}: weights identical to {args.expect_md5}: {same}"
                  + ("" if same else f" (differ: {sorted(k for k in expected if md5.get(k) != expected[k])})"))


if __name__ == "__main__":
    main()
