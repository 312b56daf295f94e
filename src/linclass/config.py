"""Configuration: compose `conf/` with Hydra, read `params.yaml`, and validate it.

Data flows one way: conf/ -> params.yaml -> stage -> library. `compose` is what DVC does on
`dvc exp run`; `validate` runs at the start of every stage so that bad settings fail in one line,
before any work is done.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Iterable

import yaml

KNOWN_LOSSES = ("svm", "squared_svm", "softmax")          # linclass.losses.LOSSES
KNOWN_REGULARIZERS = ("none", "l1", "l2", "elasticnet")  # linclass.regularizers.REGULARIZERS
URL_SCHEMES = ("http://", "https://", "file://")
TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")  # MLflow's stores


class ConfigError(ValueError):
    """A bad setting: the message is one line naming the key, the value and what is allowed."""


def compose(conf_dir: str | Path, overrides: Iterable[str] = (), config_name: str = "config") -> dict:
    """The Hydra composition of `conf_dir` with `overrides` as a plain dict (what DVC writes to params.yaml)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def load_params(path: str | Path = "params.yaml") -> dict:
    with open(path) as f:
        try:
            params = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            line = f" at line {where.line + 1}" if where is not None else ""
            raise ConfigError(f"{path} is not valid YAML{line}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(params).__name__}")
    return params


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def unknown_keys(params: dict, reference: dict, prefix: str = "") -> list[str]:
    """Keys of `params` that `reference` (the composed defaults) does not have."""
    unknown = []
    for key, value in params.items():
        name = f"{prefix}{key}"
        if key not in reference:
            unknown.append(name)
        elif isinstance(value, dict) and isinstance(reference[key], dict):  # {} too: softmax has no settings
            unknown.extend(unknown_keys(value, reference[key], name + "."))
    return unknown


def _get(params: dict, dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"missing setting {dotted}")
        node = node[part]
    return node


def _number(params: dict, key: str, *, low: float, high: float = math.inf, low_open=False,
            high_open=False, integer=False) -> float:
    value = _get(params, key)
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ConfigError(f"{key}={value!r} is not {kind}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high or not math.isfinite(value):
        lo = f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high == math.inf else f" and {'<' if high_open else '<='} {high:g}"
        raise ConfigError(f"{key}={value!r} is out of range: allowed {kind} {lo}{hi}")
    return value


def validate_grid(params: dict) -> None:
    for key, known in (("grid.losses", KNOWN_LOSSES), ("grid.regularizers", KNOWN_REGULARIZERS)):
        names = _get(params, key)
        if not isinstance(names, list) or not names:
            raise ConfigError(f"{key}={names!r}: expected a non-empty list drawn from {list(known)}")
        for name in names:
            if name not in known:
                raise ConfigError(f"{key} has unknown name {name!r}; known: {', '.join(known)}")
    for name in _get(params, "grid.losses"):
        _get(params, f"loss.{name}")
    for name in _get(params, "grid.regularizers"):
        _get(params, f"regularizer.{name}")


def validate_data(params: dict) -> None:
    url = _get(params, "data.url")
    if not isinstance(url, str) or not url.startswith(URL_SCHEMES):
        raise ConfigError(f"data.url={url!r} is not supported; allowed: {', '.join(URL_SCHEMES)} URLs")
    md5 = _get(params, "data.md5")
    if not isinstance(md5, str) or not re.fullmatch(r"[0-9a-f]{32}", md5):
        raise ConfigError(f"data.md5={md5!r} is not an md5 sum (32 lowercase hex digits)")
    _number(params, "data.retries", low=1, integer=True)
    _number(params, "data.timeout", low=0, low_open=True)


def validate_preprocess(params: dict) -> None:
    _number(params, "preprocess.val_size", low=1, high=49_999, integer=True)
    _number(params, "preprocess.seed", low=0, integer=True)
    _number(params, "preprocess.scale", low=0, low_open=True)
    if _get(params, "preprocess.max_train") is not None:
        _number(params, "preprocess.max_train", low=1, integer=True)


def validate_train(params: dict) -> None:
    _number(params, "train.epochs", low=1, integer=True)
    _number(params, "train.batch_size", low=1, integer=True)
    _number(params, "train.learning_rate", low=0, low_open=True)
    _number(params, "train.lr_decay", low=0, high=1, low_open=True)
    _number(params, "train.init_scale", low=0)
    _number(params, "train.seed", low=0, integer=True)
    _number(params, "train.blas_threads", low=1, integer=True)


def validate_model(params: dict, loss: str, regularizer: str) -> None:
    if loss not in KNOWN_LOSSES:
        raise ConfigError(f"unknown loss {loss!r}; known: {', '.join(KNOWN_LOSSES)}")
    if regularizer not in KNOWN_REGULARIZERS:
        raise ConfigError(f"unknown regularizer {regularizer!r}; known: {', '.join(KNOWN_REGULARIZERS)}")
    if loss in ("svm", "squared_svm"):
        _number(params, f"loss.{loss}.delta", low=0, low_open=True)
    _number(params, f"regularizer.{regularizer}.strength", low=0)
    if regularizer == "elasticnet":
        _number(params, "regularizer.elasticnet.beta", low=0)


def validate_tracking(params: dict) -> None:
    uri = _get(params, "tracking.uri")
    scheme = re.match(r"([a-z][a-z0-9.-]*)(\+[a-z0-9]+)?:", uri) if isinstance(uri, str) else None
    if uri is not None and (scheme is None or scheme.group(1) not in TRACKING_SCHEMES):
        raise ConfigError(f"tracking.uri={uri!r} is not supported; allowed: null (the project's sqlite store) "
                          f"or a URI with scheme {', '.join(TRACKING_SCHEMES)}")
    experiment = _get(params, "tracking.experiment")
    if not isinstance(experiment, str) or not experiment.strip():
        raise ConfigError(f"tracking.experiment={experiment!r} is not a name (a non-empty string)")


def validate_studies(params: dict) -> None:
    scales = _get(params, "studies.scales")
    if not isinstance(scales, list) or not scales or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in scales):
        raise ConfigError(f"studies.scales={scales!r}: expected a non-empty list of numbers > 0")
    _number(params, "studies.zero_hinge_subset", low=2, integer=True)
    _number(params, "studies.near_zero_tol", low=0, high=1, low_open=True)
    _number(params, "studies.initial_loss_tolerance", low=0, low_open=True)
    _number(params, "studies.hard_cases.n", low=10, integer=True)
    _number(params, "studies.hard_cases.epochs", low=1, integer=True)
    _number(params, "studies.hard_cases.learning_rate", low=0, low_open=True)


def validate(params: dict, reference: dict | None = None) -> dict:
    """Check every setting; `reference` (the composed conf/ defaults) catches unknown keys.

    Returns `params` unchanged; raises ConfigError with a one-line message.
    """
    if reference is not None:
        unknown = unknown_keys(params, reference)
        if unknown:
            parent = unknown[0].rpartition(".")[0]
            try:
                known = _get(reference, parent) if parent else reference
            except ConfigError:  # a key with a dot in its own name
                parent, known = "", reference
            where = f"keys of {parent}" if parent else "top-level keys"
            raise ConfigError(f"unknown setting {unknown[0]!r}; it is not in conf/ "
                              f"(known {where}: {', '.join(map(str, known)) or 'none'})")
    validate_grid(params)
    validate_data(params)
    validate_preprocess(params)
    validate_train(params)
    validate_tracking(params)
    for loss in _get(params, "grid.losses"):
        for reg in _get(params, "grid.regularizers"):
            validate_model(params, loss, reg)
    validate_studies(params)
    return params


def write_params(conf_dir: str | Path = "conf", path: str | Path = "params.yaml",
                 overrides: Iterable[str] = ()) -> dict:
    """Compose conf/ (with overrides) and write it to params.yaml atomically, as DVC does."""
    params = compose(conf_dir, overrides)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    header = "# Generated from conf/ by `make params` (python -m linclass.config). Edit conf/, not this file.\n"
    tmp.write_text(header + yaml.safe_dump(params, sort_keys=False))
    tmp.replace(path)
    return params


if __name__ == "__main__":
    import sys

    write_params(overrides=sys.argv[1:])
    print("params.yaml written from conf/" + (f" with {' '.join(sys.argv[1:])}" if sys.argv[1:] else ""))
