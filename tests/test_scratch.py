"""Temporaries live where DVC never hashes them and are removed after a kill; a truncated array is named;
one pipeline at a time in a workspace."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from linclass import files
from linclass.plumbing import paths, stage

SRC = str(Path(__file__).parents[1] / "src")


@pytest.fixture
def project(tmp_path):
    (tmp_path / ".dvc").mkdir()
    return tmp_path


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_temporaries_go_to_the_project_scratch_folder_not_beside_the_output(project):
    target = project / "models" / "svm-l2"
    with files.atomic_dir(target) as tmp:
        assert tmp.parent == project / files.SCRATCH and tmp.name.startswith(f".svm-l2.tmp-{os.getpid()}-")
        (tmp / "W.npy").write_text("1")
        with files.atomic_file(tmp / "b.npy") as inner:  # inside a temporary folder: same scratch folder
            assert inner.parent == project / files.SCRATCH
            inner.write_text("2")
        assert list((project / "models").iterdir()) == []  # nothing for DVC to hash in models/
    assert sorted(p.name for p in target.iterdir()) == ["W.npy", "b.npy"]
    assert list((project / files.SCRATCH).iterdir()) == []


def test_outside_a_dvc_project_temporaries_stay_beside_the_file(tmp_path):
    assert files.scratch_dir(tmp_path / "a" / "x.csv") == tmp_path / "a"


def test_leftovers_of_dead_processes_are_removed_live_ones_kept(project):
    scratch = project / files.SCRATCH
    scratch.mkdir(parents=True)
    dead = scratch / f".svm-l2.tmp-{dead_pid()}-abc"
    dead.mkdir()
    (dead / "W.npy").write_text("junk")
    part = scratch / f".cifar-10-python.tar.gz.tmp-{dead_pid()}-xyz.part"
    part.write_text("half a download")
    live = scratch / f".X_train.npy.tmp-{os.getpid()}-def.npy"
    live.write_text("being written")
    legacy = project / "models" / ".svm-none.tmp-k2j3"  # where earlier versions put them: beside the output
    legacy.mkdir(parents=True)
    (legacy / "b.npy").write_text("junk")
    kept = project / "models" / "svm-none"
    kept.mkdir()
    removed = stage.remove_leftovers(project)
    assert sorted(removed) == sorted([dead, part, legacy])
    assert live.exists() and kept.exists() and not dead.exists() and not legacy.exists()


STAGE = """
import os, signal, sys, tempfile
from linclass.plumbing import stage

def main():
    with tempfile.TemporaryDirectory() as pictures:   # as train.py draws its pictures, as MLflow saves a model
        open(os.path.join(pictures, "loss_curves.png"), "w").close()
        print(pictures, os.getpid(), flush=True)
        if sys.argv[1] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)

stage.run(main)
print(tempfile.gettempdir())
"""


@pytest.mark.parametrize("end", ["finished", "kill"])
def test_a_stage_makes_its_temporary_files_in_the_scratch_folder_where_a_kill_leaves_them(project, tmp_path, end):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    script = project / "stage.py"
    script.write_text(STAGE)
    proc = subprocess.run([sys.executable, str(script), end], cwd=project, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": SRC, "TMPDIR": str(tmpdir)})
    folder, pid = proc.stdout.splitlines()[0].split()
    pictures = Path(folder)
    assert pictures.parent.parent == project / files.SCRATCH, proc.stdout
    assert pictures.parent.name.startswith(f".tempdir{files.TEMP_MARK}{pid}-"), proc.stdout
    assert list(tmpdir.iterdir()) == []
    if end == "finished":   # removed, and tempfile's folder is TMPDIR again
        assert proc.returncode == 0 and proc.stdout.splitlines()[1:] == [str(tmpdir)], proc.stdout + proc.stderr
        assert list((project / files.SCRATCH).iterdir()) == []
    else:                   # left in the scratch folder, under the killed pid, for the next stage's start
        assert proc.returncode == -9
        assert list((project / files.SCRATCH).iterdir()) == [pictures.parent]
        assert stage.remove_leftovers(project) == [pictures.parent] and not pictures.parent.exists()


def test_load_split_is_the_design_matrix_of_the_pixels(tmp_path):
    """X_<split>.npy (uint8 rows) with mean_image.npy and scale.json: X = (pixels - mean) / scale, as Pixels."""
    from linclass.core.pixels import Pixels, design_matrix
    from linclass.data.cifar import CIFAR10_CLASSES, CifarData
    from linclass.data.preprocess import preprocess

    rng = np.random.default_rng(0)
    data = CifarData(rng.integers(0, 256, (60, 3072), dtype=np.uint8), rng.integers(0, 10, 60),
                     rng.integers(0, 256, (5, 3072), dtype=np.uint8), rng.integers(0, 10, 5), list(CIFAR10_CLASSES))
    preprocess(data, tmp_path, val_size=10, seed=0, scale=127.5)
    for mmap in (False, True):
        X, y = paths.load_split("val", tmp_path, mmap=mmap)
        assert isinstance(X, Pixels) and X.shape == (10, 3072) and X.scale == 127.5 and y.shape == (10,)
        assert isinstance(X.pixels, np.memmap) == mmap
        expected = design_matrix(np.load(tmp_path / "X_val.npy"), np.load(tmp_path / "mean_image.npy"), 127.5)
        np.testing.assert_array_equal(X.to_float(), expected)


def test_a_truncated_split_is_an_error_naming_the_file(tmp_path):
    np.save(tmp_path / "X_train.npy", np.zeros((100, 30), np.uint8))
    np.save(tmp_path / "y_train.npy", np.zeros(100, np.int64))
    np.save(tmp_path / "mean_image.npy", np.zeros(30, np.float32))
    (tmp_path / "scale.json").write_text('{"scale": 255.0}')
    assert paths.load_split("train", tmp_path)[0].shape == (100, 30)  # whole, it loads
    data = (tmp_path / "X_train.npy").read_bytes()
    (tmp_path / "X_train.npy").write_bytes(data[: len(data) // 2])
    for mmap in (False, True):
        with pytest.raises(ValueError, match=r"cannot read .*X_train\.npy .*truncated"):
            paths.load_split("train", tmp_path, mmap=mmap)
    (tmp_path / "X_train.npy").write_bytes(data)
    (tmp_path / "scale.json").write_text('{"scale": 25')
    with pytest.raises(ValueError, match=r"cannot read .*scale\.json .*truncated"):
        paths.load_split("train", tmp_path)


def test_a_second_workspace_run_refuses_before_it_touches_params(project):
    """`linclass config` (make params) while another pipeline holds the workspace: one line, params.yaml kept."""
    from filelock import FileLock

    from linclass.cli import WORKSPACE_LOCK

    (project / "conf").mkdir()   # a project's root folder, which `linclass config` requires
    (project / "dvc.yaml").write_text("stages: {}\n")
    (project / "params.yaml").write_text("train:\n  epochs: 150\n")
    env = {**os.environ, "PYTHONPATH": SRC}
    with FileLock(project / WORKSPACE_LOCK):
        second = subprocess.run([sys.executable, "-m", "linclass.cli", "config"], cwd=project, env=env,
                                capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert second.stderr.count("\n") == 1 and second.stderr.startswith("error: another pipeline runs in this workspace")
    assert "linclass grid / linclass sweep" in second.stderr
    assert (project / "params.yaml").read_text() == "train:\n  epochs: 150\n"
