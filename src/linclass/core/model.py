"""The linear classifier of the lecture: f(x, W) = Wx + b.

Shapes (CIFAR-10: C = 10 classes, D = 3072 pixels):
    W (C, D)   one row per class (a "template image")
    b (C,)     one bias per class; the bias is NOT regularized (see regularizers.py)
    X (N, D)   one example per row, so the scores of all rows are X @ W.T + b, shape (N, C)
X is a float array or linclass.core.pixels.Pixels (the uint8 images with the mean image and scale).
"""

import numpy as np

from linclass.core.pixels import Pixels
from linclass.settings import Train, default


def init_weights(num_classes, dim, rng, scale=default(Train, "init_scale"), dtype=np.float32):
    """Small random weights W ~ scale * N(0, 1) of shape (C, D) and zero bias b of shape (C,), both `dtype`."""
    if int(num_classes) < 1 or int(dim) < 1:
        raise ValueError(f"num_classes and dim must be >= 1, got num_classes={num_classes}, dim={dim}")
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise ValueError(f"dtype must be a floating dtype (float32 or float64), got {np.dtype(dtype)}")
    W = (scale * rng.standard_normal((int(num_classes), int(dim)))).astype(dtype)
    b = np.zeros(int(num_classes), dtype=dtype)
    return W, b


def class_scores(X, W, b):
    """Scores (N, C) = X (N, D) @ W.T (D, C) + b (C,): row i is f(x_i, W) = W x_i + b."""
    if X.ndim != 2 or X.shape[1] != W.shape[1] or b.shape != (W.shape[0],):
        raise ValueError(f"expected X (N, D), W (C, D), b (C,); got X {X.shape}, W {W.shape}, b {b.shape}")
    if isinstance(X, Pixels):
        return X.scores(W, b)
    return X @ W.T + b


def predict(X, W, b):
    """Predicted class per row (N,) int64: the class with the highest score."""
    return np.argmax(class_scores(X, W, b), axis=1).astype(np.int64)
