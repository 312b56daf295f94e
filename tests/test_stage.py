"""linclass.plumbing.stage.run: how a stage script ends (real subprocesses)."""
import subprocess
import sys
import textwrap

from conftest import ROOT

SCRIPT = textwrap.dedent('''
    import atexit, sys
    from pathlib import Path
    from linclass.plumbing.stage import run

    def main():
        atexit.register(lambda: Path("atexit-ran").write_text("yes"))   # as MLflow registers its own
        print("x" * 100_000)          # more than a pipe buffer: must be flushed, not lost
        print("to stderr", file=sys.stderr)
        if len(sys.argv) > 1:
            raise ValueError(f"bad value {sys.argv[1]!r}")

    if __name__ == "__main__":
        run(main)
''')


def run_script(tmp_path, *args):
    (tmp_path / "stage_script.py").write_text(SCRIPT)
    return subprocess.run([sys.executable, "stage_script.py", *args], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}, timeout=60)


def test_a_finished_stage_exits_0_with_its_output_flushed_and_its_atexit_handlers_run(tmp_path):
    done = run_script(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "x" * 100_000 + "\n" and done.stderr == "to stderr\n"
    assert (tmp_path / "atexit-ran").read_text() == "yes"


def test_a_failed_stage_still_says_its_one_line_error_and_exits_1(tmp_path):
    done = run_script(tmp_path, "oops")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == "error: bad value 'oops'"
    assert (tmp_path / "atexit-ran").read_text() == "yes"


def test_under_a_profiler_the_stage_exits_normally_so_the_profile_is_written(tmp_path):
    (tmp_path / "stage_script.py").write_text(SCRIPT)
    done = subprocess.run([sys.executable, "-m", "cProfile", "-o", "stage.prof", "stage_script.py"], cwd=tmp_path,
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src")}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "stage.prof").stat().st_size > 0
