"""Classification metrics on integer labels (vectorized)."""

import numpy as np


def check_labels(y: np.ndarray, num_classes: int | None = None, name: str = "y") -> None:
    """ValueError unless y is a 1-D integer array of labels >= 0 (and < num_classes when given)."""
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must be 1-D integer labels, got shape {y.shape} dtype {y.dtype}")
    if y.size and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        bad = y[(y < 0) | (y >= (num_classes if num_classes is not None else np.iinfo(y.dtype).max))][0]
        allowed = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        raise ValueError(f"{name} must hold labels in {allowed}, got label {bad}")


def _check_labels(y_true, y_pred, num_classes=None):
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got {y_true.shape} and {y_pred.shape}")
    if y_true.size == 0:
        raise ValueError("y_true and y_pred must not be empty")
    if num_classes is not None:
        check_labels(y_true, num_classes, "y_true")
        check_labels(y_pred, num_classes, "y_pred")
    return y_true, y_pred


def accuracy(y_true, y_pred):
    """Fraction of correct predictions (python float)."""
    y_true, y_pred = _check_labels(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def confusion_matrix(y_true, y_pred, num_classes):
    """(C, C) int64 counts: entry [t, p] = number of examples of true class t predicted as p."""
    y_true, y_pred = _check_labels(y_true, y_pred, num_classes)
    flat = y_true.astype(np.int64) * num_classes + y_pred.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(y_true, y_pred, num_classes):
    """(C,) float64: for each true class, the fraction predicted correctly (NaN for a class with no examples)."""
    counts = confusion_matrix(y_true, y_pred, num_classes)
    per_class_total = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(counts) / per_class_total
