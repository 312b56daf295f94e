"""Pixels: the design matrix X = (pixels - mean) / scale kept as uint8, with the centring folded into the
arithmetic: its scores are the float32 formula's to rounding, and the same inputs give the same bits."""

import numpy as np
import pytest

from linclass.core import pixels as px
from linclass.core.model import class_scores, predict
from linclass.core.pixels import Pixels, design_matrix


def cifar_like(n=300, dim=3072, seed=0):
    """Pixel rows with CIFAR's statistics (a brightness per image, noise around it, clipped to 0..255)."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(40, 200, (n, 1)) + rng.normal(0, 50, (n, dim))
    return np.clip(rows, 0, 255).astype(np.uint8)


def weights(C=10, dim=3072, size=1e-2, seed=1):
    rng = np.random.default_rng(seed)
    W = size * (rng.standard_normal((C, dim)) + rng.standard_normal(dim))  # a share common to all classes
    return W.astype(np.float32), (size * rng.standard_normal(C)).astype(np.float32)


def test_design_matrix_is_the_float32_formula():
    x = np.random.default_rng(0).integers(0, 256, size=(37, 12), dtype=np.uint8)
    mean = np.random.default_rng(1).uniform(0, 255, size=12).astype(np.float32)
    X = design_matrix(x, mean, 255.0)
    assert X.dtype == np.float32 and X.shape == (37, 12)
    np.testing.assert_array_equal(X, (x.astype(np.float32) - mean) / np.float32(255.0))
    np.testing.assert_array_equal(Pixels(x, mean, 255.0).to_float(), X)


@pytest.mark.parametrize("n", [1, 31, 32, 33, 300])
def test_scores_are_the_float32_formulas_to_rounding(n):
    """(F W^T - W mean) / scale + b against X W^T + b: both near the float64 truth, the folded one within a
    few times the float32 formula's own rounding error."""
    P = cifar_like(n)
    mean = cifar_like(500, seed=5).mean(axis=0).astype(np.float32)
    W, b = weights()
    folded = Pixels(P, mean, 255.0).scores(W, b)
    formula = design_matrix(P, mean, 255.0) @ W.T + b
    truth = ((P - mean.astype(np.float64)) / 255.0) @ W.T.astype(np.float64) + b
    assert folded.dtype == np.float32 and folded.shape == (n, 10)
    size = np.abs(truth).max()
    assert np.abs(folded - truth).max() <= 2e-6 * size
    assert np.abs(folded - formula).max() <= 2e-6 * size
    assert np.array_equal(np.argmax(folded, axis=1), np.argmax(truth, axis=1))


def test_scale_and_bias_are_applied_once():
    P = cifar_like(40, dim=12)
    mean = P.mean(axis=0)
    W, b = weights(C=3, dim=12)
    for scale in (1.0, 255.0, 0.5):
        truth = ((P - mean) / scale) @ W.T.astype(np.float64) + b
        np.testing.assert_allclose(Pixels(P, mean, scale).scores(W, b), truth, rtol=1e-5, atol=1e-4)


def test_float64_weights_give_float64_scores():
    P = cifar_like(50, dim=30)
    mean = P.mean(axis=0)
    W, b = (w.astype(np.float64) for w in weights(C=4, dim=30))
    scores = Pixels(P, mean, 7.0).scores(W, b)
    assert scores.dtype == np.float64
    exact = ((P - mean.astype(np.float32).astype(np.float64)) / 7.0) @ W.T + b
    np.testing.assert_allclose(scores, exact, rtol=1e-12, atol=1e-12)


def test_same_rows_same_bits_and_the_model_functions_use_it(tmp_path):
    P = cifar_like(100)
    mean = P.mean(axis=0).astype(np.float32)
    W, b = weights()
    X = Pixels(P, mean, 255.0)
    first = X.scores(W, b)
    assert first.tobytes() == X.scores(W, b).tobytes()
    np.save(tmp_path / "P.npy", P)
    mapped = Pixels(np.load(tmp_path / "P.npy", mmap_mode="r"), mean, 255.0)
    assert mapped.scores(W, b).tobytes() == first.tobytes()
    assert class_scores(X, W, b).tobytes() == first.tobytes()
    assert np.array_equal(predict(X, W, b), np.argmax(first, axis=1))


def test_rows_select_like_a_matrix():
    P = cifar_like(50, dim=12)
    X = Pixels(P, P.mean(axis=0), 2.0)
    assert len(X) == 50 and X.shape == (50, 12) and X.dtype == np.float32 and X.ndim == 2
    for rows in (slice(3, 9), np.array([4, 0, 49, 4]), np.arange(50) % 7 == 0):
        part = X[rows]
        assert isinstance(part, Pixels) and part.scale == 2.0 and part.mean is X.mean
        np.testing.assert_array_equal(part.to_float(), X.to_float()[rows])
    for bad in ((slice(None), 0), 3, np.zeros((2, 2), int)):
        with pytest.raises(IndexError, match="rows"):
            X[bad]


@pytest.mark.parametrize("args, match", [
    ((np.zeros((3, 4), np.float32), np.zeros(4), 1.0), "pixels must be a 2-D uint8 array"),
    ((np.zeros(4, np.uint8), np.zeros(4), 1.0), "pixels must be a 2-D uint8 array"),
    ((np.zeros((3, 4), np.uint8), np.zeros(5), 1.0), r"mean must be a float array of shape \(4,\)"),
    ((np.zeros((3, 4), np.uint8), np.zeros(4, np.uint8), 1.0), "mean must be a float array"),
    ((np.zeros((3, 4), np.uint8), np.zeros(4), 0), "scale=0 is out of range"),
    ((np.zeros((3, 4), np.uint8), np.zeros(4), float("nan")), "scale=nan is out of range"),
    ((np.zeros((3, 4), np.uint8), np.zeros(4), True), "scale=True"),
])
def test_bad_input_is_one_clear_error(args, match):
    with pytest.raises(ValueError, match=match):
        Pixels(*args)


def test_scores_check_the_shapes():
    X = Pixels(np.zeros((3, 4), np.uint8), np.zeros(4), 1.0)
    with pytest.raises(ValueError, match=r"expected W \(C, 4\), b \(C,\)"):
        X.scores(np.zeros((2, 5), np.float32), np.zeros(2, np.float32))


def test_blocks_cover_the_rows_once_in_order():
    assert px.row_blocks(0) == []
    assert px.row_blocks(70, 32) == [(0, 32), (32, 64), (64, 70)]
    assert px.row_blocks(64, 32) == [(0, 32), (32, 64)]
    # the block of the scores: 32 rows of CIFAR-10 float32 stay well inside a 2 MiB L2 cache
    assert px.BLOCK_ROWS * 3072 * 4 <= 512 * 1024
