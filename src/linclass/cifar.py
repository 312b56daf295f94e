"""CIFAR-10 in the official "python version" layout: read it, write it, and make a small synthetic one.

Layout of cifar-10-python.tar.gz:
    cifar-10-batches-py/data_batch_1 ... data_batch_5   training batches
    cifar-10-batches-py/test_batch                      test batch
    cifar-10-batches-py/batches.meta                    {b"label_names", b"num_cases_per_batch", b"num_vis"}
Each batch is a pickle (written by Python 2, so load with encoding="bytes") of a dict with
    b"data":   (N, 3072) uint8, a row = R plane (1024) + G plane + B plane, each row-major 32x32
    b"labels": list of N ints in [0, 10)
Image of row r: r.reshape(3, 32, 32).transpose(1, 2, 0).
"""

from __future__ import annotations

import codecs
import gzip
import io
import os
import pickle
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
IMAGE_SHAPE = (3, 32, 32)  # channels, height, width
IMAGE_DIM = 3 * 32 * 32  # 3072
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class CifarFormatError(ValueError):
    """The archive is not in the official CIFAR-10 python layout."""


@dataclass
class CifarData:
    x_train: np.ndarray  # (N_train, 3072) uint8
    y_train: np.ndarray  # (N_train,) int64
    x_test: np.ndarray  # (N_test, 3072) uint8
    y_test: np.ndarray  # (N_test,) int64
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# ---------------------------------------------------------------------------------------------
# reading

# The batches hold numpy arrays, so unpickling must import numpy; nothing else is allowed in
# (a pickle can run arbitrary code). ndarray.__reduce__ names numpy's own reconstruct function.
_RECONSTRUCT = np.ndarray((0,), np.uint8).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # as the official (numpy 1.x) pickles name it
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # as numpy 2 names it
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how protocol 2 from Python 3 stores bytes
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR pickle") from None


def _unpickle(fileobj, where: str) -> dict:
    try:
        obj = _NumpyOnlyUnpickler(fileobj, encoding="bytes").load()
    except Exception as e:
        raise CifarFormatError(f"cannot unpickle {where}: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise CifarFormatError(f"{where} should hold a dict, got {type(obj).__name__}")
    # Python 2 pickles give bytes keys; accept str keys too.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _get(d: dict, key: str, where: str):
    if key not in d:
        raise CifarFormatError(f"{where} has no {key!r} entry (has {sorted(d)})")
    return d[key]


def _parse_batch(d: dict, where: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    data = _get(d, "data", where)
    if isinstance(data, (bytes, bytearray)):
        data = np.frombuffer(data, dtype=np.uint8).reshape(-1, IMAGE_DIM)
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != IMAGE_DIM or data.dtype != np.uint8:
        raise CifarFormatError(f"{where}: data should be (N, {IMAGE_DIM}) uint8, got {data.shape} {data.dtype}")
    labels = np.asarray(_get(d, "labels", where), dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise CifarFormatError(f"{where}: {labels.shape[0] if labels.ndim else 'no'} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise CifarFormatError(
            f"{where}: labels must be in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]"
        )
    return data, labels


def load_cifar10(archive_path: str | os.PathLike) -> CifarData:
    """Read cifar-10-python.tar.gz (official layout) straight from the archive, without extracting.

    Returns x_train (50000, 3072) uint8, y_train (50000,) int64, x_test (10000, 3072) uint8,
    y_test (10000,) int64 and the class names (batches.meta label_names) for the real data set;
    any number of images per batch is accepted.
    """
    archive_path = Path(archive_path)
    if not archive_path.is_file():
        raise FileNotFoundError(f"CIFAR-10 archive not found: {archive_path}")
    wanted = {*TRAIN_BATCHES, TEST_BATCH, META}
    raw: dict[str, dict] = {}
    try:
        with tarfile.open(archive_path, "r:*") as tar:
            for member in tar:  # one sequential pass through the gzip stream
                path = PurePosixPath(member.name)
                if member.isfile() and path.parent.name == FOLDER and path.name in wanted and path.name not in raw:
                    with tar.extractfile(member) as f:
                        raw[path.name] = _unpickle(f, f"{member.name} in {archive_path}")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise CifarFormatError(f"cannot read {archive_path} as a tar archive: {type(e).__name__}: {e}") from None

    missing = [name for name in (*TRAIN_BATCHES, TEST_BATCH, META) if name not in raw]
    if missing:
        also = f" (also missing: {', '.join(missing[1:])})" if missing[1:] else ""
        raise CifarFormatError(f"{FOLDER}/{missing[0]} is missing from {archive_path}{also}")

    meta_where = f"{FOLDER}/{META} in {archive_path}"
    label_names = _get(raw[META], "label_names", meta_where)
    class_names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in label_names]
    if len(class_names) < 2:
        raise CifarFormatError(f"{meta_where}: label_names should list the classes, got {class_names!r}")

    def parse(name):
        return _parse_batch(raw.pop(name), f"{FOLDER}/{name} in {archive_path}", len(class_names))

    train = [parse(name) for name in TRAIN_BATCHES]
    x_test, y_test = parse(TEST_BATCH)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    del train
    return CifarData(x_train, y_train, np.ascontiguousarray(x_test), y_test, class_names)


# ---------------------------------------------------------------------------------------------
# writing


def _tar_add_bytes(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(payload), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(payload))


def _check_split(x: np.ndarray, y: np.ndarray, split: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or x.shape[1] != IMAGE_DIM or x.dtype != np.uint8:
        raise ValueError(f"x_{split} must be (N, {IMAGE_DIM}) uint8, got {x.shape} {x.dtype}")
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y_{split} must be ({x.shape[0]},) integers, got {y.shape} {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"y_{split} must be in [0, {num_classes}), got range [{y.min()}, {y.max()}]")
    return x, y


def write_cifar10_archive(
    path: str | os.PathLike,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    class_names,
    batches: int = 5,
) -> Path:
    """Write a .tar.gz in the official layout (bytes-keyed dicts, pickle protocol 2).

    The training set is split into `batches` consecutive near-equal parts data_batch_1..batches
    (load_cifar10 expects 5). Bytes are deterministic: tar and gzip metadata are fixed (mtime 0,
    uid/gid 0, no owner names, no gzip file name). Written to a temp file, then os.replace.
    """
    class_names = [str(c) for c in class_names]
    if len(class_names) < 2:
        raise ValueError(f"class_names must list at least 2 classes, got {class_names!r}")
    x_train, y_train = _check_split(x_train, y_train, "train", len(class_names))
    x_test, y_test = _check_split(x_test, y_test, "test", len(class_names))
    if isinstance(batches, bool) or not isinstance(batches, int) or not 1 <= batches <= max(len(x_train), 1):
        raise ValueError(f"batches must be an integer in [1, n_train={len(x_train)}], got {batches!r}")

    bounds = np.linspace(0, len(x_train), batches + 1).round().astype(int)
    def batch(label: str, x: np.ndarray, y: np.ndarray) -> dict:
        return {b"batch_label": label.encode(), b"labels": [int(v) for v in y], b"data": np.ascontiguousarray(x)}

    meta = {
        b"num_cases_per_batch": int(bounds[1] - bounds[0]),
        b"label_names": [c.encode("utf-8") for c in class_names],
        b"num_vis": IMAGE_DIM,
    }
    members = [(META, meta)]
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        members.append((f"data_batch_{i + 1}", batch(f"training batch {i + 1} of {batches}", x_train[lo:hi], y_train[lo:hi])))
    members.append((TEST_BATCH, batch("testing batch 1 of 1", x_test, y_test)))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # filename="" and mtime=0 keep the gzip header free of the temp name and the clock
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile("", "wb", compresslevel=6, fileobj=raw, mtime=0) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                folder = tarfile.TarInfo(FOLDER)
                folder.type, folder.mode, folder.mtime, folder.uid, folder.gid = tarfile.DIRTYPE, 0o755, 0, 0, 0
                tar.addfile(folder)
                for name, obj in members:
                    _tar_add_bytes(tar, f"{FOLDER}/{name}", pickle.dumps(obj, protocol=2))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------------------------
# synthetic data


def _upsample_matrix(coarse: int, fine: int) -> np.ndarray:
    """(fine, coarse) linear-interpolation matrix: fine_signal = M @ coarse_signal."""
    pos = np.linspace(0, coarse - 1, fine)
    return np.maximum(0.0, 1.0 - np.abs(pos[:, None] - np.arange(coarse)[None, :]))


def class_patterns(num_classes: int, rng: np.random.Generator, coarse: int = 4) -> np.ndarray:
    """(num_classes, 3072) float64 smooth colour templates in [40, 215]: a random coarse x coarse
    grid per channel, bilinearly upsampled to 32x32 (so each class is a low-frequency pattern)."""
    grid = rng.uniform(40.0, 215.0, size=(num_classes, 3, coarse, coarse))
    M = _upsample_matrix(coarse, 32)  # (32, coarse)
    templates = np.einsum("ij,ncjk,lk->ncil", M, grid, M)  # (C, 3, 32, 32)
    return templates.reshape(num_classes, IMAGE_DIM)


def synthetic_images(
    y: np.ndarray, templates: np.ndarray, rng: np.random.Generator, noise: float, chunk: int = 4096
) -> np.ndarray:
    """(N, 3072) uint8: template of each label + per-image brightness shift + pixel noise, clipped."""
    x = np.empty((len(y), IMAGE_DIM), dtype=np.uint8)
    for lo in range(0, len(y), chunk):  # chunks keep the float temporaries small
        hi = min(lo + chunk, len(y))
        shift = rng.normal(0.0, noise / 2, size=(hi - lo, 1)).astype(np.float32)
        pixel_noise = noise * rng.standard_normal((hi - lo, IMAGE_DIM), dtype=np.float32)
        pixels = templates[y[lo:hi]].astype(np.float32) + shift + pixel_noise
        np.clip(np.rint(pixels), 0, 255, out=pixels)
        x[lo:hi] = pixels
    return x


def make_synthetic_cifar10(
    path: str | os.PathLike,
    n_train: int = 500,
    n_test: int = 100,
    seed: int = 0,
    num_classes: int = 10,
    noise: float = 60.0,
) -> str:
    """Write a small learnable CIFAR-10 look-alike in the official layout; return its md5.

    Each class has its own smooth colour template; an image is its class template plus a random
    brightness shift and Gaussian pixel noise (std `noise` on 0-255), so a linear classifier beats
    chance by far. Labels are balanced (i % num_classes) then shuffled. Same arguments => same bytes.
    """
    from linclass.download import md5sum

    for name, value, low in (("n_train", n_train, 5), ("n_test", n_test, 1), ("num_classes", num_classes, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    rng = np.random.default_rng(seed)
    templates = class_patterns(num_classes, rng)
    y_train = rng.permutation(np.arange(n_train) % num_classes).astype(np.int64)
    y_test = rng.permutation(np.arange(n_test) % num_classes).astype(np.int64)
    x_train = synthetic_images(y_train, templates, rng, noise)
    x_test = synthetic_images(y_test, templates, rng, noise)
    names = list(CIFAR10_CLASSES[:num_classes]) + [f"class_{i}" for i in range(10, num_classes)]
    write_cifar10_archive(path, x_train, y_train, x_test, y_test, names, batches=5)
    return md5sum(path)
