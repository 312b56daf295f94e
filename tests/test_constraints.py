"""linclass.constraints: one declaration of what each parameter allows, in words the errors repeat."""
import math

import numpy as np
import pytest

from linclass import constraints
from linclass.constraints import Interval, Options, check, check_labels, check_value
from linclass.core.losses import LOSSES
from linclass.core.regularizers import REGULARIZERS


@pytest.mark.parametrize("interval, inside, outside, words", [
    (Interval(float, 0, None, closed="neither"), [1e-9, 5.0], [0.0, -1.0, math.inf, math.nan], "a number > 0"),
    (Interval(float, 0, 1, closed="right"), [0.5, 1.0], [0.0, 1.5], "a number > 0 and <= 1"),
    (Interval(int, 1, 20), [1, 20, np.int64(3)], [0, 21, 2.0, True], "an integer >= 1 and <= 20"),
])
def test_interval_allows_exactly_its_range_and_says_it(interval, inside, outside, words):
    assert str(interval) == words
    assert all(interval.allows(v) for v in inside)
    assert not any(interval.allows(v) for v in outside)


def test_check_names_the_value_and_what_is_allowed():
    with pytest.raises(ValueError, match=r"^lr=-1 is out of range: allowed a number > 0$"):
        check({"lr": Interval(float, 0, None, closed="neither")}, lr=-1)
    with pytest.raises(ValueError, match=r"^lr='x' is not a number$"):
        check_value("lr", "x", Interval(float, 0, None))
    with pytest.raises(ValueError, match=r"^loss='hinge' is out of range: allowed one of svm, softmax$"):
        check_value("loss", "hinge", Options(("svm", "softmax")))


def test_check_labels():
    check_labels(np.array([0, 2]), 3)
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 3\), got label 3"):
        check_labels(np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="integer labels"):
        check_labels(np.array([0.0]))


def test_library_names_are_the_declared_ones():
    assert tuple(LOSSES) == constraints.LOSS_NAMES
    assert tuple(REGULARIZERS) == constraints.REGULARIZER_NAMES


def test_config_and_library_share_one_declaration():
    from linclass.plumbing.config import LIBRARY_SETTINGS, LOSS_SETTINGS

    assert LOSS_SETTINGS["learning_rate"] is constraints.SGD["learning_rate"]
    assert LIBRARY_SETTINGS["data.retries"] is constraints.DOWNLOAD["retries"]
    assert LIBRARY_SETTINGS["preprocess.scale"] is constraints.PREPROCESS["scale"]
