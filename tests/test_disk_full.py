"""A full disk during preprocess: one line naming the path and the space needed, nothing left behind, no
SIGBUS. A real small filesystem (tmpfs, mounted as root); skipped where mounting is not allowed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PREPROCESS = """
import sys
from pathlib import Path
from linclass import files
from linclass.data import preprocess as prep
from linclass.data.cifar import load_cifar10
if sys.argv[3] == "skip-the-free-space-check":  # so that the write itself meets the full disk
    prep.ensure_free_space = lambda *args: None
data = load_cifar10(sys.argv[1])
with files.atomic_dir(Path(sys.argv[2]) / "data" / "processed") as out:
    prep.preprocess(data, out, val_size=100)
"""


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    (mount / "project" / ".dvc").mkdir(parents=True)
    try:
        yield mount / "project"
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("check", ["free-space-check", "skip-the-free-space-check"])
def test_preprocess_on_a_full_disk_fails_in_one_line_and_leaves_nothing(small_disk, synthetic_archive, check):
    archive, _ = synthetic_archive  # 800 images: 2.5 MB of uint8 rows, on a 1 MiB filesystem
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    result = subprocess.run([sys.executable, "-c", PREPROCESS, str(archive), str(small_disk), check],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])  # an exception, not -7 (SIGBUS)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("OSError: not enough free space in ") and "MiB needed" in last, last
    scratch = small_disk / ".dvc" / "tmp" / "linclass-scratch"
    assert str(scratch) in last
    if check == "free-space-check":
        assert "preprocessed images" in last and "MiB free" in last
    else:
        assert "X_train.npy" in last
    assert list(scratch.iterdir()) == [] and not (small_disk / "data" / "processed").exists()
