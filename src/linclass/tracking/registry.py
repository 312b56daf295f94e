"""A trained classifier as an MLflow Model, and the Model Registry.

Each training run logs one pyfunc model named "model" (linclass.tracking.served_model: raw uint8
images in, class names and probabilities/scores out; the preprocessing travels with it: for a model on
image features, linclass.features and the modules it imports too). Its requirements are given, not
inferred (inferring them imports and scans the environment: seconds).

One registered model per tracking experiment (named like it, e.g. `linclass-cifar10`) holds every
combination of the grid and of sweeps as versions, tagged with model / loss / regularizer and their
accuracies, so that one alias, `champion`, can point at the best on validation. `evaluate` registers
the models it evaluates and moves the alias; the champion's version carries the paired test (McNemar) of it
against the runner-up, on validation and on test (SELECTION_TAGS).

Each logged model is tied to its version (its tag `mlflow.modelVersions`, what `mlflow.register_model`
writes): the logged model's page in the UI then shows its version instead of "Not registered".
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from linclass.data.cifar import as_images
from linclass.tracking.records import again_on_duplicate
from linclass.tracking.store import quiet

CHAMPION = "champion"
MODEL_NAME = "model"  # the name of the model inside its run: runs:/<run id>/model
# MLflow copies this file into each model (models from code): found by name, not imported (it registers the model)
CODE = Path(str(getattr(importlib.util.find_spec("linclass.tracking.served_model"), "origin", "")))
PACKAGE = CODE.parents[1]
IMAGE_SHAPE = (32, 32, 3)
# On the champion's version: the runner-up and the paired test against it (evaluate's `selection_tags`)
SELECTION_TAGS = ("runner_up", "runner_up_version", *(f"{split}_{key}" for split in ("val", "test")
                  for key in ("verdict", "difference", "b", "c", "p_value")))


def model_input(X) -> np.ndarray:
    """What the MLflow Model takes: the uint8 images (n, 32, 32, 3) of Pixels rows X (R, G, B planes)."""
    return as_images(X.pixels)


def output_kind(loss: str) -> str:
    """What the model returns per class: softmax probabilities, or the SVM's raw scores."""
    return "probabilities" if loss == "softmax" else "scores"


def signature(class_names: Sequence[str]):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, *IMAGE_SHAPE))])
    outputs = Schema([ColSpec("string", "class"), *(ColSpec("float", name) for name in class_names)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def requirements(features: bool = False) -> list[str]:
    import mlflow
    import pandas as pd

    pins = [f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}", f"pandas=={pd.__version__}"]
    if features:   # linclass.settings checks the features' settings with pydantic
        import pydantic

        pins.append(f"pydantic=={pydantic.VERSION}")
    return pins


def features_code(folder: Path) -> Path:
    """A copy of what a features model computes its features with, linclass.features and the modules it
    imports, as the package folder/linclass: the model's code/ folder (tests/test_features_pipeline.py loads
    such a model where linclass is not installed)."""
    import linclass
    import linclass.features
    import linclass.plumbing
    import linclass.redact
    import linclass.settings

    for module in (linclass, linclass.features, linclass.settings, linclass.plumbing, linclass.redact):
        target = folder / "linclass" / Path(str(module.__file__)).relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(str(module.__file__), target)
    return folder / "linclass"


def log_classifier(W: np.ndarray, b: np.ndarray, class_names: Sequence[str], loss: str, example: np.ndarray, *,
                   mean_image: np.ndarray | None = None, scale: float | None = None,
                   features: Mapping[str, object] | None = None, params: Mapping[str, object] | None = None):
    """Log the pyfunc model of W (C, D), b (C,) into the active run; return MLflow's ModelInfo.

    Its input's preprocessing: mean_image (D,) and scale of data/processed for a pixel model, or for a
    model on image features `features` = {"settings": the keywords of linclass.features.image_features,
    "mean", "std": (D,) of the features stage}. example: a few uint8 images (n, 32, 32, 3) saved as the
    input example.
    """
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights.npz"
        arrays: dict[str, np.ndarray] = {"W": W, "b": b, "class_names": np.array(class_names),
                                         "output": np.array(output_kind(loss))}
        if features is None:
            arrays.update(mean_image=np.asarray(mean_image, dtype=np.float32),
                          scale=np.asarray(scale, dtype=np.float32))
        else:
            arrays.update(features=np.array(json.dumps(features["settings"])),
                          feature_mean=np.asarray(features["mean"], dtype=np.float32),
                          feature_std=np.asarray(features["std"], dtype=np.float32))
        # not model_config: MLflow would log its keys as params of the run
        np.savez(weights, allow_pickle=False, **arrays)
        with quiet(*CHATTY):
            return mlflow.pyfunc.log_model(
                name=MODEL_NAME, python_model=str(CODE), artifacts={"weights": str(weights)},
                code_paths=None if features is None else [str(features_code(Path(tmp) / "code"))],
                signature=signature(class_names), input_example=example,
                pip_requirements=requirements(features is not None),
                params={k: str(v) for k, v in (params or {}).items()})


# What MLflow says on every log_model, six lines a model: "Detected uv project", "Copied uv.lock", "Validating
# input example", and that pip is not installed (uv's environments have none; the model's requirements are given).
CHATTY = ("mlflow.utils.uv_utils", "mlflow.pyfunc", "mlflow.utils.environment")


def register(client, registered_name: str, run_id: str, model_id: str, tags: Mapping[str, object]) -> str:
    """The registry version of the run's logged model `model_id` (created once; its tags updated);
    returns the version."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(registered_name, tags={"kind": "linear classifier"},
                                       description="Linear classifiers on CIFAR-10: one version per "
                                                   "training run; alias champion = best on validation")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    found = client.search_model_versions(f"name = '{registered_name}' and run_id = '{run_id}'")
    if found:
        version = str(found[0].version)
        for key, value in tags.items():   # evaluated again: its tags updated where they changed
            if found[0].tags.get(key) != str(value):
                again_on_duplicate(client.set_model_version_tag)(registered_name, version, key, str(value))
    else:   # created with its tags: one request (with a server MLflow says it waits for it, a line a model)
        with quiet("mlflow.store.model_registry.abstract_store"):
            version = str(client.create_model_version(registered_name, f"models:/{model_id}", run_id=run_id,
                                                      model_id=model_id,  # a server needs both
                                                      tags={k: str(v) for k, v in tags.items()}).version)
    link_logged_model(client, model_id, registered_name, version)
    return version


def link_logged_model(client, model_id: str, registered_name: str, version: str) -> None:
    """Add {name, version} to the logged model's `mlflow.modelVersions` tag (once), as `mlflow.register_model`
    does: `create_model_version` alone leaves the logged model "Not registered" in the UI."""
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    entry = {"name": registered_name, "version": version}
    linked = json.loads(client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
    if entry not in linked:
        client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([*linked, entry])})


def set_champion(client, registered_name: str, version: str, selection: Mapping[str, object] | None = None) -> None:
    """Point the alias `champion` at `version` and tag it with `selection` (SELECTION_TAGS: the runner-up and
    the paired tests); a former champion loses those tags, which described it against its own runner-up, and
    the champion loses those that `selection` no longer has. Only what changed is written (each tag is a
    request, and MLflow's client adds one more per tag: a sweep point that leaves the champion and its
    runner-up as they were writes nothing). Two evaluates at once (a parallel grid, Ray nodes) may write the same
    new tag: records.again_on_duplicate."""
    from mlflow.exceptions import MlflowException

    try:
        former = client.get_model_version_by_alias(registered_name, CHAMPION)
    except MlflowException:
        former = None
    if former is not None and str(former.version) == str(version):
        current = former.tags
    else:
        again_on_duplicate(client.set_registered_model_alias)(registered_name, CHAMPION, version)
        if former is not None:
            for key in SELECTION_TAGS:
                if key in former.tags:
                    client.delete_model_version_tag(registered_name, former.version, key)
        current = client.get_model_version(registered_name, version).tags
    selection = selection or {}
    for key in SELECTION_TAGS:   # what described an earlier runner-up and is not said now
        if key in current and key not in selection:
            client.delete_model_version_tag(registered_name, version, key)
    for key, value in selection.items():
        if current.get(key) != str(value):
            again_on_duplicate(client.set_model_version_tag)(registered_name, version, key, str(value))
