"""Where the pipeline's files are and how to read them back (one place for the layout)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from linclass.core.pixels import Pixels
from linclass.settings import Settings

DATA = Path("data/processed")
MODELS = Path("models")
REPORTS = Path("reports")
METRICS = Path("metrics")
FEATURES = Path("data/features")  # features@<kind>: <kind>/X_<split>.npy (standardized), mean.npy, std.npy, layout
SWEEPS = Path("sweeps")  # the sweeps' tables, <loss>-<regularizer>.csv: committed, read by the hyperparameter map


def model_names(params: Settings) -> list[str]:
    """'<loss>-<regularizer>' for every pair of the grid, in grid order."""
    return [f"{loss}-{reg}" for loss in params.grid.losses for reg in params.grid.regularizers]


def feature_model_names(params: Settings) -> list[str]:
    """'<loss>-<regularizer>-<kind>' for every pair of the grid and kind of features, in grid order."""
    return [f"{loss}-{reg}-{kind}" for loss in params.grid.losses for reg in params.grid.regularizers
            for kind in params.grid.features]


def all_model_names(params: Settings) -> list[str]:
    """The pixel models, then the feature models."""
    return model_names(params) + feature_model_names(params)


def model_parts(name: str) -> tuple[str, str, str]:
    """(loss, regularizer, input) of a model name; input is 'pixels' or the kind of features."""
    loss, reg, *kind = name.split("-", 2)
    return loss, reg, kind[0] if kind else "pixels"


def damaged(path: Path, exc: Exception) -> ValueError:
    return ValueError(f"cannot read {path} ({' '.join(str(exc).split())}): it is missing, truncated or damaged; "
                      "`dvc status` names what changed, `dvc repro` (or `dvc checkout`) rebuilds it")


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    """np.load, but a missing, truncated or damaged file is one ValueError naming it."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None)
    except (ValueError, EOFError, OSError) as exc:
        raise damaged(path, exc) from None


def load_scale(data: Path = DATA) -> float:
    """The preprocessing's scale (scale.json): X = (pixels - mean_image) / scale."""
    path = data / "scale.json"
    try:
        return json.loads(path.read_text())["scale"]
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise damaged(path, exc) from None


def model_dir(name: str, models: Path = MODELS) -> Path:
    """Where a model's weights and history are: models/<loss>-<regularizer> for a pixel model (its stage
    train@<loss>-<regularizer>), models/<kind>/<loss>-<regularizer> for a features model (the stage
    train_features@<kind> writes the folder models/<kind>)."""
    loss, reg, kind = model_parts(name)
    return models / name if kind == "pixels" else models / kind / f"{loss}-{reg}"


def load_model(name: str, models: Path = MODELS) -> tuple[np.ndarray, np.ndarray]:
    """(W (C, D), b (C,)) of a trained model."""
    folder = model_dir(name, models)
    return load_npy(folder / "W.npy"), load_npy(folder / "b.npy")


def load_split(split: str, data: Path = DATA, mmap: bool = False) -> tuple[Pixels, np.ndarray]:
    """(X (N, D), y (N,) int64) of 'train', 'val' or 'test'; X = (pixels - mean_image) / scale is Pixels: the
    uint8 rows of X_<split>.npy (mapped if mmap) with mean_image.npy and scale.json."""
    pixels, y = load_npy(data / f"X_{split}.npy", mmap), load_npy(data / f"y_{split}.npy")
    return Pixels(pixels, load_npy(data / "mean_image.npy"), load_scale(data)), y


def load_features(kind: str, split: str, mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(X (N, D) float32 standardized features, y (N,) int64) of 'train', 'val' or 'test' (stage features@<kind>)."""
    return load_npy(FEATURES / kind / f"X_{split}.npy", mmap), load_npy(DATA / f"y_{split}.npy")


def load_input(kind: str, split: str, mmap: bool = False) -> tuple[Pixels | np.ndarray, np.ndarray]:
    """A model's input: load_split for 'pixels', else load_features of that kind."""
    return load_split(split, mmap=mmap) if kind == "pixels" else load_features(kind, split, mmap)


def class_names(data: Path = DATA) -> list[str]:
    return json.loads((data / "classes.json").read_text())


def train_metrics_file(name: str, metrics: Path = METRICS) -> Path:
    """metrics/train/<loss>-<regularizer>.json for a pixel model; metrics/train/<kind>.json, one entry per
    model name, for the features models of that kind."""
    kind = model_parts(name)[2]
    return metrics / "train" / f"{name if kind == 'pixels' else kind}.json"


def train_summary(name: str, metrics: Path = METRICS) -> dict:
    """What a model's train stage measured (its metrics/train file, or its entry there)."""
    summary = json.loads(train_metrics_file(name, metrics).read_text())
    return summary if model_parts(name)[2] == "pixels" else summary[name]


def lock_stages(lock: Path = Path("dvc.lock")) -> dict:
    """The stages dvc.lock records (those that ran in this workspace), {} without one."""
    import yaml

    if not lock.exists():
        return {}
    # libyaml's loader when PyYAML has it: dvc.lock grows with the grid (the pure-Python one took 1.3 s of
    # every train stage with 25 stages)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return (yaml.load(lock.read_text(), Loader=loader) or {}).get("stages", {})


def dvc_lock_hashes(lock: Path = Path("dvc.lock")) -> dict[str, str]:
    """md5 of the download and preprocess outputs as dvc.lock records them (the inputs of training)."""
    stages = lock_stages(lock)
    return {f"dvc.{name}.{out['path']}": out.get("md5", "") for name in ("download", "preprocess")
            for out in stages.get(name, {}).get("outs", [])}
