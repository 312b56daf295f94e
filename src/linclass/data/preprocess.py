"""Split CIFAR's uint8 images for training: a seeded train/val split, the mean image of the training split
and the scale, written as memory-mappable .npy files.

The design matrix X = (x - mean_image) / scale is never written: the pixels stay uint8 (1 byte a value where
X would take 4; 150 MB for the training split instead of 602 MB), and linclass.core.pixels.Pixels folds
the centring and the scaling into the arithmetic on them. Each split's rows are written in place:
open_memmap on a temp file in out_dir, filled chunk by chunk, then renamed onto its final name.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from linclass.data.cifar import CifarData
from linclass.files import atomic_file, ensure_free_space, scratch_dir
from linclass.settings import Preprocess, check, is_int

CHUNK_ROWS = 4096  # rows per chunk: 4096 x 3072 uint8 = 12 MiB


def split_train_val(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of range(n): (train_idx (n - val_size,), val_idx (val_size,)), int64.

    Both are in the order of one permutation from np.random.default_rng(seed), so train_idx[:k]
    is a random subset of size k.
    """
    if not is_int(n) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if not is_int(val_size) or not 0 < val_size < n:
        raise ValueError(f"val_size must be an integer with 0 < val_size < n={n}, got {val_size!r}")
    perm = np.random.default_rng(seed).permutation(n)
    return perm[val_size:], perm[:val_size]


def mean_image(images_uint8: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """(D,) float32 mean of images_uint8[rows] (all rows if None), accumulated in float64 by chunks.

    float32, rounded once from the float64 sum: the arithmetic on X is float32 (the scores subtract W mean,
    a float32 product), so a float64 mean would be rounded there anyway."""
    rows = np.arange(len(images_uint8)) if rows is None else np.asarray(rows)
    if len(rows) == 0:
        raise ValueError("cannot take the mean of 0 images")
    total = np.zeros(images_uint8.shape[1], dtype=np.float64)
    for lo in range(0, len(rows), CHUNK_ROWS):
        total += images_uint8[rows[lo : lo + CHUNK_ROWS]].sum(axis=0, dtype=np.float64)
    return (total / len(rows)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# writers: each file appears whole or not at all (linclass.files.atomic_file)


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_file(path) as tmp:
        np.save(tmp, array)


def allocate(tmp: Path, path: Path) -> None:
    """Reserve the blocks of `tmp` before writing through a map of it: a full disk is then an error
    here, not a SIGBUS in the middle of writing."""
    size = os.path.getsize(tmp)
    with open(tmp, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, size)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise OSError(f"not enough free space in {tmp.parent} for {path.name}: "
                          f"{size / 2**20:.1f} MiB needed ({exc.strerror})") from None


def select_rows(images_uint8: np.ndarray, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[i] = images_uint8[rows[i]], CHUNK_ROWS rows at a time (out: a uint8 (len(rows), D) array or memmap)."""
    for lo in range(0, len(rows), CHUNK_ROWS):
        out[lo:lo + CHUNK_ROWS] = images_uint8[rows[lo:lo + CHUNK_ROWS]]
    return out


def save_rows(path: Path, images_uint8, rows) -> None:
    """The uint8 images of `rows` written straight into an .npy memmap."""
    with atomic_file(path) as tmp:
        out = open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(rows), images_uint8.shape[1]))
        try:
            allocate(tmp, path)
            select_rows(images_uint8, rows, out)
            out.flush()
        finally:
            del out


def save_json(path: Path, obj) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------


def preprocess(
    data: CifarData,
    out_dir: str | os.PathLike,
    val_size: int = 1000,
    seed: int = 0,
    scale: float = 255.0,
    max_train: int | None = None,
    progress=None,
) -> dict:
    """Split CIFAR data, take the mean image; write the arrays to out_dir; return a summary dict.

    Files (all .npy are memory-mappable): X_train/X_val/X_test uint8 (N, D) (the images' pixel rows),
    y_train/y_val/y_test int64 (N,), mean_image float32 (D,), scale.json ({"scale": scale}),
    classes.json (list of names). The design matrix is X = (pixels - mean_image) / scale:
    linclass.plumbing.paths.load_split reads a split as linclass.core.pixels.Pixels.
    val_size images are split off the training set (seeded); max_train (optional) keeps only the
    first max_train of the shuffled training split. The mean image uses the training split only.
    progress(line), if given, is called once per written split.
    """
    x_all, y_all = data.x_train, np.asarray(data.y_train)
    x_test, y_test = data.x_test, np.asarray(data.y_test)
    num_classes = len(data.class_names)
    for name, x, y in (("train", x_all, y_all), ("test", x_test, y_test)):
        if x.ndim != 2 or x.dtype != np.uint8:
            raise ValueError(f"x_{name} must be a 2-D uint8 array, got {x.shape} {x.dtype}")
        if y.shape != (len(x),):
            raise ValueError(f"y_{name} must have shape ({len(x)},), got {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"y_{name} must be in [0, {num_classes}), got range [{y.min()}, {y.max()}]")
    if x_test.shape[1] != x_all.shape[1]:
        raise ValueError(f"x_test has {x_test.shape[1]} features but x_train has {x_all.shape[1]}")
    check(Preprocess, scale=scale)
    scale = float(scale)

    train_idx, val_idx = split_train_val(len(x_all), val_size, seed)
    if max_train is not None:
        if not is_int(max_train) or not 1 <= max_train <= len(train_idx):
            raise ValueError(
                f"max_train must be None or an integer in [1, {len(train_idx)}] "
                f"(train size after the validation split), got {max_train!r}"
            )
        train_idx = train_idx[:max_train]

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = len(train_idx) + len(val_idx) + len(x_test)
    ensure_free_space(scratch_dir(out_dir / "X_train.npy"), rows * (x_all.shape[1] + 8) + (1 << 20),
                      f"the {rows} preprocessed images of {out_dir}")
    mean = mean_image(x_all, train_idx)
    splits = {  # split -> (images, labels, rows)
        "train": (x_all, y_all, train_idx),
        "val": (x_all, y_all, val_idx),
        "test": (x_test, y_test, np.arange(len(x_test))),
    }
    for split, (x, y, split_rows) in splits.items():
        save_rows(out_dir / f"X_{split}.npy", x, split_rows)
        save_npy(out_dir / f"y_{split}.npy", y[split_rows].astype(np.int64))
        if progress is not None:
            progress(f"X_{split} {len(split_rows)} x {x.shape[1]} written")
    save_npy(out_dir / "mean_image.npy", mean)
    save_json(out_dir / "scale.json", {"scale": scale})
    save_json(out_dir / "classes.json", list(data.class_names))

    counts = {split: np.bincount(y[rows], minlength=num_classes).tolist() for split, (_, y, rows) in splits.items()}
    summary = {
        "n_train": int(len(train_idx)),
        "n_val": int(len(val_idx)),
        "n_test": int(len(x_test)),
        "dim": int(x_all.shape[1]),
        "num_classes": num_classes,
        "class_names": list(data.class_names),
        "class_counts": counts,
        "val_size": int(val_size),
        "max_train": None if max_train is None else int(max_train),
        "seed": int(seed),
        "scale": scale,
    }
    if x_all.shape[1] % 3 == 0:  # CIFAR rows: R, G, B planes; on the 0-255 scale
        summary["mean_pixel_per_channel"] = [float(v) for v in mean.astype(np.float64).reshape(3, -1).mean(axis=1)]
    return summary
