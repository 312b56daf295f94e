"""What a training run records in MLflow: its own settings as params, its curves at chart resolution,
scalar metrics, the data set it was trained on."""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Metric
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_incrementing

from linclass.redact import redact_url
from linclass.settings import Settings

MAX_CURVE_POINTS = 1000  # per-step curves in MLflow: window means, at most this many points a curve


def history_metrics(key: str, values, steps=None, timestamp_ms: int | None = None) -> list[Metric]:
    """One Metric per value; NaN values (e.g. no validation set) are skipped."""
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    steps = range(len(values)) if steps is None else steps
    return [Metric(key, float(v), ts, int(s)) for s, v in zip(steps, values) if v == v]


def curve_points(values) -> tuple[np.ndarray, np.ndarray]:
    """A per-step curve (N,) at chart resolution: (steps (K,), means (K,)), K <= MAX_CURVE_POINTS.

    Consecutive steps are averaged in windows of ceil(N / MAX_CURVE_POINTS); a window's step is its
    last step (1-based). With N <= MAX_CURVE_POINTS every value is kept as it is.
    """
    values = np.asarray(values, dtype=np.float64)
    width = max(1, -(-len(values) // MAX_CURVE_POINTS))
    starts = np.arange(0, len(values), width)
    ends = np.minimum(starts + width, len(values))
    if width == 1:
        return ends, values
    return ends, np.add.reduceat(values, starts) / (ends - starts)


def training_params(params: Settings, loss: str, regularizer: str, features: str = "pixels") -> dict[str, object]:
    """The effective settings of one training run, flat and with plain names (MLflow's params).

    Only what this run used: its regularizer's strength (and beta for elastic net), its loss's delta
    (SVM losses), the SGD settings, the preprocessing and the data's md5. The same names for every
    combination, so that the runs of a grid and of a sweep line up in MLflow's parallel coordinates.
    `features` is the model's input: pixels, or a kind of features (then the learning rate and the strength
    are the features' own, settings `features`; the features' other settings are the tag `features_settings`).
    The two settings only some runs have are named so that they sort after those every run has:
    `strength_beta` (elastic net's beta) and `svm_delta` (the SVM losses' margin). MLflow's Compare page opens
    its parallel coordinates on the first three params, in name order, that differ between the runs, and
    draws a run lacking one of them wrongly.
    """
    train, penalty = params.train, getattr(params.regularizer, regularizer)
    loss_cfg = getattr(params.loss, loss)
    on_features = features != "pixels"
    strength = getattr(params.features.strength, regularizer) if on_features else penalty.strength
    flat: dict[str, object] = {"loss": loss, "regularizer": regularizer, "strength": strength, "features": features}
    if regularizer == "elasticnet":
        flat["strength_beta"] = penalty.beta
    if hasattr(loss_cfg, "delta"):
        flat["svm_delta"] = loss_cfg.delta
    flat["learning_rate"] = getattr(params.features.learning_rate, loss) if on_features else loss_cfg.learning_rate
    for key in ("lr_decay", "epochs", "batch_size", "init_scale", "seed", "l1_step"):
        flat[key] = getattr(train, key)
    pre = params.preprocess
    flat.update(val_size=pre.val_size, max_train=pre.max_train, preprocess_seed=pre.seed, scale=pre.scale)
    flat["data_md5"] = params.data.md5
    return flat


def feature_settings(params: Settings) -> str:
    """The features' own settings in one line (a features run's tag `features_settings`, and part of its
    params hash): not params, which every run of the grid shares by name (see training_params)."""
    f = params.features
    return (f"hue_bins={f.hue_bins} value_bins={f.value_bins} orientations={f.orientations} "
            f"signed={str(f.signed).lower()} cells={f.cells}")


def params_hash(flat: Mapping[str, object]) -> str:
    """8 hex digits that identify a set of settings (run names, tags)."""
    text = json.dumps({k: str(v) for k, v in flat.items()}, sort_keys=True)
    return hashlib.md5(text.encode()).hexdigest()[:8]


def scalar_metrics(values: Mapping[str, float], step: int = 0) -> list[Metric]:
    """{'test_accuracy': 0.4} -> one Metric each (NaN skipped)."""
    ts = int(time.time() * 1000)
    return [Metric(k, float(v), ts, step) for k, v in values.items() if v == v]


def _duplicate(exc: BaseException) -> bool:
    message = str(exc).lower()
    return isinstance(exc, mlflow.exceptions.MlflowException) and ("unique" in message or "duplicate" in message)


# MLflow's database store writes a row it may have to create (a dataset, a model version's tag, an alias) by
# looking it up, then inserting it: of two writers of the same new row at the same moment (a parallel grid, Ray
# nodes, two pipelines on one store) the slower fails on the unique key. Its transaction is rolled back, so trying
# again finds the row the other one inserted and updates or links it.
again_on_duplicate = retry(retry=retry_if_exception(_duplicate), stop=stop_after_attempt(5),
                           wait=wait_incrementing(0.1, 0.1), reraise=True)


@again_on_duplicate
def log_dataset(data: Any, num_train: int, num_val: int) -> None:
    """Log the archive (its URL and md5) as the active run's training input (again_on_duplicate: the unique key
    is (experiment, name, digest))."""
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    dataset = MetaDataset(HTTPDatasetSource(redact_url(str(data.url))), name=str(data.name),  # type: ignore[abstract]
                          digest=str(data.md5)[:16])
    tags = {"md5": str(data.md5), "train_images": str(num_train), "val_images": str(num_val)}
    mlflow.log_input(dataset, context="training", tags=tags)
