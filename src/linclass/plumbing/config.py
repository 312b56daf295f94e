"""Configuration: compose `conf/` with Hydra, read `params.yaml`, and validate it.

Data flows one way: conf/ -> params.yaml -> stage -> library. `compose` is what DVC does on
`dvc exp run`; `validate` runs at the start of every stage so that bad settings fail in one line,
before any work is done.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

import yaml

from linclass import constraints
from linclass.constraints import Interval, check_value
from linclass.files import atomic_file
from linclass.plumbing.redact import has_credentials, redact_url

KNOWN_LOSSES = constraints.LOSS_NAMES
KNOWN_REGULARIZERS = constraints.REGULARIZER_NAMES
URL_SCHEMES = ("http://", "https://", "file://")
TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")  # MLflow's stores


class ConfigError(ValueError):
    """A bad setting: the message is one line naming the key, the value and what is allowed."""


def compose(conf_dir: str | Path, overrides: Iterable[str] = (), config_name: str = "config") -> dict:
    """The Hydra composition of `conf_dir` with `overrides` as a plain dict (what DVC writes to params.yaml)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationResolutionError

    with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError:
        # check_composition rejected a setting: raise its one-line ConfigError, not OmegaConf's wrapper
        check_composition(_root_=cfg)
        raise


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


def _check(params: dict, key: str, constraint) -> Any:
    value = _get(params, key)
    try:
        check_value(key, value, constraint)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return value


# Settings that the library takes as arguments: the library's own declarations.
LIBRARY_SETTINGS = {
    "data.retries": constraints.DOWNLOAD["retries"],
    "data.timeout": constraints.DOWNLOAD["timeout"],
    **{f"preprocess.{name}": constraints.PREPROCESS[name] for name in ("val_size", "seed", "scale")},
    **{f"train.{name}": constraints.SGD[name]
       for name in ("epochs", "batch_size", "lr_decay", "init_scale", "seed", "l1_step")},
}
POSITIVE = Interval(float, 0, None, closed="neither")
# The settings of each loss (loss.<name>.*): the SVM margin, and the learning rate its own sweep chose.
LOSS_SETTINGS = {**constraints.LOSS, "learning_rate": constraints.SGD["learning_rate"]}
# Settings that only the stages read.
STAGE_SETTINGS = {
    "train.blas_threads": Interval(int, 1, 256),
    "studies.zero_hinge_subset": Interval(int, 2, None),
    "studies.near_zero_tol": Interval(float, 0, 1, closed="right"),
    "studies.initial_loss_tolerance": Interval(float, 0, None, closed="neither"),
    "studies.hard_cases.n": Interval(int, 10, None),
    "studies.hard_cases.epochs": Interval(int, 1, None),
    "studies.hard_cases.learning_rate": Interval(float, 0, None, closed="neither"),
    "studies.regularization_path.train_subset": Interval(int, 1, None),
    "studies.regularization_path.epochs": Interval(int, 1, None),
}


def validate_grid(params: dict) -> None:
    for key, known in (("grid.losses", KNOWN_LOSSES), ("grid.regularizers", KNOWN_REGULARIZERS)):
        names = _get(params, key)
        if not isinstance(names, list) or not names:
            raise ConfigError(f"{key}={names!r}: expected a non-empty list drawn from {list(known)}")
        for name in names:
            if name not in known:
                raise ConfigError(f"{key} has unknown name {name!r}; known: {', '.join(known)}")
        if len(set(names)) != len(names):
            raise ConfigError(f"{key}={names!r} lists a name twice: expected distinct names from {list(known)}")
    for name in _get(params, "grid.losses"):
        _get(params, f"loss.{name}")
    for name in _get(params, "grid.regularizers"):
        _get(params, f"regularizer.{name}")


def validate_data(params: dict) -> None:
    url = _get(params, "data.url")
    if not isinstance(url, str) or not url.startswith(URL_SCHEMES):
        raise ConfigError(f"data.url={url!r} is not supported; allowed: {', '.join(URL_SCHEMES)} URLs")
    if has_credentials(url):   # it would be stored in params.yaml, dvc.lock and MLflow
        bare = redact_url(url)
        raise ConfigError(f"data.url={bare!r} carries credentials (user:password@), which would be stored in "
                          "params.yaml and dvc.lock; remove them from the URL and set LINCLASS_DATA_USER and "
                          "LINCLASS_DATA_PASSWORD instead")
    md5 = _get(params, "data.md5")
    if not isinstance(md5, str) or not re.fullmatch(r"[0-9a-f]{32}", md5):
        raise ConfigError(f"data.md5={md5!r} is not an md5 sum (32 lowercase hex digits)")


def validate_preprocess(params: dict) -> None:
    if _get(params, "preprocess.max_train") is not None:
        _check(params, "preprocess.max_train", constraints.PREPROCESS["max_train"])


def validate_model(params: dict, loss: str, regularizer: str) -> None:
    if loss not in KNOWN_LOSSES:
        raise ConfigError(f"unknown loss {loss!r}; known: {', '.join(KNOWN_LOSSES)}")
    if regularizer not in KNOWN_REGULARIZERS:
        raise ConfigError(f"unknown regularizer {regularizer!r}; known: {', '.join(KNOWN_REGULARIZERS)}")
    _check(params, f"loss.{loss}.learning_rate", LOSS_SETTINGS["learning_rate"])  # required: no shared default
    for name in _get(params, f"loss.{loss}"):
        _check(params, f"loss.{loss}.{name}", LOSS_SETTINGS[name])
    for name in _get(params, f"regularizer.{regularizer}"):
        _check(params, f"regularizer.{regularizer}.{name}", constraints.REGULARIZER[name])


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
    path = "studies.regularization_path"
    for key, known in (("losses", KNOWN_LOSSES), ("regularizers", KNOWN_REGULARIZERS)):
        names = _get(params, f"{path}.{key}")
        if not isinstance(names, list) or not names or not all(name in known for name in names):
            raise ConfigError(f"{path}.{key}={names!r}: expected a non-empty list drawn from {list(known)}")
    for loss in _get(params, f"{path}.losses"):
        validate_model(params, loss, "none")  # its learning rate and margin
    strengths = _get(params, f"{path}.strengths")
    if not isinstance(strengths, list) or not strengths or not all(
            POSITIVE.allows(s) for s in strengths) or strengths != sorted(set(strengths)):
        raise ConfigError(f"{path}.strengths={strengths!r}: expected an increasing list of numbers > 0 "
                          f"(a log grid, e.g. [1.0e-5, 1.0e-3, 1.0e-1])")


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
    for key, constraint in {**LIBRARY_SETTINGS, **STAGE_SETTINGS}.items():
        _check(params, key, constraint)
    validate_preprocess(params)
    validate_tracking(params)
    for loss in _get(params, "grid.losses"):
        for reg in _get(params, "grid.regularizers"):
            validate_model(params, loss, reg)
    validate_studies(params)
    return params


def check_composition(*, _root_) -> bool:
    """OmegaConf resolver `linclass_check` (conf/config.yaml: `checked: ${linclass_check:}`): validate the
    whole composition while it is being resolved, so that a bad override fails the composition itself.

    DVC composes conf/ on `dvc exp run -S ...` inside a git stash and restores the workspace when the
    composition raises: params.yaml and every output stay as they were (with a check in the stages
    only, DVC would already have written params.yaml and deleted the outputs of the stages it reruns).
    DVC registers this resolver by importing hydra_plugins/linclass_check (Hydra's plugin scan).
    """
    from omegaconf import OmegaConf

    params = OmegaConf.to_container(_root_, resolve=False)
    params.pop("checked", None)
    validate(params)
    return True


def register_resolver() -> None:
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("linclass_check", check_composition, replace=True)


register_resolver()


def write_params(conf_dir: str | Path = "conf", path: str | Path = "params.yaml",
                 overrides: Iterable[str] = ()) -> dict:
    """Compose conf/ (with overrides) and write it to params.yaml atomically, as DVC does."""
    params = compose(conf_dir, overrides)
    validate_data(params)   # before a password in data.url reaches the file
    header = "# Generated from conf/ by `make params` (python -m linclass.plumbing.config). Edit conf/, not this file.\n"
    with atomic_file(path) as tmp:
        tmp.write_text(header + yaml.safe_dump(params, sort_keys=False))
    return params


if __name__ == "__main__":
    import sys

    try:
        write_params(overrides=sys.argv[1:])
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    print("params.yaml written from conf/" + (f" with {' '.join(sys.argv[1:])}" if sys.argv[1:] else ""))
