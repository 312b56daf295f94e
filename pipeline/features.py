"""DVC stage `features@<kind>`: the image features of every split, computed once, standardized on the training split.

Reads data/processed's uint8 rows (R, G, B planes of 32 x 32 images) and the settings `features` (bins,
orientations, cell sizes: linclass.features). Writes data/features/<kind>/: X_train.npy, X_val.npy, X_test.npy
(float32 (N, D), each column standardized with the mean and std of the training split's features), mean.npy and
std.npy (those statistics, (D,) float32) and layout.json (where each part sits in a row, for the pictures of what
a model learned). The stage train_features@<kind> trains on them. One cached output:
it appears only when every split is written.
"""
import json
import os
import time
from pathlib import Path

import numpy as np

from linclass.data.cifar import as_images
from linclass.features import SETTINGS, feature_layout, image_features, standardization, standardize
from linclass.plumbing import progress
from linclass.plumbing.paths import DATA, FEATURES, load_npy
from linclass.plumbing.stage import atomic_dir, run, stage_params
from linclass.settings import ConfigError, Features

SPLITS = ("train", "val", "test")
IMAGE_SIDE = 32


def feature_kind(kinds: list[str]) -> str:
    """The kind of this stage: DVC_STAGE=features@<kind>, one of grid.features."""
    stage = os.environ.get("DVC_STAGE", "")
    kind = stage.removeprefix("features@")
    if not stage.startswith("features@") or kind not in kinds:
        allowed = ", ".join(f"features@{k}" for k in kinds) or "none (grid.features is empty)"
        raise ConfigError(f"DVC_STAGE={stage!r} is not a features stage of the grid; allowed: {allowed}")
    return kind


def features_of(rows: np.ndarray, settings: Features) -> np.ndarray:
    """(N, D) float32 features of CIFAR rows, as the settings say."""
    return image_features(as_images(rows), **settings.model_dump(include=set(SETTINGS)),
                          chunk_images=settings.chunk_images)


def standardize_in_place(X: np.ndarray, mean: np.ndarray, std: np.ndarray, rows: int = 4096) -> np.ndarray:
    """X = (X - mean) / std, rows at a time (no second copy of X)."""
    for lo in range(0, len(X), rows):
        X[lo:lo + rows] = standardize(X[lo:lo + rows], mean, std)
    return X


def layout_of(settings: Features) -> dict[str, list[int]]:
    """{part: [start, stop]} of a features row (linclass.features.feature_layout), as JSON."""
    layout = feature_layout(settings.hue_bins, settings.value_bins, settings.orientations, settings.cells,
                            IMAGE_SIDE, IMAGE_SIDE)
    return {name: [part.start, part.stop] for name, part in layout.items()}


def main() -> None:
    params = stage_params()
    kind, settings = feature_kind(list(params.grid.features)), params.features
    with atomic_dir(FEATURES / kind) as out:
        features = {}
        for split in SPLITS:
            start = time.perf_counter()
            features[split] = features_of(load_npy(DATA / f"X_{split}.npy", mmap=True), settings)
            progress.say(f"features@{kind}: {split} {features[split].shape} in {time.perf_counter() - start:.1f} s")
        mean, std = standardization(features["train"])
        for split in SPLITS:
            np.save(out / f"X_{split}.npy", standardize_in_place(features[split], mean, std))
        np.save(out / "mean.npy", mean)
        np.save(out / "std.npy", std)
        layout = {"kind": kind, "dim": int(len(mean)), "orientations": settings.orientations,
                  "signed": settings.signed, "parts": layout_of(settings)}
        (Path(out) / "layout.json").write_text(json.dumps(layout, indent=2) + "\n")
    print(f"features@{kind}: {len(mean)} features per image, {', '.join(f'{s} {len(features[s])}' for s in SPLITS)}")


if __name__ == "__main__":
    run(main)
