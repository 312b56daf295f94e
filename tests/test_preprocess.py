import json

import numpy as np
import pytest

from linclass.core.pixels import Pixels
from linclass.data.cifar import CIFAR10_CLASSES, CifarData
from linclass.data.preprocess import mean_image, preprocess, select_rows, split_train_val

FILES = ["X_test.npy", "X_train.npy", "X_val.npy", "classes.json", "mean_image.npy", "scale.json", "y_test.npy",
         "y_train.npy", "y_val.npy"]


def make_data(n_train=200, n_test=50, dim=3072, seed=0):
    rng = np.random.default_rng(seed)
    return CifarData(
        x_train=rng.integers(0, 256, size=(n_train, dim), dtype=np.uint8),
        y_train=rng.integers(0, 10, size=n_train).astype(np.int64),
        x_test=rng.integers(0, 256, size=(n_test, dim), dtype=np.uint8),
        y_test=rng.integers(0, 10, size=n_test).astype(np.int64),
        class_names=list(CIFAR10_CLASSES),
    )


def read_split(out, split):
    """X_<split>.npy as the design matrix it stands for: Pixels with mean_image.npy and scale.json."""
    scale = json.loads((out / "scale.json").read_text())["scale"]
    return Pixels(np.load(out / f"X_{split}.npy"), np.load(out / "mean_image.npy"), scale)


@pytest.fixture(scope="module")
def data():
    return make_data()


# --- split_train_val ------------------------------------------------------------------------


def test_split_is_disjoint_complete_and_deterministic():
    train, val = split_train_val(100, 20, seed=7)
    assert len(train) == 80 and len(val) == 20
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(100))
    train2, val2 = split_train_val(100, 20, seed=7)
    np.testing.assert_array_equal(train, train2)
    np.testing.assert_array_equal(val, val2)
    _, val3 = split_train_val(100, 20, seed=8)
    assert not np.array_equal(val, val3)


@pytest.mark.parametrize("n, val_size", [(100, 0), (100, 100), (100, -1), (100, 101), (100, 2.5), (1, 1), (100, True)])
def test_split_rejects_bad_sizes(n, val_size):
    with pytest.raises(ValueError, match=r"n must be|0 < val_size < n"):
        split_train_val(n, val_size, seed=0)


# --- select_rows ----------------------------------------------------------------------------


def test_select_rows_copies_the_rows_chunk_by_chunk(monkeypatch):
    import linclass.data.preprocess as pp

    monkeypatch.setattr(pp, "CHUNK_ROWS", 4)  # several chunks and a partial last one
    x = np.random.default_rng(0).integers(0, 256, size=(30, 6), dtype=np.uint8)
    rows = np.array([5, 0, 29, 7, 7, 12, 3, 1, 2, 28, 11])
    out = np.zeros((11, 6), np.uint8)
    assert select_rows(x, rows, out) is out
    np.testing.assert_array_equal(out, x[rows])


def test_mean_image_accumulates_in_float64(monkeypatch):
    import linclass.data.preprocess as pp

    monkeypatch.setattr(pp, "CHUNK_ROWS", 7)
    x = np.random.default_rng(2).integers(0, 256, size=(50, 5), dtype=np.uint8)
    m = mean_image(x)
    assert m.dtype == np.float32
    np.testing.assert_array_equal(m, x.mean(axis=0, dtype=np.float64).astype(np.float32))
    np.testing.assert_array_equal(mean_image(x, np.arange(10, 20)), x[10:20].mean(axis=0).astype(np.float32))


# --- preprocess -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def processed(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep")
    summary = preprocess(data, out, val_size=40, seed=3)
    return out, summary


def test_writes_exactly_the_expected_files(processed):
    out, _ = processed
    assert sorted(p.name for p in out.iterdir()) == FILES  # and no temp files


def test_shapes_and_dtypes(processed):
    out, summary = processed
    expected = {
        "X_train": ((160, 3072), np.uint8),
        "X_val": ((40, 3072), np.uint8),
        "X_test": ((50, 3072), np.uint8),
        "y_train": ((160,), np.int64),
        "y_val": ((40,), np.int64),
        "y_test": ((50,), np.int64),
        "mean_image": ((3072,), np.float32),
    }
    for name, (shape, dtype) in expected.items():
        arr = np.load(out / f"{name}.npy", mmap_mode="r")
        assert isinstance(arr, np.memmap), name
        assert arr.shape == shape and arr.dtype == dtype, name
    assert json.loads((out / "classes.json").read_text()) == list(CIFAR10_CLASSES)
    assert json.loads((out / "scale.json").read_text()) == {"scale": 255.0}
    assert (summary["n_train"], summary["n_val"], summary["n_test"], summary["dim"]) == (160, 40, 50, 3072)


def test_data_is_a_quarter_of_the_float32_design_matrices(processed):
    """1 byte a pixel: the .npy files are the pixel rows plus their headers, no float32 copy."""
    out, _ = processed
    for split, n in (("train", 160), ("val", 40), ("test", 50)):
        assert (out / f"X_{split}.npy").stat().st_size <= n * 3072 + 256, split


def test_train_is_zero_mean_but_val_and_test_are_not(processed):
    out, _ = processed
    X_train = read_split(out, "train")
    np.testing.assert_allclose(X_train.to_float().mean(axis=0, dtype=np.float64), 0.0, atol=1e-6)
    for split in ("val", "test"):
        X = read_split(out, split)
        assert np.abs(X.to_float().mean(axis=0, dtype=np.float64)).max() > 1e-3, split


def test_rows_are_the_split_images(data, processed):
    out, _ = processed
    train_idx, val_idx = split_train_val(200, 40, seed=3)
    mean = np.load(out / "mean_image.npy")
    np.testing.assert_array_equal(mean, data.x_train[train_idx].mean(axis=0).astype(np.float32))
    test_idx = np.arange(len(data.x_test))
    for split, x, y, rows in (
        ("train", data.x_train, data.y_train, train_idx),
        ("val", data.x_train, data.y_train, val_idx),
        ("test", data.x_test, data.y_test, test_idx),
    ):
        np.testing.assert_array_equal(np.load(out / f"X_{split}.npy"), x[rows])
        np.testing.assert_array_equal(np.load(out / f"y_{split}.npy"), y[rows])


def test_summary_counts_and_channel_means(data, processed):
    _, summary = processed
    train_idx, val_idx = split_train_val(200, 40, seed=3)
    assert summary["class_counts"]["train"] == np.bincount(data.y_train[train_idx], minlength=10).tolist()
    assert summary["class_counts"]["val"] == np.bincount(data.y_train[val_idx], minlength=10).tolist()
    assert summary["class_counts"]["test"] == np.bincount(data.y_test, minlength=10).tolist()
    channel_means = data.x_train[train_idx].reshape(-1, 3, 1024).mean(axis=(0, 2))
    np.testing.assert_allclose(summary["mean_pixel_per_channel"], channel_means, rtol=1e-6)
    json.dumps(summary)  # serializable as-is


def test_mean_uses_training_split_only(tmp_path):
    """Val images are all 255, train images all 0: any val leakage would move the mean off 0."""
    data = make_data(n_train=100, n_test=10)
    train_idx, val_idx = split_train_val(100, 25, seed=5)
    data.x_train[train_idx] = 0
    data.x_train[val_idx] = 255
    preprocess(data, tmp_path, val_size=25, seed=5, scale=1.0)
    np.testing.assert_array_equal(np.load(tmp_path / "mean_image.npy"), np.zeros(3072, np.float32))
    np.testing.assert_array_equal(read_split(tmp_path, "train").to_float(), 0.0)
    np.testing.assert_array_equal(read_split(tmp_path, "val").to_float(), 255.0)


def test_same_seed_same_bytes_different_seed_different_split(data, tmp_path):
    preprocess(data, tmp_path / "a", val_size=30, seed=11)
    preprocess(data, tmp_path / "b", val_size=30, seed=11)
    preprocess(data, tmp_path / "c", val_size=30, seed=12)
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "y_val.npy").read_bytes() != (tmp_path / "c" / "y_val.npy").read_bytes()


def test_val_rows_are_disjoint_from_train_rows(tmp_path):
    data = make_data(n_train=120, n_test=5)
    data.x_train[:, 0] = np.arange(120)  # feature 0 identifies the image
    preprocess(data, tmp_path, val_size=20, seed=0, scale=1.0)
    ids_train = np.load(tmp_path / "X_train.npy")[:, 0].astype(int)
    ids_val = np.load(tmp_path / "X_val.npy")[:, 0].astype(int)
    assert len(set(ids_train)) == 100 and len(set(ids_val)) == 20
    assert set(ids_train).isdisjoint(ids_val)
    assert set(ids_train) | set(ids_val) == set(range(120))


def test_max_train_takes_the_first_of_the_shuffled_split(data, tmp_path):
    summary = preprocess(data, tmp_path, val_size=40, seed=3, max_train=25)
    train_idx, _ = split_train_val(200, 40, seed=3)
    assert summary["n_train"] == 25 and summary["n_val"] == 40
    np.testing.assert_array_equal(np.load(tmp_path / "y_train.npy"), data.y_train[train_idx[:25]])
    np.testing.assert_array_equal(
        np.load(tmp_path / "mean_image.npy"), data.x_train[train_idx[:25]].mean(axis=0).astype(np.float32)
    )


def test_overwrites_previous_outputs_atomically(data, tmp_path):
    preprocess(data, tmp_path, val_size=40, seed=3, max_train=10)
    preprocess(data, tmp_path, val_size=40, seed=3)
    assert np.load(tmp_path / "X_train.npy", mmap_mode="r").shape == (160, 3072)
    assert sorted(p.name for p in tmp_path.iterdir()) == FILES


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(val_size=0), "val_size"),
        (dict(val_size=200), "val_size"),
        (dict(val_size=-5), "val_size"),
        (dict(max_train=0), "max_train"),
        (dict(max_train=161), r"max_train must be None or an integer in \[1, 160\]"),
        (dict(scale=0), "scale"),
        (dict(scale=-1.0), "scale"),
    ],
)
def test_bad_arguments_are_clear_errors_and_write_nothing(data, tmp_path, kwargs, match):
    args = dict(val_size=40, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        preprocess(data, tmp_path / "out", **args)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_bad_data_is_a_clear_error(tmp_path):
    data = make_data(n_train=20, n_test=5)
    data.y_test[0] = 10
    with pytest.raises(ValueError, match=r"y_test must be in \[0, 10\)"):
        preprocess(data, tmp_path, val_size=5)
    data = make_data(n_train=20, n_test=5)
    data.x_test = data.x_test[:, :100]
    with pytest.raises(ValueError, match="x_test has 100 features"):
        preprocess(data, tmp_path, val_size=5)


def test_failure_mid_write_leaves_no_temp_file_and_keeps_old_output(data, tmp_path, monkeypatch):
    import linclass.data.preprocess as pp

    preprocess(data, tmp_path, val_size=40, seed=3)
    before = (tmp_path / "X_train.npy").read_bytes()

    def failing_select_rows(images_uint8, rows, out):
        out[:1] = 1  # partially written, then the disk "fills up"
        raise OSError("No space left on device")

    monkeypatch.setattr(pp, "select_rows", failing_select_rows)
    with pytest.raises(OSError, match="No space left"):
        preprocess(data, tmp_path, val_size=40, seed=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == FILES
    assert (tmp_path / "X_train.npy").read_bytes() == before
