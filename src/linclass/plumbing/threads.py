"""BLAS threads of a stage from params.yaml, set before numpy is imported (BLAS reads them once, on load).

Set here, not on the stage's command line: DVC pastes interpolated values into a shell command
unquoted, so `train.blas_threads='1; touch pwned'` would run before any check. This module imports
no numpy; a value that is not a positive integer sets nothing and is then rejected in one line by
the stage's validation (linclass.settings, through the stage's stage_params), before any work.

A stage started by a warm interpreter (linclass.orchestration.warm) finds BLAS already loaded, with the
threads named in $LINCLASS_WARM_BLAS: if they are not the stage's, it re-executes itself in a fresh python.
"""
from __future__ import annotations

import os
import sys

import yaml

VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
LOADED = "LINCLASS_WARM_BLAS"


def blas_threads(params_path: str = "params.yaml") -> int | None:
    """train.blas_threads of `params_path`, or None where it is missing or not a positive integer."""
    try:
        with open(params_path) as f:
            value = yaml.safe_load(f)["train"]["blas_threads"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        return None
    return value


def set_blas_threads(params_path: str = "params.yaml") -> int | None:
    """Put train.blas_threads of `params_path` into the BLAS environment variables; return it."""
    value = blas_threads(params_path)
    if value is None:
        return None
    for variable in VARIABLES:
        os.environ[variable] = str(value)
    loaded = os.environ.pop(LOADED, None)
    if loaded is not None and loaded != str(value):   # BLAS is loaded already, with other threads
        os.execv(sys.executable, [sys.executable, *sys.argv])
    return value
