"""CIFAR-10 in the official "python version" layout: read it (linclass.data.synthetic writes it).

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
import os
import pickle
import tarfile
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


def as_images(rows: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) images (a view) of CIFAR rows (N, 3072): R, G, B planes, each row-major 32x32."""
    return rows.reshape(len(rows), *IMAGE_SHAPE).transpose(0, 2, 3, 1)


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
    except Exception as e:  # noqa: BLE001 (a damaged pickle raises any kind of error)
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
                    handle = tar.extractfile(member)
                    if handle is not None:   # a regular file always has one
                        with handle as f:
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
