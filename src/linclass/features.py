"""Image features for the linear classifier: colour histograms (HSV hue and value) and HOG, from uint8 RGB.

images: (N, H, W, 3) uint8 (a CIFAR row r is r.reshape(3, 32, 32).transpose(1, 2, 0)).
A feature row is [hue histogram | value histogram | HOG at cells[0] | HOG at cells[1] | ...].

Hue histogram (hue_bins), per image:
    C = max(R, G, B) - min(R, G, B)                 chroma, 0..255
    hue = ((G - B) / C) mod 6   where max = R       in sixths of the colour circle: red 0, yellow 1,
          (B - R) / C + 2       where max = G       green 2, cyan 3, blue 4, magenta 5
          (R - G) / C + 4       where max = B
    bin = round(hue / 6 * bins) mod bins            bin k is centred on hue k / bins of the circle
    h[k] = sum of C over the pixels in bin k, then h /= sum(h)
The hue of a grey pixel (C = 0) is undefined and that of a nearly grey one is noise (C = 1 leaves 6
possible hues), so each pixel votes with its chroma: grey pixels add nothing, vivid ones count most.
An image without any colour (all C = 0) gets the uniform histogram 1 / bins. Each histogram sums to 1.

Value histogram (value_bins), per image: V = max(R, G, B) (HSV's value, 0..255), bin = V * bins // 256
(equal ranges of the 256 levels), one vote per pixel, divided by the number of pixels: sums to 1.

HOG (orientations, one cell size; Dalal & Triggs, as skimage.feature.hog(image, channel_axis=-1)):
    per channel k: gx_k[i, j] = I_k[i, j+1] - I_k[i, j-1], gy_k[i, j] = I_k[i+1, j] - I_k[i-1, j]
        (central differences, 0 on the border rows/columns; i counts rows downwards)
    per pixel, the channel with the largest gx_k^2 + gy_k^2 (the first on ties) gives gx, gy
    m = sqrt(gx^2 + gy^2),  angle = atan2(gy, gx) in degrees, mod 180 (unsigned) or mod 360 (signed)
    cell histogram[r, c, o] = sum of m / cell^2 over the cell x cell pixels of cell (r, c) whose angle
        falls in [o, o + 1) * span / orientations (span 180 or 360): a hard vote, as skimage
        (pixels right of / below the last whole cell are left out)
    block = the 2 x 2 cells (r..r+1, c..c+1), stride one cell: (cells-1)^2 blocks of 4 * orientations
    L2-Hys: v = block / sqrt(|block|^2 + eps^2); v = min(v, 0.2); v /= sqrt(|v|^2 + eps^2); eps = 1e-5
    out = the blocks in the order (block row, block column, cell row, cell column, orientation)
A vertical edge (dark left, bright right) has gx > 0, gy = 0: angle 0, orientation bin 0; bright left,
dark right is angle 180: bin 0 again unsigned, bin orientations / 2 signed. With signed=False this is
skimage.feature.hog(image, orientations, (cell, cell), (2, 2), "L2-Hys", channel_axis=-1).
Signed gradients tell a dark object on a bright background from a bright one on a dark background.

image_features computes chunk_images images at a time: each image's features depend on that image
only, so the chunk size changes the memory used, never a value (the ops are elementwise or per image).
standardization / standardize: per-column mean and std of the training features, applied to any split.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from linclass.settings import Features, check

EPS = 1e-5  # L2-Hys's eps, as skimage
HYS_CLIP = 0.2
STANDARDIZE_ROWS = 4096  # rows of features per float64 chunk in standardization
CHUNK_IMAGES = 1024  # 1024 images of 32 x 32: float arrays of 12 MiB (3 channels, float32) at a time
SETTINGS = ("hue_bins", "value_bins", "orientations", "cells", "signed")  # what image_features computes



def _check_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}")
    return images


def _check_cells(cells, height: int, width: int) -> tuple[int, ...]:
    if isinstance(cells, (str, bytes)) or not isinstance(cells, Sequence):
        raise ValueError(f"cells={cells!r} is not a list: allowed a list of cell sizes (pixels), [] for no HOG")
    cells = [cell.item() if isinstance(cell, np.generic) else cell for cell in cells]
    for cell in cells:
        if isinstance(cell, bool) or not isinstance(cell, int):
            raise ValueError(f"cell={cell!r} is not an integer: allowed cell sizes in pixels")
        if not 1 <= cell <= min(height, width) // 2:
            raise ValueError(f"cell={cell!r} is out of range: allowed an integer in [1, {min(height, width) // 2}] "
                             f"for {height}x{width} images (HOG needs 2 x 2 cells)")
    if len(set(cells)) != len(cells):
        raise ValueError(f"cells={cells!r} repeats a cell size: allowed distinct sizes")
    return tuple(int(cell) for cell in cells)


def _check_signed(signed) -> None:
    if not isinstance(signed, (bool, np.bool_)):
        raise ValueError(f"signed={signed!r} is not a bool: allowed True or False")


def hog_dim(orientations: int, cell: int, height: int = 32, width: int = 32) -> int:
    """Length of one HOG vector: (cells down - 1) * (cells across - 1) blocks of 2 x 2 x orientations."""
    return (height // cell - 1) * (width // cell - 1) * 4 * orientations


def feature_layout(hue_bins: int = 10, value_bins: int = 8, orientations: int = 18, cells: Sequence[int] = (8, 16),
                   height: int = 32, width: int = 32) -> dict[str, slice]:
    """Where each part sits in an image_features row: {"hue": slice, "value": slice, "hog8": slice, ...}
    (parts with 0 bins are left out). The last slice's stop is the row length."""
    sizes = {"hue": hue_bins, "value": value_bins}
    sizes.update({f"hog{cell}": hog_dim(orientations, cell, height, width) for cell in cells})
    layout, start = {}, 0
    for name, size in sizes.items():
        if size:
            layout[name] = slice(start, start + size)
            start += size
    return layout


# ---------------------------------------------------------------------------------------------
# one chunk of images at a time


def _per_image_histogram(bins_of_pixels: np.ndarray, weights: np.ndarray, num_bins: int) -> np.ndarray:
    """(N, num_bins) float64: h[n, k] = sum of weights[n, p] over the pixels p with bins_of_pixels[n, p] = k."""
    n = len(bins_of_pixels)
    index = bins_of_pixels + num_bins * np.arange(n)[:, None]  # one run of bins per image
    return np.bincount(index.ravel(), weights=weights.ravel(), minlength=n * num_bins).reshape(n, num_bins)


def hue_histogram(images, bins: int = 10) -> np.ndarray:
    """(N, bins) float32 chroma-weighted hue histograms of (N, H, W, 3) uint8 images; each row sums to 1."""
    images = _check_images(images)
    check(Features, hue_bins=bins)
    if bins == 0:
        raise ValueError("bins=0 is out of range: allowed an integer >= 1 and <= 360")
    r, g, b = (images[..., k].reshape(len(images), -1).astype(np.float32) for k in range(3))
    top = np.maximum(np.maximum(r, g), b)
    chroma = top - np.minimum(np.minimum(r, g), b)
    # hue in sixths: numerator / chroma + offset, numerator and offset from the largest channel
    top_r, top_g = top == r, (top == g) & (top != r)
    numerator = np.where(top_r, g - b, np.where(top_g, b - r, r - g))
    offset = np.where(top_r, np.float32(0), np.where(top_g, np.float32(2), np.float32(4)))
    sixths = numerator / np.where(chroma > 0, chroma, np.float32(1)) + offset  # grey pixels: any hue, weight 0
    # sixths is in [-1, 5]: + 6 makes it positive, so truncation is floor; mod bins wraps red around
    bin_of_pixel = ((sixths + 6) * np.float32(bins / 6) + np.float32(0.5)).astype(np.int32) % bins
    hist = _per_image_histogram(bin_of_pixel, chroma, bins)
    total = hist.sum(axis=1, keepdims=True)
    hist = np.divide(hist, total, out=np.full_like(hist, 1 / bins), where=total > 0)
    return hist.astype(np.float32)


def value_histogram(images, bins: int = 8) -> np.ndarray:
    """(N, bins) float32 histograms of HSV value max(R, G, B) of (N, H, W, 3) uint8 images; each row sums to 1."""
    images = _check_images(images)
    check(Features, value_bins=bins)
    if bins == 0:
        raise ValueError("bins=0 is out of range: allowed an integer >= 1 and <= 256")
    pixels = images.reshape(len(images), -1, 3)
    top = np.maximum(np.maximum(pixels[..., 0], pixels[..., 1]), pixels[..., 2]).astype(np.int32)
    counts = _per_image_histogram(top * bins // 256, np.ones(top.shape), bins)
    return (counts / top.shape[1]).astype(np.float32)


def colour_gradient(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gx, gy), each (N, H, W) float32: the central differences of the channel with the largest
    gradient at each pixel (uint8 differences are integers: exact in float32)."""
    planes = _check_images(images).astype(np.float32)
    gx, gy = np.zeros_like(planes), np.zeros_like(planes)
    gx[:, :, 1:-1] = planes[:, :, 2:] - planes[:, :, :-2]
    gy[:, 1:-1, :] = planes[:, 2:, :] - planes[:, :-2, :]
    m2 = gx * gx + gy * gy
    m2_r, m2_g, m2_b = m2[..., 0], m2[..., 1], m2[..., 2]
    red = (m2_r >= m2_g) & (m2_r >= m2_b)
    green = ~red & (m2_g >= m2_b)

    def pick(g):
        return np.where(red, g[..., 0], np.where(green, g[..., 1], g[..., 2]))

    return pick(gx), pick(gy)


def oriented_gradient(images: np.ndarray, orientations: int, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """(magnitude (N, H, W) float64, orientation bin (N, H, W) int32) of the colour gradient of each pixel."""
    gx, gy = (g.astype(np.float64) for g in colour_gradient(images))
    magnitude = np.sqrt(gx * gx + gy * gy)
    # orientation bin: floor(angle / (span / orientations)) mod orientations, angle = atan2 in (-180, 180]
    # degrees (+ 2 orientations before truncating: a positive number, so truncation is floor)
    span = 360 if signed else 180
    degrees = np.arctan2(gy, gx) * (180 / np.pi)
    return magnitude, (degrees * (orientations / span) + 2 * orientations).astype(np.int32) % orientations


def cell_blocks(magnitude: np.ndarray, orientation: np.ndarray, orientations: int, cell: int) -> np.ndarray:
    """(N, hog_dim) float32: cell histograms of oriented_gradient's votes, L2-Hys normalized in 2 x 2 blocks."""
    n, height, width = magnitude.shape
    rows, cols = height // cell, width // cell  # whole cells
    votes = (np.arange(rows * cell)[:, None] // cell * cols + np.arange(cols * cell)[None, :] // cell) * orientations
    votes = votes + orientation[:, :rows * cell, :cols * cell]  # (cell number) * orientations + bin
    hist = _per_image_histogram(votes.reshape(n, -1), magnitude[:, :rows * cell, :cols * cell].reshape(n, -1),
                                rows * cols * orientations) / cell**2
    hist = hist.reshape(n, rows, cols, orientations)
    # 2 x 2 blocks of cells, stride one cell: (N, rows-1, cols-1, 2, 2, orientations)
    blocks = np.stack([np.stack([hist[:, i:rows - 1 + i, j:cols - 1 + j] for j in (0, 1)], axis=3)
                       for i in (0, 1)], axis=3)
    norm = np.sqrt((blocks**2).sum(axis=(3, 4, 5), keepdims=True) + EPS**2)
    blocks = np.minimum(blocks / norm, HYS_CLIP)
    blocks /= np.sqrt((blocks**2).sum(axis=(3, 4, 5), keepdims=True) + EPS**2)
    return blocks.reshape(n, -1).astype(np.float32)


def hog(images, orientations: int = 18, cell: int = 8, signed: bool = True) -> np.ndarray:
    """(N, hog_dim) float32 HOG of (N, H, W, 3) uint8 images (the module docstring has the maths)."""
    images = _check_images(images)
    check(Features, orientations=orientations)
    _check_signed(signed)
    (cell,) = _check_cells([cell], *images.shape[1:3])
    return cell_blocks(*oriented_gradient(images, orientations, signed), orientations, cell)


# ---------------------------------------------------------------------------------------------
# all images, chunk by chunk


def image_features(images, *, hue_bins: int = 10, value_bins: int = 8, orientations: int = 18,
                   cells: Sequence[int] = (8, 16), signed: bool = True, chunk_images: int = CHUNK_IMAGES,
                   out: np.ndarray | None = None) -> np.ndarray:
    """(N, D) float32 rows [hue histogram | value histogram | HOG at each cell size], chunk_images images
    at a time (feature_layout says where each part sits; 0 bins or cells=[] leave a part out).

    out: optional preallocated float32 (N, D) array or memmap to fill (default np.empty).
    """
    images = _check_images(images)
    check(Features, hue_bins=hue_bins, value_bins=value_bins, orientations=orientations, chunk_images=chunk_images)
    _check_signed(signed)
    n, height, width, _ = images.shape
    cells = _check_cells(cells, height, width)
    layout = feature_layout(hue_bins, value_bins, orientations, cells, height, width)
    if not layout:
        raise ValueError("hue_bins=0, value_bins=0 and cells=[] leave no features: allowed at least one part")
    dim = list(layout.values())[-1].stop
    if out is None:
        out = np.empty((n, dim), dtype=np.float32)
    elif out.shape != (n, dim) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 ({n}, {dim}), got {out.dtype} {out.shape}")
    for lo in range(0, n, chunk_images):
        chunk = images[lo:lo + chunk_images]
        rows = slice(lo, lo + len(chunk))
        if hue_bins:
            out[rows, layout["hue"]] = hue_histogram(chunk, hue_bins)
        if value_bins:
            out[rows, layout["value"]] = value_histogram(chunk, value_bins)
        if cells:
            gradient = oriented_gradient(chunk, orientations, signed)  # once for all cell sizes
            for cell in cells:
                out[rows, layout[f"hog{cell}"]] = cell_blocks(*gradient, orientations, cell)
    return out


# ---------------------------------------------------------------------------------------------
# standardization: statistics of the training split, applied to every split


def standardization(X_train) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std), each (D,) float32, of the columns of X_train (N, D), accumulated in float64.

    A constant column has std 0; it gets std 1 so that standardize leaves it at 0 instead of dividing by 0.
    """
    X_train = np.asarray(X_train)
    if X_train.ndim != 2 or len(X_train) == 0:
        raise ValueError(f"X_train must be a 2-D array with at least one row, got shape {X_train.shape}")
    rows = range(0, len(X_train), STANDARDIZE_ROWS)  # by chunks of rows: float64 copies stay small
    mean = sum(X_train[lo:lo + STANDARDIZE_ROWS].sum(axis=0, dtype=np.float64) for lo in rows) / len(X_train)
    squares = sum(((X_train[lo:lo + STANDARDIZE_ROWS] - mean) ** 2).sum(axis=0) for lo in rows)
    std = np.sqrt(squares / len(X_train))
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


def standardize(X, mean, std) -> np.ndarray:
    """(X - mean) / std as float32 (N, D): X any split, mean and std from standardization(X_train)."""
    X = np.asarray(X)
    mean, std = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
    if X.ndim != 2 or mean.shape != (X.shape[1],) or std.shape != (X.shape[1],):
        raise ValueError(f"X must be (N, D) with mean and std (D,), got X {X.shape}, mean {mean.shape}, "
                         f"std {std.shape}")
    if not (std > 0).all():
        raise ValueError(f"std must be > 0 in every column, got {std.min()!r}")
    return ((X.astype(np.float32) - mean) / std).astype(np.float32)
