"""Metrics against a small hand-computed example."""

import numpy as np
import pytest

from linclass.core.metrics import accuracy, confusion_matrix, per_class_accuracy

Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 0])
Y_PRED = np.array([0, 1, 0, 1, 2, 2, 2, 0, 2, 0])
# true 0: predicted 0, 1, 0, 0 -> [3, 1, 0]; true 1: 1, 2 -> [0, 1, 1]; true 2: 2, 2, 0, 2 -> [1, 0, 3]
EXPECTED_CONFUSION = np.array([[3, 1, 0], [0, 1, 1], [1, 0, 3]])


def test_accuracy():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(7 / 10)
    assert accuracy(Y_TRUE, Y_TRUE) == 1.0
    assert isinstance(accuracy(Y_TRUE, Y_PRED), float)


def test_confusion_matrix_rows_are_true_classes():
    counts = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert counts.dtype == np.int64
    assert np.array_equal(counts, EXPECTED_CONFUSION)
    assert counts.sum() == len(Y_TRUE)
    assert np.array_equal(confusion_matrix(Y_TRUE, Y_PRED, 4)[:3, :3], EXPECTED_CONFUSION)
    assert not confusion_matrix(Y_TRUE, Y_PRED, 4)[3].any()


def test_per_class_accuracy():
    np.testing.assert_allclose(per_class_accuracy(Y_TRUE, Y_PRED, 3), [3 / 4, 1 / 2, 3 / 4])
    with_empty_class = per_class_accuracy(Y_TRUE, Y_PRED, 4)
    assert np.isnan(with_empty_class[3])  # no examples of class 3


@pytest.mark.parametrize("y_true, y_pred, message", [
    (np.array([0, 1]), np.array([0, 1, 2]), r"\(2,\) and \(3,\)"),
    (np.array([0, 3]), np.array([0, 1]), r"y_true must hold labels in \[0, 3\), got label 3"),
    (np.array([0, 1]), np.array([-1, 1]), "y_pred must hold labels in .*got label -1"),
    (np.array([], dtype=int), np.array([], dtype=int), "must not be empty"),
])
def test_bad_labels_raise(y_true, y_pred, message):
    with pytest.raises(ValueError, match=message):
        confusion_matrix(y_true, y_pred, 3)
