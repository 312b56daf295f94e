"""A CIFAR-10 look-alike in the official python layout, for tests and trials without the real data.

`write_cifar10_archive` writes any images in the layout that linclass.data.cifar reads;
`make_synthetic_cifar10` fills it with a small learnable data set (a smooth colour template per class,
plus brightness shifts and pixel noise). Same arguments, same bytes.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np

from linclass.data.cifar import CIFAR10_CLASSES, FOLDER, IMAGE_DIM, META, TEST_BATCH
from linclass.files import atomic_file, md5_file


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
    uid/gid 0, no owner names, no gzip file name). Appears whole or not at all.
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
        members.append(
            (f"data_batch_{i + 1}", batch(f"training batch {i + 1} of {batches}", x_train[lo:hi], y_train[lo:hi]))
        )
    members.append((TEST_BATCH, batch("testing batch 1 of 1", x_test, y_test)))

    # filename="" and mtime=0 keep the gzip header free of the temp name and the clock
    with atomic_file(path, suffix=".tmp") as tmp, open(tmp, "wb") as raw, \
            gzip.GzipFile("", "wb", compresslevel=6, fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        folder = tarfile.TarInfo(FOLDER)
        folder.type, folder.mode, folder.mtime, folder.uid, folder.gid = tarfile.DIRTYPE, 0o755, 0, 0, 0
        tar.addfile(folder)
        for name, obj in members:
            _tar_add_bytes(tar, f"{FOLDER}/{name}", pickle.dumps(obj, protocol=2))
    return Path(path)


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
    return md5_file(path)
