"""Image features for the linear classifier: an HSV hue histogram and HOG, from uint8 RGB images.

images: (N, H, W, 3) uint8 (a CIFAR row r is r.reshape(3, 32, 32).transpose(1, 2, 0)).

Hue histogram (colour, bins = hue_bins), per image:
    C = max(R, G, B) - min(R, G, B)                 chroma, 0..255
    hue = ((G - B) / C) mod 6   where max = R       in sixths of the colour circle: red 0, yellow 1,
          (B - R) / C + 2       where max = G       green 2, cyan 3, blue 4, magenta 5
          (R - G) / C + 4       where max = B
    bin = round(hue / 6 * bins) mod bins            bin k is centred on hue k / bins of the circle
    h[k] = sum of C / 255 over the pixels in bin k, then h /= sum(h)
The hue of a grey pixel (C = 0) is undefined and that of a nearly grey one is noise (C = 1 leaves 6
possible hues), so each pixel votes with its chroma: grey pixels add nothing, vivid ones count most.
An image without any colour (all C = 0) gets the uniform histogram 1 / bins. Each histogram sums to 1.

HOG (shape, orientations and cell as settings; Dalal & Triggs, as skimage.feature.hog):
    grey = 0.2125 R + 0.7154 G + 0.0721 B           (skimage.color.rgb2gray's weights, 0..255)
    gx[i, j] = grey[i, j+1] - grey[i, j-1]          central differences, 0 on the border rows/columns
    gy[i, j] = grey[i+1, j] - grey[i-1, j]          (i counts rows downwards)
    m = sqrt(gx^2 + gy^2),  angle = atan2(gy, gx) in degrees mod 180 (unsigned) or mod 360 (signed)
    cell histogram[r, c, o] = sum of m / cell^2 over the cell x cell pixels of cell (r, c) whose angle
        falls in [o, o + 1) * span / orientations (span 180 or 360): a hard vote, as skimage
    block = the 2 x 2 cells (r..r+1, c..c+1), stride one cell: (cells-1)^2 blocks of 4 * orientations
    L2-Hys: v = block / sqrt(|block|^2 + eps^2); v = min(v, 0.2); v /= sqrt(|v|^2 + eps^2); eps = 1e-5
    out = the blocks in the order (block row, block column, cell row, cell column, orientation)
A vertical edge (dark left, bright right) has gx > 0, gy = 0: angle 0, orientation bin 0. With
signed=False this is skimage.feature.hog(grey, orientations, (cell, cell), (2, 2), "L2-Hys").

image_features = [hue histogram | HOG], computed chunk_images images at a time: each image's features
depend on that image only, so the chunk size changes the memory used, never a value.
standardization / standardize: per-column mean and std of the training features, applied to any split.
"""
from __future__ import annotations

import numpy as np

from linclass.constraints import Interval, check

GREY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])  # ITU-R 709 luma, as skimage.color.rgb2gray
EPS = 1e-5  # L2-Hys's eps, as skimage
HYS_CLIP = 0.2
CHUNK_IMAGES = 2048  # 2048 images of 32 x 32: a few float64 arrays of 16 MiB at a time

FEATURES = {
    "hue_bins": Interval(int, 0, 360),  # 0: no hue histogram
    "orientations": Interval(int, 0, 360),  # 0: no HOG
    "cell": Interval(int, 1, None),  # pixels per cell side (at most half the image: 2 x 2 cells)
    "chunk_images": Interval(int, 1, None),
}


def _check_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}")
    return images


def _check_cell(cell, height, width) -> None:
    check(FEATURES, cell=cell)
    if 2 * cell > min(height, width):
        raise ValueError(f"cell={cell!r} is out of range: allowed an integer in [1, {min(height, width) // 2}] "
                         f"for {height}x{width} images (HOG needs 2 x 2 cells)")


def grey_image(images: np.ndarray) -> np.ndarray:
    """(N, H, W) float64 0.2125 R + 0.7154 G + 0.0721 B of (N, H, W, 3) uint8 images, pixel by pixel."""
    wr, wg, wb = GREY_WEIGHTS
    return wr * images[..., 0] + wg * images[..., 1] + wb * images[..., 2]


def hog_dim(orientations: int, cell: int, height: int = 32, width: int = 32) -> int:
    """Length of the HOG vector: (cells down - 1) * (cells across - 1) blocks of 2 x 2 x orientations."""
    return 0 if orientations == 0 else (height // cell - 1) * (width // cell - 1) * 4 * orientations


def feature_dim(hue_bins: int, orientations: int, cell: int, height: int = 32, width: int = 32) -> int:
    """Length of image_features's rows: hue_bins + hog_dim."""
    return hue_bins + hog_dim(orientations, cell, height, width)


# ---------------------------------------------------------------------------------------------
# one chunk of images at a time (float64 inside, float32 out)


def _per_image_histogram(bins_of_pixels: np.ndarray, weights: np.ndarray, num_bins: int) -> np.ndarray:
    """(N, num_bins): h[n, k] = sum of weights[n, p] over the pixels p with bins_of_pixels[n, p] = k."""
    n = len(bins_of_pixels)
    index = bins_of_pixels + num_bins * np.arange(n)[:, None]  # one run of bins per image
    return np.bincount(index.ravel(), weights=weights.ravel(), minlength=n * num_bins).reshape(n, num_bins)


def hue_histogram(images, bins: int = 10) -> np.ndarray:
    """(N, bins) float32 chroma-weighted hue histograms of (N, H, W, 3) uint8 images; each row sums to 1."""
    images = _check_images(images)
    check(FEATURES, hue_bins=bins)
    if bins == 0:
        raise ValueError("bins=0 is out of range: allowed an integer >= 1 and <= 360")
    r, g, b = (images[..., k].reshape(len(images), -1).astype(np.float32) for k in range(3))
    top = np.maximum(np.maximum(r, g), b)
    chroma = top - np.minimum(np.minimum(r, g), b)
    # hue in sixths: (numerator / chroma + offset), numerator and offset from the largest channel
    top_r, top_g = top == r, (top == g) & (top != r)
    numerator = np.where(top_r, g - b, np.where(top_g, b - r, r - g))
    offset = np.where(top_r, np.float32(0), np.where(top_g, np.float32(2), np.float32(4)))
    sixths = numerator / np.where(chroma > 0, chroma, np.float32(1)) + offset  # grey pixels: any hue, weight 0
    # sixths is in [-1, 5]: + 6 makes it positive, so truncation is floor; mod bins wraps red around
    bin_of_pixel = ((sixths + 6) * np.float32(bins / 6) + np.float32(0.5)).astype(np.int32) % bins
    hist = _per_image_histogram(bin_of_pixel, chroma / 255, bins)
    total = hist.sum(axis=1, keepdims=True)
    hist = np.divide(hist, total, out=np.full_like(hist, 1 / bins), where=total > 0)
    return hist.astype(np.float32)


def hog(images, orientations: int = 9, cell: int = 8, signed: bool = False) -> np.ndarray:
    """(N, hog_dim) float32 HOG of (N, H, W, 3) uint8 images (the module docstring has the maths)."""
    images = _check_images(images)
    check(FEATURES, orientations=orientations)
    if orientations == 0:
        raise ValueError("orientations=0 is out of range: allowed an integer >= 1 and <= 360")
    n, height, width, _ = images.shape
    _check_cell(cell, height, width)
    grey = grey_image(images)
    gx, gy = np.zeros_like(grey), np.zeros_like(grey)
    gx[:, :, 1:-1] = grey[:, :, 2:] - grey[:, :, :-2]
    gy[:, 1:-1, :] = grey[:, 2:, :] - grey[:, :-2, :]
    rows, cols = height // cell, width // cell  # whole cells; pixels right of / below them are left out
    gx, gy = gx[:, :rows * cell, :cols * cell], gy[:, :rows * cell, :cols * cell]
    magnitude = np.sqrt(gx * gx + gy * gy)
    # orientation bin: floor(angle / (span / orientations)) mod orientations, angle = atan2 in (-180, 180]
    # degrees (+ 2 orientations before truncating: a positive number, so truncation is floor)
    span = 360 if signed else 180
    degrees = np.arctan2(gy, gx) * (180 / np.pi)
    orientation = (degrees * (orientations / span) + 2 * orientations).astype(np.int32) % orientations
    cell_of = (np.arange(rows * cell)[:, None] // cell) * cols + np.arange(cols * cell)[None, :] // cell
    hist = _per_image_histogram((cell_of * orientations + orientation).reshape(n, -1), magnitude.reshape(n, -1),
                                rows * cols * orientations) / cell**2
    hist = hist.reshape(n, rows, cols, orientations)
    # 2 x 2 blocks of cells, stride one cell: (N, rows-1, cols-1, 2, 2, orientations)
    blocks = np.stack([np.stack([hist[:, i:rows - 1 + i, j:cols - 1 + j] for j in (0, 1)], axis=3)
                       for i in (0, 1)], axis=3)
    norm = np.sqrt((blocks**2).sum(axis=(3, 4, 5), keepdims=True) + EPS**2)
    blocks = np.minimum(blocks / norm, HYS_CLIP)
    blocks /= np.sqrt((blocks**2).sum(axis=(3, 4, 5), keepdims=True) + EPS**2)
    return blocks.reshape(n, -1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# all images, chunk by chunk


def image_features(images, *, hue_bins: int = 10, orientations: int = 9, cell: int = 8, signed: bool = False,
                   chunk_images: int = CHUNK_IMAGES, out: np.ndarray | None = None) -> np.ndarray:
    """(N, feature_dim) float32 rows [hue histogram (hue_bins) | HOG], chunk_images images at a time.

    hue_bins=0 leaves out the hue histogram, orientations=0 the HOG. out: optional preallocated float32
    (N, feature_dim) array or memmap to fill (default np.empty).
    """
    images = _check_images(images)
    check(FEATURES, hue_bins=hue_bins, orientations=orientations, chunk_images=chunk_images)
    if not isinstance(signed, bool):
        raise ValueError(f"signed={signed!r} is not a bool: allowed True or False")
    n, height, width, _ = images.shape
    if orientations:
        _check_cell(cell, height, width)
    dim = feature_dim(hue_bins, orientations, cell, height, width)
    if dim == 0:
        raise ValueError("hue_bins=0 and orientations=0 leave no features: allowed at least one of them >= 1")
    if out is None:
        out = np.empty((n, dim), dtype=np.float32)
    elif out.shape != (n, dim) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 ({n}, {dim}), got {out.dtype} {out.shape}")
    for lo in range(0, n, chunk_images):
        chunk = images[lo:lo + chunk_images]
        if hue_bins:
            out[lo:lo + len(chunk), :hue_bins] = hue_histogram(chunk, hue_bins)
        if orientations:
            out[lo:lo + len(chunk), hue_bins:] = hog(chunk, orientations, cell, signed)
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
    mean = X_train.mean(axis=0, dtype=np.float64)
    std = np.sqrt(((X_train - mean) ** 2).mean(axis=0))
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


def standardize(X, mean, std) -> np.ndarray:
    """(X - mean) / std as float32 (N, D): X any split, mean and std from standardization(X_train)."""
    X = np.asarray(X)
    mean, std = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
    if X.ndim != 2 or mean.shape != (X.shape[1],) or std.shape != (X.shape[1],):
        raise ValueError(f"X must be (N, D) with mean and std (D,), got X {X.shape}, mean {mean.shape}, std {std.shape}")
    if not (std > 0).all():
        raise ValueError(f"std must be > 0 in every column, got {std.min()!r}")
    return ((X.astype(np.float32) - mean) / std).astype(np.float32)
