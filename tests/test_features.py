"""linclass.features on small synthetic images: what HOG and the hue histogram say about edges and colours,
shapes and dtypes, chunking, agreement with scikit-image's hog, and standardization."""
from fractions import Fraction

import numpy as np
import pytest
from skimage.feature import hog as skimage_hog

from linclass.features import (feature_dim, grey_image, hog, hog_dim, hue_histogram, image_features, standardization,
                               standardize)


def solid(rgb, n=1, size=16):
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (n, size, size, 3)).copy()


def random_images(n=24, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def orientation_totals(features, orientations):
    """Sum of a HOG vector over blocks and cells: (N, orientations)."""
    return features.reshape(len(features), -1, orientations).sum(axis=1)


# --- HOG -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientations, cell", [(9, 8), (12, 4), (8, 8)])
def test_hog_of_a_vertical_edge_peaks_at_the_horizontal_gradient(orientations, cell):
    images = solid((0, 0, 0), size=32)
    images[:, :, 13:] = 255  # dark left, bright right: gx > 0, gy = 0, angle 0
    totals = orientation_totals(hog(images, orientations, cell), orientations)
    assert totals.argmax() == 0
    assert totals[0, 1:].max() < 1e-6 * totals[0, 0]  # nothing else votes


@pytest.mark.parametrize("orientations", [9, 12])
def test_hog_of_a_horizontal_edge_peaks_at_ninety_degrees(orientations):
    images = solid((0, 0, 0), size=32)
    images[:, 13:, :] = 255  # bright below: gy > 0, gx = 0, angle 90 degrees
    totals = orientation_totals(hog(images, orientations, 8), orientations)
    assert totals.argmax() == int(90 / (180 / orientations))


def test_signed_hog_tells_the_two_sides_of_an_edge_apart():
    dark_left = solid((0, 0, 0), size=32)
    dark_left[:, :, 13:] = 255
    bright_left = 255 - dark_left
    unsigned = orientation_totals(hog(np.concatenate([dark_left, bright_left]), 9, 8), 9)
    signed = orientation_totals(hog(np.concatenate([dark_left, bright_left]), 18, 8, signed=True), 18)
    assert unsigned.argmax(axis=1).tolist() == [0, 0]  # 0 and 180 degrees are one orientation
    assert signed.argmax(axis=1).tolist() == [0, 9]  # 0 and 180 degrees: bins 0 and 18 / 2


def test_hog_of_a_flat_image_is_zero():
    assert not hog(solid((40, 90, 200), size=32), 9, 8).any()


@pytest.mark.parametrize("orientations, cell", [(9, 8), (9, 4), (12, 8), (7, 5)])
def test_hog_agrees_with_skimage(orientations, cell):
    images = random_images(6)
    images[3] = solid((0, 0, 0), size=32)[0]
    images[3, :, 10:] = 200  # an image with exact 0 / 90 degree gradients and flat cells
    ours = hog(images, orientations, cell)
    theirs = np.stack([skimage_hog(g, orientations, (cell, cell), (2, 2), "L2-Hys") for g in grey_image(images)])
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


# --- hue histogram -------------------------------------------------------------------------------


@pytest.mark.parametrize("bins, red, green, blue", [(6, 0, 2, 4), (10, 0, 3, 7), (12, 0, 4, 8), (3, 0, 1, 2)])
def test_pure_colours_land_in_their_hue_bin(bins, red, green, blue):
    images = np.concatenate([solid((255, 0, 0)), solid((0, 255, 0)), solid((0, 0, 255)), solid((90, 0, 0))])
    hist = hue_histogram(images, bins)
    assert hist.argmax(axis=1).tolist() == [red, green, blue, red]
    np.testing.assert_array_equal(hist.max(axis=1), 1)


def test_hue_histogram_sums_to_one():
    images = np.concatenate([random_images(10), solid((128, 128, 128), size=32), solid((0, 0, 0), size=32)])
    hist = hue_histogram(images, 10)
    np.testing.assert_allclose(hist.sum(axis=1), 1, rtol=1e-6)
    assert (hist >= 0).all()


def test_grey_pixels_do_not_vote_and_a_grey_image_is_uniform():
    image = solid((255, 0, 0), size=8)
    image[:, :4] = 77  # half the picture grey
    assert hue_histogram(image, 10).tolist() == hue_histogram(solid((255, 0, 0), size=8), 10).tolist()
    np.testing.assert_array_equal(hue_histogram(solid((77, 77, 77)), 10), np.full((1, 10), 0.1, np.float32))


def test_vivid_pixels_weigh_more_than_faint_ones():
    image = solid((255, 0, 0), size=2)  # 4 pixels: 2 vivid red (chroma 255), 2 faint blue (chroma 10)
    image[0, 1] = (100, 100, 110)
    hist = hue_histogram(image, 6)
    np.testing.assert_allclose(hist[0, [0, 4]], [2 * 255 / 530, 2 * 10 / 530], rtol=1e-6)


def exact_hue_bin(rgb, bins):
    """The bin of one pixel in exact rational arithmetic (None for grey)."""
    r, g, b = (int(v) for v in rgb)
    top, chroma = max(r, g, b), max(r, g, b) - min(r, g, b)
    if chroma == 0:
        return None
    sixths = Fraction(g - b, chroma) if top == r else Fraction(b - r, chroma) + 2 if top == g else Fraction(r - g, chroma) + 4
    return int((sixths / 6 * bins + Fraction(1, 2)) // 1) % bins


def test_hue_bins_match_exact_arithmetic_pixel_by_pixel():
    pixels = random_images(1, size=24, seed=3).reshape(-1, 1, 1, 3)  # 576 one-pixel images
    hist = hue_histogram(pixels, 12)
    for pixel, row in zip(pixels, hist):
        expected = exact_hue_bin(pixel[0, 0], 12)
        assert row.argmax() == (0 if expected is None else expected)
        assert row.max() == (1 / 12 if expected is None else 1)


# --- image_features: shapes, dtypes, chunks ------------------------------------------------------


@pytest.mark.parametrize("hue_bins, orientations, cell, signed", [(10, 9, 8, False), (10, 9, 4, False),
                                                                  (0, 18, 8, True), (16, 0, 8, False)])
def test_image_features_shapes_and_dtype(hue_bins, orientations, cell, signed):
    images = random_images(5)
    features = image_features(images, hue_bins=hue_bins, orientations=orientations, cell=cell, signed=signed)
    assert features.shape == (5, feature_dim(hue_bins, orientations, cell))
    assert features.dtype == np.float32
    np.testing.assert_array_equal(features[:, :hue_bins], hue_histogram(images, hue_bins) if hue_bins else features[:, :0])
    if orientations:
        np.testing.assert_array_equal(features[:, hue_bins:], hog(images, orientations, cell, signed))


def test_feature_dims():
    assert hog_dim(9, 8) == 3 * 3 * 4 * 9 == 324
    assert hog_dim(9, 4) == 7 * 7 * 4 * 9 == 1764
    assert feature_dim(10, 9, 8) == 334 and feature_dim(10, 0, 8) == 10
    assert hog(random_images(2, size=20), 9, 6).shape == (2, hog_dim(9, 6, 20, 20)) == (2, 2 * 2 * 36)


@pytest.mark.parametrize("chunk_images", [1, 7, 16, 100])
def test_chunked_features_are_bit_identical_to_unchunked(chunk_images, tmp_path):
    images = random_images(37, seed=5)
    whole = image_features(images, hue_bins=10, orientations=18, cell=4, signed=True, chunk_images=len(images))
    out = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float32, shape=whole.shape)
    chunked = image_features(images, hue_bins=10, orientations=18, cell=4, signed=True, chunk_images=chunk_images,
                             out=out)
    assert chunked is out
    assert chunked.tobytes() == whole.tobytes()


# --- standardization -----------------------------------------------------------------------------


def test_standardization_uses_only_the_training_statistics():
    rng = np.random.default_rng(0)
    X_train = rng.normal(5.0, 2.0, size=(400, 3)).astype(np.float32)
    X_train[:, 2] = 7.0  # a constant column
    X_test = rng.normal(-3.0, 0.5, size=(100, 3)).astype(np.float32)
    X_test[:, 2] = 0.0
    mean, std = standardization(X_train)
    assert mean.dtype == std.dtype == np.float32
    np.testing.assert_allclose(mean, X_train.astype(np.float64).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(std[:2], X_train[:, :2].astype(np.float64).std(axis=0), rtol=1e-5)
    assert std[2] == 1  # constant: not divided by 0
    train, test = standardize(X_train, mean, std), standardize(X_test, mean, std)
    assert train.dtype == test.dtype == np.float32
    np.testing.assert_allclose(train[:, :2].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(train[:, :2].std(axis=0), 1, rtol=1e-4)
    assert not train[:, 2].any() and (test[:, 2] == -7).all()
    np.testing.assert_allclose(test, (X_test - mean) / std, rtol=1e-6)
    assert test[:, 0].mean() < -3  # the test split keeps its own shift: its statistics were not used
    np.testing.assert_array_equal(standardization(np.concatenate([X_train, X_test]))[0] != mean, [True, True, True])


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("call, message", [
    (lambda im: image_features(im, cell=17), "cell=17 is out of range: allowed an integer in [1, 16] for 32x32 images"),
    (lambda im: image_features(im, cell=0), "cell=0 is out of range: allowed an integer >= 1"),
    (lambda im: image_features(im, orientations=-1), "orientations=-1 is out of range"),
    (lambda im: image_features(im, orientations=9.0), "orientations=9.0 is not an integer"),
    (lambda im: image_features(im, hue_bins=0, orientations=0), "hue_bins=0 and orientations=0 leave no features"),
    (lambda im: image_features(im, chunk_images=0), "chunk_images=0 is out of range"),
    (lambda im: image_features(im, signed="yes"), "signed='yes' is not a bool"),
    (lambda im: image_features(im.astype(np.float32)), "images must be (N, H, W, 3) uint8, got (2, 32, 32, 3) float32"),
    (lambda im: image_features(im[..., 0]), "images must be (N, H, W, 3) uint8, got (2, 32, 32) uint8"),
    (lambda im: image_features(im, out=np.empty((2, 10), np.float32)), "out must be float32 (2, 334), got float32 (2, 10)"),
    (lambda im: hue_histogram(im, 0), "bins=0 is out of range"),
    (lambda im: hog(im, 0), "orientations=0 is out of range"),
    (lambda im: standardize(np.ones((2, 3)), np.zeros(3), np.zeros(3)), "std must be > 0 in every column"),
    (lambda im: standardize(np.ones((2, 3)), np.zeros(2), np.ones(2)), "X must be (N, D) with mean and std (D,)"),
    (lambda im: standardization(np.ones(3)), "X_train must be a 2-D array with at least one row"),
])
def test_bad_input_is_one_clear_line(call, message):
    with pytest.raises(ValueError) as info:
        call(random_images(2))
    assert message in str(info.value) and "\n" not in str(info.value)
