import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from linclass.data.cifar import (
    CIFAR10_CLASSES,
    IMAGE_DIM,
    CifarFormatError,
    load_cifar10,
)
from linclass.data.synthetic import make_synthetic_cifar10, write_cifar10_archive
from linclass.files import md5_file as md5sum

REAL_ARCHIVE = Path(__file__).resolve().parents[2] / "shared/data/cifar-10-python.tar.gz"
REAL_MD5 = "2caa7800b270f2536e4e89f2ffa0be3f"


def random_split(rng, n, num_classes=10):
    x = rng.integers(0, 256, size=(n, IMAGE_DIM), dtype=np.uint8)
    y = rng.integers(0, num_classes, size=n).astype(np.int64)
    return x, y


@pytest.fixture
def small_arrays():
    rng = np.random.default_rng(1)
    x_train, y_train = random_split(rng, 23)  # 23 rows: batches of unequal size
    x_test, y_test = random_split(rng, 7)
    return x_train, y_train, x_test, y_test


def write_members(path, members):
    """A tar.gz with the given {name: python object} pickled (protocol 2) under cifar-10-batches-py/."""
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in members.items():
            payload = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def official_members(rng, n=4, str_keys=False):
    key = (lambda k: k) if str_keys else (lambda k: k.encode())
    members = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x, y = random_split(rng, n)
        members[name] = {key("data"): x, key("labels"): y.tolist()}
    members["batches.meta"] = {
        key("label_names"): [c.encode() for c in CIFAR10_CLASSES],
        key("num_cases_per_batch"): n,
        key("num_vis"): IMAGE_DIM,
    }
    return members


def test_write_load_roundtrip_exact(tmp_path, small_arrays):
    x_train, y_train, x_test, y_test = small_arrays
    path = tmp_path / "c.tar.gz"
    write_cifar10_archive(path, x_train, y_train, x_test, y_test, CIFAR10_CLASSES)
    data = load_cifar10(path)
    np.testing.assert_array_equal(data.x_train, x_train)
    np.testing.assert_array_equal(data.y_train, y_train)
    np.testing.assert_array_equal(data.x_test, x_test)
    np.testing.assert_array_equal(data.y_test, y_test)
    assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int64
    assert data.y_test.dtype == np.int64
    assert data.class_names == list(CIFAR10_CLASSES)
    assert data.num_classes == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tar.gz"]  # no temp file left


def test_writer_batches_splits_train_consecutively(tmp_path, small_arrays):
    x_train, y_train, x_test, y_test = small_arrays
    path = tmp_path / "c.tar.gz"
    write_cifar10_archive(path, x_train, y_train, x_test, y_test, CIFAR10_CLASSES, batches=2)
    with tarfile.open(path, "r:gz") as tar:
        parts = [
            pickle.loads(tar.extractfile(f"cifar-10-batches-py/data_batch_{i}").read(), encoding="bytes")
            for i in (1, 2)
        ]
        assert "cifar-10-batches-py/data_batch_3" not in tar.getnames()
    np.testing.assert_array_equal(np.concatenate([p[b"data"] for p in parts]), x_train)
    assert [len(p[b"labels"]) for p in parts] == [12, 11]
    with pytest.raises(CifarFormatError, match="data_batch_3 is missing"):  # the loader wants the official 5
        load_cifar10(path)


def test_written_archive_has_official_layout(tmp_path, small_arrays):
    path = tmp_path / "c.tar.gz"
    write_cifar10_archive(path, *small_arrays, CIFAR10_CLASSES)
    with tarfile.open(path, "r:gz") as tar:
        names = tar.getnames()
        assert set(names) == {"cifar-10-batches-py"} | {
            f"cifar-10-batches-py/{n}"
            for n in ["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]
        }
        for m in tar.getmembers():
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        raw = tar.extractfile("cifar-10-batches-py/data_batch_2").read()
        meta = pickle.loads(tar.extractfile("cifar-10-batches-py/batches.meta").read(), encoding="bytes")
    assert raw[:2] == b"\x80\x02"  # pickle protocol 2
    batch = pickle.loads(raw, encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape[1] == 3072
    assert isinstance(batch[b"labels"], list) and all(type(v) is int for v in batch[b"labels"])
    assert meta[b"label_names"] == [c.encode() for c in CIFAR10_CLASSES]
    assert meta[b"num_vis"] == 3072


def test_loads_str_keyed_pickles(tmp_path):
    members = official_members(np.random.default_rng(0), str_keys=True)
    write_members(tmp_path / "c.tar.gz", members)
    data = load_cifar10(tmp_path / "c.tar.gz")
    np.testing.assert_array_equal(data.x_train[:4], members["data_batch_1"]["data"])
    assert data.x_train.shape == (20, 3072) and data.x_test.shape == (4, 3072)


@pytest.mark.parametrize("missing", ["data_batch_3", "test_batch", "batches.meta"])
def test_missing_member_is_a_clear_error(tmp_path, missing):
    members = official_members(np.random.default_rng(0))
    del members[missing]
    path = tmp_path / "c.tar.gz"
    write_members(path, members)
    with pytest.raises(CifarFormatError) as info:
        load_cifar10(path)
    msg = str(info.value)
    assert f"cifar-10-batches-py/{missing} is missing" in msg and str(path) in msg
    assert "\n" not in msg


def test_member_outside_the_folder_does_not_count(tmp_path):
    members = official_members(np.random.default_rng(0))
    members["elsewhere/test_batch"] = members.pop("test_batch")  # -> cifar-10-batches-py/elsewhere/test_batch
    write_members(tmp_path / "c.tar.gz", members)
    with pytest.raises(CifarFormatError, match="test_batch is missing"):
        load_cifar10(tmp_path / "c.tar.gz")


@pytest.mark.parametrize("width", [3071, 1024])
def test_wrong_data_width_is_an_error(tmp_path, width):
    members = official_members(np.random.default_rng(0))
    members["data_batch_2"][b"data"] = np.zeros((4, width), np.uint8)
    write_members(tmp_path / "c.tar.gz", members)
    with pytest.raises(CifarFormatError, match=rf"data_batch_2 .*\(N, 3072\) uint8, got \(4, {width}\)"):
        load_cifar10(tmp_path / "c.tar.gz")


def test_label_count_mismatch_is_an_error(tmp_path):
    members = official_members(np.random.default_rng(0))
    members["test_batch"][b"labels"] = [0, 1, 2]
    write_members(tmp_path / "c.tar.gz", members)
    with pytest.raises(CifarFormatError, match="test_batch.*3 labels for 4 images"):
        load_cifar10(tmp_path / "c.tar.gz")


def test_out_of_range_label_is_an_error(tmp_path):
    members = official_members(np.random.default_rng(0))
    members["data_batch_1"][b"labels"] = [0, 1, 2, 10]
    write_members(tmp_path / "c.tar.gz", members)
    with pytest.raises(CifarFormatError, match=r"labels must be in \[0, 10\)"):
        load_cifar10(tmp_path / "c.tar.gz")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_with_foreign_globals_is_refused(tmp_path, capsys):
    members = official_members(np.random.default_rng(0))
    members["data_batch_1"][b"extra"] = _Evil()
    write_members(tmp_path / "c.tar.gz", members)
    with pytest.raises(CifarFormatError, match=r"refusing to load \S*print from a CIFAR pickle"):
        load_cifar10(tmp_path / "c.tar.gz")
    assert "pwned" not in capsys.readouterr().out


def test_not_an_archive_is_an_error(tmp_path):
    path = tmp_path / "c.tar.gz"
    path.write_bytes(b"this is not a tar file")
    with pytest.raises(CifarFormatError, match="cannot read"):
        load_cifar10(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_cifar10(tmp_path / "absent.tar.gz")


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(x_train=np.zeros((5, 3072), np.float32)), "x_train must be"),
        (dict(x_test=np.zeros((5, 100), np.uint8)), "x_test must be"),
        (dict(y_train=np.full(23, 10)), r"y_train must be in \[0, 10\)"),
        (dict(y_test=np.zeros(3, np.int64)), "y_test must be"),
        (dict(batches=0), "batches must be"),
        (dict(batches=24), "batches must be"),
        (dict(class_names=["only"]), "class_names"),
    ],
)
def test_writer_rejects_bad_input(tmp_path, small_arrays, change, match):
    x_train, y_train, x_test, y_test = small_arrays
    kwargs = dict(
        x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, class_names=CIFAR10_CLASSES, batches=5
    )
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        write_cifar10_archive(tmp_path / "c.tar.gz", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_synthetic_archive_is_deterministic(tmp_path):
    md5_a = make_synthetic_cifar10(tmp_path / "a.tar.gz", n_train=100, n_test=20, seed=0)
    md5_b = make_synthetic_cifar10(tmp_path / "b.tar.gz", n_train=100, n_test=20, seed=0)
    md5_c = make_synthetic_cifar10(tmp_path / "c.tar.gz", n_train=100, n_test=20, seed=1)
    assert md5_a == md5_b == md5sum(tmp_path / "a.tar.gz")
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()
    assert md5_c != md5_a
    with gzip.open(tmp_path / "a.tar.gz") as gz:
        gz.read(1)
    header = (tmp_path / "a.tar.gz").read_bytes()[:10]
    assert header[4:8] == b"\x00\x00\x00\x00"  # gzip mtime 0


def test_synthetic_archive_content(tmp_path):
    make_synthetic_cifar10(tmp_path / "s.tar.gz", n_train=500, n_test=100, seed=3)
    data = load_cifar10(tmp_path / "s.tar.gz")
    assert data.x_train.shape == (500, 3072) and data.x_test.shape == (100, 3072)
    assert data.class_names == list(CIFAR10_CLASSES)
    np.testing.assert_array_equal(np.bincount(data.y_train, minlength=10), np.full(10, 50))
    np.testing.assert_array_equal(np.bincount(data.y_test, minlength=10), np.full(10, 10))
    assert 0 < data.x_train.std() and data.x_train.min() >= 0


def test_synthetic_archive_other_class_count(tmp_path):
    make_synthetic_cifar10(tmp_path / "s.tar.gz", n_train=60, n_test=12, num_classes=3)
    data = load_cifar10(tmp_path / "s.tar.gz")
    assert data.class_names == ["airplane", "automobile", "bird"]
    assert set(np.unique(data.y_train)) == {0, 1, 2}


def test_synthetic_data_is_linearly_learnable(tmp_path):
    """Nearest class mean (a linear classifier) on the training split scores far above chance on test."""
    make_synthetic_cifar10(tmp_path / "s.tar.gz", n_train=500, n_test=100, seed=0)
    data = load_cifar10(tmp_path / "s.tar.gz")
    x_train, x_test = data.x_train.astype(np.float32), data.x_test.astype(np.float32)
    means = np.stack([x_train[data.y_train == c].mean(axis=0) for c in range(10)])  # (C, D)
    # argmin_c |x - m_c|^2 = argmax_c (m_c . x - |m_c|^2 / 2): a linear score W x + b
    scores = x_test @ means.T - 0.5 * (means**2).sum(axis=1)
    accuracy = (scores.argmax(axis=1) == data.y_test).mean()
    assert accuracy > 0.6


@pytest.mark.parametrize("bad", [dict(n_train=0), dict(n_test=0), dict(num_classes=1), dict(n_train=2.5)])
def test_synthetic_rejects_bad_sizes(tmp_path, bad):
    with pytest.raises(ValueError):
        make_synthetic_cifar10(tmp_path / "s.tar.gz", **bad)


@pytest.mark.realdata
def test_real_archive():
    if not REAL_ARCHIVE.is_file():
        pytest.skip(f"real CIFAR-10 archive not found at {REAL_ARCHIVE}")
    assert md5sum(REAL_ARCHIVE) == REAL_MD5
    data = load_cifar10(REAL_ARCHIVE)
    assert data.x_train.shape == (50000, 3072) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (10000, 3072) and data.x_test.dtype == np.uint8
    assert data.y_train.shape == (50000,) and data.y_train.dtype == np.int64
    assert data.y_test.shape == (10000,) and data.y_test.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(data.y_train, minlength=10), np.full(10, 5000))
    np.testing.assert_array_equal(np.bincount(data.y_test, minlength=10), np.full(10, 1000))
    assert data.class_names == list(CIFAR10_CLASSES)
    channel_sums = data.x_train.reshape(50000, 3, 1024).sum(axis=(0, 2), dtype=np.float64)
    np.testing.assert_allclose(channel_sums / (50000 * 1024), [125.3069, 122.9504, 113.8654], atol=1e-3)
