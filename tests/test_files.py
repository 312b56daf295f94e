"""linclass.files: outputs appear whole or not at all; md5 of files."""
import hashlib

import pytest

from linclass.files import TEMP_MARK, atomic_dir, atomic_file, md5_file


def test_atomic_file_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_file(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and list(tmp_path.iterdir()) == [target]


def test_atomic_dir_replaces_whole_folder_or_leaves_the_old_one(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "W.npy").write_text("1")
    assert sorted(p.name for p in target.iterdir()) == ["W.npy"]
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as tmp:
            (tmp / "b.npy").write_text("half")
            raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["W.npy"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_temporaries_are_hidden_marked_and_not_private(tmp_path):
    with atomic_file(tmp_path / "x.csv") as tmp:
        assert tmp.name.startswith(".x.csv" + TEMP_MARK) and tmp.suffix == ".csv"
        assert tmp.stat().st_mode & 0o044  # readable by group/others under the usual umask
    with atomic_dir(tmp_path / "d") as tmp:
        assert tmp.name.startswith(".d" + TEMP_MARK)


def test_md5_file_is_md5_of_the_concatenated_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 3_000_000)
    b.write_bytes(b"yz")
    assert md5_file(a) == hashlib.md5(a.read_bytes()).hexdigest()
    assert md5_file(a, b) == hashlib.md5(a.read_bytes() + b"yz").hexdigest()
