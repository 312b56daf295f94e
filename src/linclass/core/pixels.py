"""The design matrix of CIFAR-10 kept at the width of its data: uint8 pixels, a mean image and a scale.

A row of the design matrix is an image centred on the training split's mean image and divided by `scale`:
    X = (P - mean) / scale          P (N, D) the uint8 pixel rows, mean (D,) float32, scale a number > 0
As float32, X is 4 bytes a value (602 MB for the training split); its pixels are 1 byte (150 MB). Pixels keeps
only P (an array or a memory map), mean and scale, and folds the centring and the scaling into the arithmetic
(F = float32(P), exact: every uint8 is a float32):
    scores = X W^T + b      = (F W^T - mean W^T) / scale + b             (N, C); mean W^T is one (C,) vector
    dW     = dS^T X         = (dS^T F - dS.sum(0)^T mean) / scale        (C, D); the correction is an outer product
so the only pass over the pixels is their conversion to float32 (one cast, no subtraction), on a block of rows
at a time: no float32 copy of the data set exists, in memory or on disk.

Blocks of BLOCK_ROWS = 32 rows: 32 x 3072 float32 is 384 KiB, which stays in this CPU's 2 MiB L2 cache with W,
dW and the uint8 batch, and at 32 x 10 x 3072 (<= 10^6) multiply-adds OpenBLAS multiplies without packing
the matrices first (its small-matrix kernels): measured on CIFAR-10's shapes, a GEMM on 32-row blocks costs
0.3-0.5x the same GEMM on 200 rows, and 33-row blocks cost 2-3x 32-row ones.

Rounding: F W^T sums products of pixels (0..255) where X W^T sums centred values, and the mean's share is
subtracted after; the scores differ from the float32 formula (X in float32, then X W^T) by a few float32 ulps
of the scores' size (tests/test_pixels.py bounds it). Same inputs, same blocks: the same bits, run to run.
"""
from __future__ import annotations

import math

import numpy as np

BLOCK_ROWS = 32


def row_blocks(n: int, rows: int = BLOCK_ROWS):
    """(lo, hi) of each block of `rows` consecutive rows of range(n), in order; the last may be shorter."""
    return [(lo, min(lo + rows, n)) for lo in range(0, n, rows)]


def design_matrix(pixels: np.ndarray, mean: np.ndarray, scale: float) -> np.ndarray:
    """The float32 formula itself, X = (float32(P) - mean) / float32(scale) (N, D): for small data and tests."""
    return (np.asarray(pixels).astype(np.float32) - np.asarray(mean, dtype=np.float32)) / np.float32(scale)


class Pixels:
    """X = (pixels - mean) / scale (N, D), stored as its uint8 pixels (see the module docstring).

    pixels: uint8 (N, D) array or memory map (not copied); mean: (D,) (kept as float32); scale: a number > 0.
    Behaves as the (N, D) float32 matrix X where linclass uses one: len(), .shape, .dtype (float32, the dtype
    of X and so of the weights trained on it), row selection X[rows] (a slice or indices: Pixels again),
    model.class_scores / predict and sgd.train_sgd. to_float() is X itself, for small selections.
    """

    dtype = np.dtype(np.float32)
    ndim = 2

    def __init__(self, pixels, mean, scale):
        if not isinstance(pixels, np.ndarray) or pixels.ndim != 2 or pixels.dtype != np.uint8:
            raise ValueError(f"pixels must be a 2-D uint8 array (N, D), got {type(pixels).__name__} "
                             f"{np.shape(pixels)} {getattr(pixels, 'dtype', '')}".rstrip())
        mean = np.asarray(mean)
        if mean.shape != (pixels.shape[1],) or not np.issubdtype(mean.dtype, np.floating):
            raise ValueError(f"mean must be a float array of shape ({pixels.shape[1]},) to match pixels "
                             f"{pixels.shape}, got {mean.dtype} {mean.shape}")
        if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)) \
                or not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale={scale!r} is out of range: allowed a number > 0 (finite)")
        self.pixels, self.mean, self.scale = pixels, mean.astype(np.float32, copy=False), float(scale)

    @property
    def shape(self) -> tuple[int, int]:
        return self.pixels.shape

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, rows) -> Pixels:
        if isinstance(rows, tuple) or np.ndim(rows) > 1 or np.isscalar(rows):
            raise IndexError(f"Pixels selects rows by a slice or a 1-D array of indices, got {rows!r}")
        return Pixels(self.pixels[rows], self.mean, self.scale)

    def __repr__(self) -> str:
        return f"Pixels({self.shape[0]} x {self.shape[1]} uint8, scale {self.scale:g})"

    def to_float(self) -> np.ndarray:
        """X as a float32 (N, D) array (4 bytes a value: for small selections)."""
        return design_matrix(self.pixels, self.mean, self.scale)

    def scores(self, W: np.ndarray, b: np.ndarray) -> np.ndarray:
        """X W^T + b (N, C), as (F W^T - mean W^T) / scale + b on blocks of BLOCK_ROWS rows.

        The dtype is W's (float32 weights: float32 scores); W (C, D), b (C,).
        """
        if W.ndim != 2 or W.shape[1] != self.shape[1] or b.shape != (W.shape[0],):
            raise ValueError(f"expected W (C, {self.shape[1]}), b (C,) for {self!r}; got W {W.shape}, b {b.shape}")
        out = np.empty((len(self), W.shape[0]), dtype=W.dtype)
        block = np.empty((BLOCK_ROWS, self.shape[1]), dtype=W.dtype)
        for lo, hi in row_blocks(len(self)):
            F = block[:hi - lo]
            np.copyto(F, self.pixels[lo:hi])
            np.matmul(F, W.T, out=out[lo:hi])
        out -= W @ self.mean.astype(W.dtype, copy=False)
        out /= self.scale
        out += b
        return out
