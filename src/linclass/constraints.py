"""Allowed values of every parameter, declared once (as scikit-learn's parameter constraints).

The library checks its arguments against these declarations (`check(SGD, learning_rate=lr)`) and
linclass.plumbing.config checks the settings of params.yaml against the same ones, so a value that
the config accepts is one the library accepts, and both say what is allowed in the same words.
This module imports nothing of linclass: every layer can use it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np


def is_int(value) -> bool:
    return isinstance(value, (Integral, np.integer)) and not isinstance(value, bool)


def is_real(value) -> bool:
    return isinstance(value, (Real, np.floating, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Interval:
    """Numbers of `kind` (int or float) between `low` and `high` (None: unbounded), finite.

    `closed` says which ends are allowed: "both", "left", "right" or "neither".
    """
    kind: type
    low: float | None
    high: float | None
    closed: str = "both"

    @property
    def kind_name(self) -> str:
        return "an integer" if self.kind is int else "a number"

    def __str__(self) -> str:
        low_ok, high_ok = self.closed in ("both", "left"), self.closed in ("both", "right")
        low = None if self.low is None else f"{'>=' if low_ok else '>'} {self.low:g}"
        high = None if self.high is None else f"{'<=' if high_ok else '<'} {self.high:g}"
        return " ".join([self.kind_name, " and ".join(filter(None, [low, high])) or "(finite)"])

    def has_kind(self, value) -> bool:
        return is_int(value) if self.kind is int else is_real(value)

    def allows(self, value) -> bool:
        if not self.has_kind(value) or not math.isfinite(value):
            return False
        low_ok, high_ok = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and not (value >= self.low if low_ok else value > self.low):
            return False
        return self.high is None or (value <= self.high if high_ok else value < self.high)


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values (e.g. the names of the losses)."""
    values: tuple

    def __str__(self) -> str:
        return "one of " + ", ".join(map(str, self.values))

    def allows(self, value) -> bool:
        return isinstance(value, str) and value in self.values


def check_value(name: str, value, constraint) -> None:
    """ValueError naming `name`, the value and what is allowed, unless `constraint` allows it."""
    if constraint.allows(value):
        return
    if isinstance(constraint, Interval) and not constraint.has_kind(value):
        raise ValueError(f"{name}={value!r} is not {constraint.kind_name}")
    raise ValueError(f"{name}={value!r} is out of range: allowed {constraint}")


def check(constraints: dict, **values) -> None:
    """Check each keyword argument against its declaration in `constraints`."""
    for name, value in values.items():
        check_value(name, value, constraints[name])


def check_labels(y: np.ndarray, num_classes: int | None = None, name: str = "y") -> None:
    """ValueError unless y is a 1-D integer array of labels >= 0 (and < num_classes when given)."""
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must be 1-D integer labels, got shape {y.shape} dtype {y.dtype}")
    if y.size and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        bad = y[(y < 0) | (y >= (num_classes if num_classes is not None else np.iinfo(y.dtype).max))][0]
        allowed = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        raise ValueError(f"{name} must hold labels in {allowed}, got label {bad}")


# ---------------------------------------------------------------- the declarations

LOSS_NAMES = ("svm", "squared_svm", "softmax")          # linclass.core.losses
REGULARIZER_NAMES = ("none", "l1", "l2", "elasticnet")  # linclass.core.regularizers

LOSS = {"delta": Interval(float, 0, None, closed="neither")}  # the SVM margin
REGULARIZER = {"strength": Interval(float, 0, None), "beta": Interval(float, 0, None)}
SGD = {
    "learning_rate": Interval(float, 0, None, closed="neither"),
    "batch_size": Interval(int, 1, None),
    "epochs": Interval(int, 1, None),
    "lr_decay": Interval(float, 0, 1, closed="right"),
    "init_scale": Interval(float, 0, None),
    "seed": Interval(int, 0, None),
    "train_accuracy_sample": Interval(int, 1, None),
    "l1_step": Options(("subgradient", "proximal")),  # how the |W| part of L1 / elastic net is applied
    **REGULARIZER,
    **LOSS,
}
MAX_BACKOFF = 30.0  # seconds: the wait between download attempts doubles up to this
DOWNLOAD = {
    "retries": Interval(int, 1, 20),                     # total attempts
    "timeout": Interval(float, 0, 3600, closed="right"),  # seconds per network operation
    "backoff": Interval(float, 0, MAX_BACKOFF),
}
PREPROCESS = {
    "val_size": Interval(int, 1, 49_999),
    "seed": Interval(int, 0, None),
    # pixels differ from the mean by at most 255: this keeps X well inside float32's range
    "scale": Interval(float, 1e-3, 1e6),
    "max_train": Interval(int, 1, None),
}
