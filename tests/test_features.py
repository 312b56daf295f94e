"""linclass.features on small synthetic images: what HOG and the hue histogram say about edges and colours,
shapes and dtypes, chunking, agreement with scikit-image's hog, and standardization."""
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from skimage.feature import hog as skimage_hog

from linclass.features import (
    colour_gradient,
    feature_layout,
    hog,
    hog_dim,
    hue_histogram,
    image_features,
    standardization,
    standardize,
    value_histogram,
)


def solid(rgb, n=1, size=16):
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (n, size, size, 3)).copy()


def random_images(n=24, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def orientation_totals(features, orientations):
    """Sum of a HOG vector over blocks and cells: (N, orientations)."""
    return features.reshape(len(features), -1, orientations).sum(axis=1)


# --- HOG -----------------------------------------------------------------------------------------


def edge(size=32, at=13, vertical=True, dark_first=True):
    """A black/white edge: vertical (dark left, bright right) or horizontal (dark above, bright below)."""
    images = solid((0, 0, 0), size=size)
    if vertical:
        images[:, :, at:] = 255
    else:
        images[:, at:, :] = 255
    return images if dark_first else 255 - images


@pytest.mark.parametrize("orientations, cell, signed", [(9, 8, False), (12, 4, False), (18, 8, True), (8, 16, True)])
def test_hog_of_a_vertical_edge_peaks_at_the_horizontal_gradient(orientations, cell, signed):
    totals = orientation_totals(hog(edge(vertical=True), orientations, cell, signed), orientations)
    assert totals.argmax() == 0  # gx > 0, gy = 0: angle 0
    assert totals[0, 1:].max() < 1e-6 * totals[0, 0]  # nothing else votes


@pytest.mark.parametrize("orientations, signed", [(9, False), (12, False), (18, True)])
def test_hog_of_a_horizontal_edge_peaks_at_ninety_degrees(orientations, signed):
    totals = orientation_totals(hog(edge(vertical=False), orientations, 8, signed), orientations)
    assert totals.argmax() == int(90 / ((360 if signed else 180) / orientations))  # gy > 0 (bright below)


def test_signed_hog_tells_the_two_sides_of_an_edge_apart():
    both = np.concatenate([edge(dark_first=True), edge(dark_first=False)])
    unsigned = orientation_totals(hog(both, 9, 8, signed=False), 9)
    signed = orientation_totals(hog(both, 18, 8, signed=True), 18)
    assert unsigned.argmax(axis=1).tolist() == [0, 0]  # 0 and 180 degrees are one orientation
    assert signed.argmax(axis=1).tolist() == [0, 9]  # 0 and 180 degrees: bins 0 and 18 / 2


def test_turning_an_image_half_round_turns_the_signed_orientations_half_round():
    """I'(i, j) = I(H-1-i, W-1-j) has the gradient -g at the mirrored pixel: the same cells in reverse
    order, each with its signed orientation bins shifted by half the bins, its unsigned bins unchanged."""
    images = random_images(4, seed=2)
    turned = images[:, ::-1, ::-1]
    for signed, shift in ((True, 9), (False, 0)):
        ours = hog(images, 18, 8, signed).reshape(4, 3, 3, 2, 2, 18)
        expected = np.roll(ours[:, ::-1, ::-1, ::-1, ::-1], shift, axis=-1)
        np.testing.assert_allclose(hog(turned, 18, 8, signed).reshape(4, 3, 3, 2, 2, 18), expected, atol=1e-6)


def test_the_channel_with_the_strongest_gradient_gives_the_orientation():
    images = solid((0, 0, 0), size=32)
    images[:, :, 13:, 0] = 60  # a faint vertical edge in red
    images[:, 20:, :, 2] = 250  # a strong horizontal edge in blue
    totals = orientation_totals(hog(images, 4, 8, signed=True), 4)  # bins 0 and 1: 0 and 90 degrees
    single = orientation_totals(hog(np.ascontiguousarray(images[..., [2, 1, 0]]), 4, 8, signed=True), 4)
    assert totals[0, 0] > 0 and totals[0, 1] > 0 and not totals[0, 2:].any()
    np.testing.assert_array_equal(totals, single)  # which channel holds the edge does not matter


def test_colour_gradient_takes_the_strongest_channel_and_the_first_on_ties():
    image = solid((0, 0, 0), size=8)
    image[0, :, 4:, 0] = 100  # red: a vertical edge (gx = 100 on columns 3 and 4)
    image[0, 4:, :, 1] = 100  # green: a horizontal edge (gy = 100 on rows 3 and 4)
    image[0, 6:, :, 2] = 120  # blue: a stronger horizontal edge (gy = 120 on rows 5 and 6)
    gx, gy = colour_gradient(image)
    assert gx.dtype == gy.dtype == np.float32
    assert (gx[0, 3, 3], gy[0, 3, 3]) == (100, 0)  # red and green tie (100^2): red, the first channel
    assert (gx[0, 1, 3], gy[0, 1, 3]) == (100, 0)  # red alone
    assert (gx[0, 3, 1], gy[0, 3, 1]) == (0, 100)  # green alone
    assert (gx[0, 5, 3], gy[0, 5, 3]) == (0, 120)  # blue beats red
    assert not gx[0, :, [0, 7]].any() and not gy[0, [0, 7], :].any()  # 0 on the border


def test_hog_of_a_flat_image_is_zero():
    assert not hog(solid((40, 90, 200), size=32), 9, 8).any()


@pytest.mark.parametrize("orientations, cell", [(9, 8), (9, 4), (12, 8), (7, 5), (18, 16)])
def test_unsigned_hog_agrees_with_skimage(orientations, cell):
    images = random_images(6)
    images[3] = edge()[0]  # exact 0 / 90 degree gradients, flat cells
    images[4] = 0
    images[4, :, 16:, 0] = images[4, 16:, :, 1] = 100  # red edge across, green edge down: equal gradients where
    images[5, :, :, 1] = images[5, :, :, 0]  # they cross (the first channel wins, as skimage); red = green
    ours = hog(images, orientations, cell, signed=False)
    theirs = np.stack([skimage_hog(image, orientations, (cell, cell), (2, 2), "L2-Hys", channel_axis=-1)
                       for image in images])
    assert ours.shape == theirs.shape == (6, hog_dim(orientations, cell))
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
    if top == r:
        sixths = Fraction(g - b, chroma)
    else:
        sixths = Fraction(b - r, chroma) + 2 if top == g else Fraction(r - g, chroma) + 4
    return int((sixths / 6 * bins + Fraction(1, 2)) // 1) % bins


def test_hue_bins_match_exact_arithmetic_pixel_by_pixel():
    pixels = random_images(1, size=24, seed=3).reshape(-1, 1, 1, 3)  # 576 one-pixel images
    hist = hue_histogram(pixels, 12)
    for pixel, row in zip(pixels, hist):
        expected = exact_hue_bin(pixel[0, 0], 12)
        assert row.argmax() == (0 if expected is None else expected)
        assert row.max() == (1 / 12 if expected is None else 1)


def test_value_histogram_counts_the_brightest_channel():
    images = np.concatenate([solid((0, 0, 0)), solid((255, 0, 0)), solid((10, 200, 31)), solid((31, 32, 33))])
    hist = value_histogram(images, 8)  # bins of 32 levels: max(R, G, B) // 32
    assert hist.argmax(axis=1).tolist() == [0, 7, 6, 1]
    np.testing.assert_array_equal(hist.max(axis=1), 1)
    mixed = solid((0, 0, 0), size=4)
    mixed[0, :1] = (0, 0, 255)  # a quarter of the pixels bright
    np.testing.assert_array_equal(value_histogram(mixed, 2), [[0.75, 0.25]])
    np.testing.assert_allclose(value_histogram(random_images(5), 16).sum(axis=1), 1, rtol=1e-6)


# --- image_features: shapes, dtypes, chunks ------------------------------------------------------


@pytest.mark.parametrize("hue_bins, value_bins, orientations, cells, signed", [
    (10, 8, 18, (8, 16), True), (10, 0, 9, (4,), False), (0, 0, 18, (8,), True), (16, 4, 9, (), False)])
def test_image_features_shapes_dtype_and_layout(hue_bins, value_bins, orientations, cells, signed):
    images = random_images(5)
    features = image_features(images, hue_bins=hue_bins, value_bins=value_bins, orientations=orientations,
                              cells=cells, signed=signed)
    layout = feature_layout(hue_bins, value_bins, orientations, cells)
    assert features.dtype == np.float32
    assert features.shape == (5, list(layout.values())[-1].stop)
    expected = {"hue": lambda: hue_histogram(images, hue_bins), "value": lambda: value_histogram(images, value_bins)}
    expected.update({f"hog{cell}": lambda cell=cell: hog(images, orientations, cell, signed) for cell in cells})
    histograms = (["hue"] if hue_bins else []) + (["value"] if value_bins else [])
    assert list(layout) == histograms + [f"hog{c}" for c in cells]
    for name, columns in layout.items():
        np.testing.assert_array_equal(features[:, columns], expected[name]())


def test_feature_dims_and_layout():
    assert hog_dim(9, 8) == 3 * 3 * 4 * 9 == 324
    assert hog_dim(9, 4) == 7 * 7 * 4 * 9 == 1764
    assert hog_dim(18, 16) == 1 * 1 * 4 * 18 == 72
    assert feature_layout() == {"hue": slice(0, 10), "value": slice(10, 18), "hog8": slice(18, 666),
                                "hog16": slice(666, 738)}
    assert feature_layout(10, 0, 9, [8]) == {"hue": slice(0, 10), "hog8": slice(10, 334)}  # the anchor: 334
    assert hog(random_images(2, size=20), 9, 6).shape == (2, hog_dim(9, 6, 20, 20)) == (2, 2 * 2 * 36)


@pytest.mark.parametrize("chunk_images", [1, 7, 16, 100])
def test_chunked_features_are_bit_identical_to_unchunked(chunk_images, tmp_path):
    images = random_images(37, seed=5)
    settings = dict(hue_bins=10, value_bins=8, orientations=18, cells=(4, 8, 16), signed=True)
    whole = image_features(images, chunk_images=len(images), **settings)
    out = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float32, shape=whole.shape)
    chunked = image_features(images, chunk_images=chunk_images, out=out, **settings)
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


ALLOWED = "allowed an integer"


@pytest.mark.parametrize("call, message", [
    (lambda im: image_features(im, cells=[8, 17]), f"cell=17 is out of range: {ALLOWED} in [1, 16] for 32x32 images"),
    (lambda im: image_features(im, cells=[0]), "cell=0 is out of range: allowed an integer in [1, 16]"),
    (lambda im: image_features(im, cells=[8, 8]), "cells=[8, 8] repeats a cell size: allowed distinct sizes"),
    (lambda im: image_features(im, cells=8), "cells=8 is not a list: allowed a list of cell sizes"),  # type: ignore[arg-type]
    (lambda im: image_features(im, cells=[8.0]), "cell=8.0 is not an integer"),  # type: ignore[list-item]
    (lambda im: image_features(im, orientations=0), f"orientations=0 is out of range: {ALLOWED} >= 1 and <= 360"),
    (lambda im: image_features(im, orientations=9.0), "orientations=9.0 is not an integer"),  # type: ignore[arg-type]
    (lambda im: image_features(im, hue_bins=-1), "hue_bins=-1 is out of range: allowed an integer >= 0 and <= 360"),
    (lambda im: image_features(im, value_bins=257), f"value_bins=257 is out of range: {ALLOWED} >= 0 and <= 256"),
    (lambda im: image_features(im, hue_bins=0, value_bins=0, cells=[]),
     "hue_bins=0, value_bins=0 and cells=[] leave no"),
    (lambda im: image_features(im, chunk_images=0), "chunk_images=0 is out of range"),
    (lambda im: image_features(im, signed="yes"), "signed='yes' is not a bool"),  # type: ignore[arg-type]
    (lambda im: image_features(im.astype(np.float32)), "images must be (N, H, W, 3) uint8, got (2, 32, 32, 3) float32"),
    (lambda im: image_features(im[..., 0]), "images must be (N, H, W, 3) uint8, got (2, 32, 32) uint8"),
    (lambda im: image_features(im, out=np.empty((2, 10), np.float32)),
     "out must be float32 (2, 738), got float32 (2, 10)"),
    (lambda im: hue_histogram(im, 0), "bins=0 is out of range"),
    (lambda im: value_histogram(im, 0), "bins=0 is out of range"),
    (lambda im: hog(im, 18, 20), "cell=20 is out of range"),
    (lambda im: standardize(np.ones((2, 3)), np.zeros(3), np.zeros(3)), "std must be > 0 in every column"),
    (lambda im: standardize(np.ones((2, 3)), np.zeros(2), np.ones(2)), "X must be (N, D) with mean and std (D,)"),
    (lambda im: standardization(np.ones(3)), "X_train must be a 2-D array with at least one row"),
])
def test_bad_input_is_one_clear_line(call, message):
    with pytest.raises(ValueError) as info:
        call(random_images(2))
    assert message in str(info.value) and "\n" not in str(info.value)


# ---- the features in the pipeline: which model a stage trains, what a features model's weights show


def test_a_train_stage_names_its_models(monkeypatch):
    from linclass.plumbing.paths import model_dir, train_metrics_file
    from linclass.plumbing.stage import train_models
    from linclass.settings import ConfigError, Settings

    settings = Settings()
    monkeypatch.setenv("DVC_STAGE", "train_features@hog_hist")
    assert train_models(settings, []) == [(loss, reg, "hog_hist") for loss in ("svm", "softmax")
                                          for reg in ("none", "l1", "l2", "elasticnet")]
    monkeypatch.setenv("DVC_STAGE", "train@softmax-l1")
    assert train_models(settings, []) == [("softmax", "l1", "pixels")]
    assert train_models(settings, ["--loss", "svm", "--regularizer", "l2"]) == [("svm", "l2", "pixels")]
    with pytest.raises(SystemExit):  # by hand: one model on the pixels; the features models train as a stage
        train_models(settings, ["--loss", "svm", "--regularizer", "l2", "--features", "hog_hist"])
    for stage in ("train_features@sift", "train_features@svm-l2-hog_hist"):
        monkeypatch.setenv("DVC_STAGE", stage)
        with pytest.raises(ConfigError, match=rf"^DVC_STAGE='{stage}' is not a train stage of the grid; allowed: "
                                              r"train@svm-none, .*train_features@hog_hist \(as DVC_STAGE"):
            train_models(settings, [])
    assert model_dir("svm-l2") == Path("models/svm-l2")
    assert model_dir("svm-l2-hog_hist") == Path("models/hog_hist/svm-l2")
    assert train_metrics_file("svm-l2") == Path("metrics/train/svm-l2.json")
    assert train_metrics_file("svm-l2-hog_hist") == Path("metrics/train/hog_hist.json")


def test_the_feature_settings_are_checked_as_the_config_checks_them():
    from linclass.settings import Features, Grid, check

    check(Features, cells=[8, 16], orientations=18, signed=True)
    with pytest.raises(ValueError, match=r"^orientations=0 is out of range: allowed an integer >= 1 and <= 360$"):
        check(Features, orientations=0)
    with pytest.raises(ValueError, match=r"^features\[0\]='sift' is not one of 'hog_hist'$"):
        check(Grid, features=["sift"])
    check(Grid, features=[])   # pixels only


def test_hog_cell_weights_add_each_cell_over_the_blocks_that_hold_it():
    from linclass.plots import hog_cell_weights

    orientations, cells = 4, 3   # 2 x 2 blocks of 2 x 2 cells
    W = np.zeros((1, hog_dim(orientations, 8, 24, 24)))   # 24 x 24 image, 8-pixel cells: 3 x 3
    blocks = W.reshape(1, 2, 2, 2, 2, orientations)
    blocks[0, 0, 0, 1, 1, 2] = 1.0   # block (0, 0), its cell (1, 1): cell (1, 1)
    blocks[0, 1, 1, 0, 0, 2] = 2.0   # block (1, 1), its cell (0, 0): cell (1, 1) again
    blocks[0, 0, 1, 0, 1, 3] = 5.0   # block (0, 1), its cell (0, 1): cell (0, 2)
    weights = hog_cell_weights(W, orientations, cells)
    assert weights.shape == (1, 3, 3, 4)
    assert weights[0, 1, 1, 2] == 3.0 and weights[0, 0, 2, 3] == 5.0 and weights.sum() == 8.0
    with pytest.raises(ValueError, match="HOG weights must have 64 columns"):
        hog_cell_weights(W[:, :10], orientations, cells)


def test_a_glyph_draws_each_positive_bin_as_a_stroke_along_its_edge():
    from linclass.plots import glyph_segments

    cells = np.zeros((2, 2, 4))
    cells[0, 1, 0], cells[1, 0, 2], cells[1, 1, 3] = 2.0, 1.0, -5.0   # a negative weight draws nothing
    segments, widths = glyph_segments(cells, signed=False, origin=(10, 20))
    assert segments.shape == (2, 2, 2) and widths.tolist() == [2.0, 1.25]
    for (start, end), (r, c, o) in zip(segments, [(0, 1, 0), (1, 0, 2)], strict=True):
        np.testing.assert_allclose((start + end) / 2, (10 + c, 20 + 1 - r))   # row 0 at the top
        gradient = np.deg2rad((o + 0.5) * 180 / 4)
        direction = end - start
        assert abs(direction @ [np.cos(gradient), np.sin(gradient)]) < 1e-9   # the edge: across the gradient
    assert np.linalg.norm(segments[0, 1] - segments[0, 0]) == pytest.approx(0.9)   # the strongest: 0.9 of a cell


def test_plot_feature_weights_draws_every_class(tmp_path):
    from linclass.plots import plot_feature_weights

    layout = {"parts": {k: [v.start, v.stop] for k, v in feature_layout().items()}, "orientations": 18,
              "signed": True}
    W = np.random.default_rng(0).standard_normal((3, 738)).astype(np.float32)
    path = plot_feature_weights(W, layout, ["cat", "dog", "ship"], tmp_path / "w.png", title="t")
    assert path.stat().st_size > 5000
    with pytest.raises(ValueError, match="W has 700 columns"):
        plot_feature_weights(W[:, :700], layout, ["cat", "dog", "ship"], tmp_path / "x.png", title="t")


def test_a_features_run_logs_the_same_param_names_with_the_features_rate_and_strength():
    from linclass.settings import Settings
    from linclass.tracking.records import feature_settings, training_params

    settings = Settings()
    for loss, reg in (("svm", "l2"), ("softmax", "elasticnet")):
        pixels, features = training_params(settings, loss, reg), training_params(settings, loss, reg, "hog_hist")
        assert set(pixels) == set(features) and pixels["features"] == "pixels" and features["features"] == "hog_hist"
        assert features["learning_rate"] == getattr(settings.features.learning_rate, loss)
        assert features["strength"] == getattr(settings.features.strength, reg)
        assert pixels["learning_rate"] == getattr(settings.loss, loss).learning_rate
    assert feature_settings(settings) == "hue_bins=10 value_bins=8 orientations=18 signed=true cells=[8, 16]"
