"""Every setting of linclass, declared once: its type, its range or choices, its default and what it means.

`Settings` is the schema of params.yaml (= conf/ composed by Hydra). Every stage checks params.yaml
against it before it does any work, the Hydra resolver checks each composition (a bad `dvc exp run -S`
fails before DVC writes params.yaml), `linclass config` checks overrides with it, and the library checks
its own arguments against the same fields (`check(Train, epochs=epochs)`) and takes its defaults from
them. conf/ states the same defaults for people to read (tests/test_settings.py keeps them equal).

A bad value is one line naming the setting, the value and what is allowed; an unknown key says which
known one it probably meant.
"""
from __future__ import annotations

import difflib
import functools
import os
import re
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from linclass.redact import has_credentials, redact_url

LossName = Literal["svm", "squared_svm", "softmax"]                # linclass.core.losses
RegularizerName = Literal["none", "l1", "l2", "elasticnet"]        # linclass.core.regularizers
LOSS_NAMES: tuple[str, ...] = get_args(LossName)
REGULARIZER_NAMES: tuple[str, ...] = get_args(RegularizerName)
URL_SCHEMES = ("http", "https", "file")                 # where the archive may come from
TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")  # MLflow's stores
OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
MAX_BACKOFF = 30.0  # seconds: the wait between download attempts doubles up to this


class ConfigError(ValueError):
    """A bad setting: the message is one line naming the key, the value and what is allowed."""


class Section(BaseModel):
    """A group of settings: exact types (no "5" for 5), finite numbers, no unknown keys, read-only."""
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


# ---- values with a shape of their own ----

def _url(url: str) -> str:
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in URL_SCHEMES:
        raise ValueError(f"is not supported; allowed: {', '.join(s + '://' for s in URL_SCHEMES)} URLs")
    if has_credentials(url):  # it would be stored in params.yaml, dvc.lock and MLflow
        raise ValueError("carries credentials (user:password@), which would be stored in params.yaml and "
                         "dvc.lock; remove them and set LINCLASS_DATA_USER and LINCLASS_DATA_PASSWORD instead")
    return url


def _tracking_uri(uri: str) -> str:
    scheme = re.match(r"([a-z][a-z0-9.-]*)(\+[a-z0-9]+)?:", uri)
    if scheme is None or scheme.group(1) not in TRACKING_SCHEMES:
        raise ValueError(f"is not supported; allowed: null (the project's sqlite store) or a URI with scheme "
                         f"{', '.join(TRACKING_SCHEMES)}")
    if urlsplit(uri).password is not None:  # it would be stored in params.yaml, dvc.lock and git
        raise ValueError("carries a password (user:password@), which would be stored in params.yaml and dvc.lock; "
                         "remove it and set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (a server) or "
                         "PGPASSWORD (a database) instead")
    return uri


def _increasing(values: list[float]) -> list[float]:
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError("is out of range: allowed strictly increasing numbers > 0 (a log grid, e.g. "
                         "[1.0e-5, 1.0e-3, 1.0e-1])")
    return values


def _distinct(values: list) -> list:
    if len(set(values)) != len(values):
        raise ValueError("lists a name twice: allowed distinct names")
    return values


Url = Annotated[str, AfterValidator(_url)]
MD5_PATTERN = r"^[0-9a-f]{32}$"
Md5 = Annotated[str, BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v), Field(pattern=MD5_PATTERN)]
TrackingUri = Annotated[str, AfterValidator(_tracking_uri)]
Positive = Annotated[float, Field(gt=0)]
Name = Annotated[str, Field(min_length=1, pattern=r"\S")]
PATTERN_WORDS = {MD5_PATTERN: "32 hex digits (an md5 sum)", r"\S": "a name (not blank)"}


# ---- the sections of params.yaml ----

class Data(Section):
    """Where the CIFAR-10 archive (official "python version" layout) comes from: its identity."""
    name: Name = Field("cifar10", description="the data set's name in MLflow (each run's dataset input)")
    url: Url = Field(OFFICIAL_URL, description="http(s):// or file://; a machine's own copy: LINCLASS_DATA_URL")
    md5: Md5 = Field(OFFICIAL_MD5, description="of the archive, checked after every download; LINCLASS_DATA_MD5")
    retries: int = Field(3, ge=1, le=20, description="download attempts in all")
    timeout: float = Field(60.0, gt=0, le=3600, description="seconds per network operation")
    backoff: float = Field(0.5, ge=0, le=MAX_BACKOFF, description="seconds before the second attempt, doubling")


class Preprocess(Section):
    val_size: int = Field(5000, ge=1, le=49_999, description="images split off the training images for validation")
    seed: int = Field(0, ge=0, description="seed of that split")
    scale: float = Field(255.0, ge=1e-3, le=1e6, description="X = (pixels - mean training image) / scale")
    max_train: int | None = Field(None, ge=1, description="keep only this many training images (null: all)")


class SvmLoss(Section):
    delta: float = Field(1.0, gt=0, description="the margin")
    learning_rate: Positive = Field(5e-3, description="chosen on the validation split")


class SoftmaxLoss(Section):
    learning_rate: Positive = Field(5e-2, description="chosen on the validation split")


class Losses(Section):
    """Each loss's own settings; the grid picks which are trained."""
    svm: SvmLoss = SvmLoss()
    squared_svm: SvmLoss = SvmLoss()
    softmax: SoftmaxLoss = SoftmaxLoss()


class Penalty(Section):
    strength: float = Field(0.0, ge=0, description="lambda: total loss = data loss + lambda R(W)")


class NoPenalty(Section):
    strength: float = Field(0.0, ge=0, le=0, description="no penalty")


class ElasticNet(Penalty):
    beta: float = Field(0.5, ge=0, description="R(W) = sum(beta W^2 + |W|)")


class Regularizers(Section):
    none: NoPenalty = NoPenalty()
    l1: Penalty = Penalty(strength=1e-4)
    l2: Penalty = Penalty(strength=1e-3)
    elasticnet: ElasticNet = ElasticNet(strength=1e-4)


class Train(Section):
    """Minibatch SGD, shared by every train@<loss>-<regularizer> stage (the learning rate is per loss)."""
    epochs: int = Field(40, ge=1, description="passes over the training split")
    batch_size: int = Field(200, ge=1, description="images per SGD step")
    lr_decay: float = Field(0.95, gt=0, le=1, description="multiplied into the learning rate after every epoch")
    init_scale: float = Field(1e-3, ge=0, description="W starts as init_scale * N(0, 1), b as 0")
    l1_step: Literal["subgradient", "proximal"] = Field(
        "proximal", description="|W| of L1 / elastic net as a soft threshold (exact zeros) or sign(W)")
    seed: int = Field(0, ge=0, description="of W's start and of the minibatches' order")
    blas_threads: int = Field(1, ge=1, le=256, description="1 keeps results identical however many run at once")


class Tracking(Section):
    uri: TrackingUri | None = Field(None, description="null: sqlite at the project root; MLFLOW_TRACKING_URI wins")
    experiment: Name = Field("linclass-cifar10", description="the MLflow experiment of the training runs "
                                                              "(the studies' runs: <experiment>-studies); "
                                                              "MLFLOW_EXPERIMENT_NAME wins")

    def experiment_name(self) -> str:
        """`experiment`, unless MLflow's MLFLOW_EXPERIMENT_NAME names another: a teammate's own experiment, set in
        their shell and so never in the params.yaml they commit (as MLFLOW_TRACKING_URI wins over `uri`)."""
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "")
        if name and not name.strip():
            raise ConfigError(f"MLFLOW_EXPERIMENT_NAME={name!r} is blank: name an experiment, or unset it")
        return name or self.experiment


class HardCases(Section):
    n: int = Field(1000, ge=10, description="2-D points of each hard case (quadrants, ring, ...)")
    seed: int = Field(0, ge=0, description="of the points and of their SGD")
    epochs: int = Field(30, ge=1, description="SGD passes over the points")
    learning_rate: Positive = Field(0.05, description="of that SGD")


class RegularizationPath(Section):
    losses: Annotated[list[LossName], AfterValidator(_distinct)] = Field(
        ["svm", "softmax"], min_length=1, description="the losses of the path")
    regularizers: Annotated[list[RegularizerName], AfterValidator(_distinct)] = Field(
        ["l1", "l2", "elasticnet"], min_length=1, description="each trained at every strength")
    strengths: Annotated[list[Positive], AfterValidator(_increasing)] = Field(
        [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0], min_length=1, description="the path's points, increasing")
    train_subset: int = Field(5000, ge=1, description="the first rows of the (shuffled) training split")
    epochs: int = Field(5, ge=1, description="of each point's SGD")
    template_class: Name = Field("horse", description="the class whose template is drawn at every point")


class Studies(Section):
    scales: list[Positive] = Field([0.25, 0.5, 1.0, 2.0, 4.0], min_length=1, description="W -> s W, b -> s b")
    zero_hinge_subset: int = Field(50, ge=2, description="images of the model trained to zero hinge loss")
    near_zero_tol: float = Field(0.01, gt=0, le=1, description="|w| <= tol * max|W| counts as a zero weight")
    initial_loss_tolerance: Positive = Field(0.10, description="warn when the loss at small W is off C-1 / log C")
    hard_cases: HardCases = HardCases()
    regularization_path: RegularizationPath = RegularizationPath()


FeatureKind = Literal["hog_hist"]  # the feature models' inputs (linclass.features)
FEATURE_KINDS: tuple[str, ...] = get_args(FeatureKind)
Cell = Annotated[int, Field(ge=1, le=16)]  # at most half the side of a 32 x 32 image: HOG needs 2 x 2 cells


class FeatureRates(Section):
    """Each loss's learning rate on the features (standardized columns want other rates than pixels)."""
    svm: Positive = Field(3e-2, description="chosen on the validation split (docs/features.md)")
    squared_svm: Positive = Field(3e-2, description="not swept: the SVM's rate")
    softmax: Positive = Field(3e-1, description="chosen on the validation split (docs/features.md)")


class FeatureStrengths(Section):
    """lambda of each regularizer on the features (elastic net's beta is regularizer.elasticnet.beta)."""
    none: float = Field(0.0, ge=0, le=0, description="no penalty")
    l1: float = Field(1e-4, ge=0, description="not swept: the pixels' strength")
    l2: float = Field(1e-3, ge=0, description="chosen on the validation split (docs/features.md)")
    elasticnet: float = Field(1e-4, ge=0, description="not swept: the pixels' strength")


class Features(Section):
    """The input of the hog_hist models (stage train_features@hog_hist), computed once by the stage
    features@hog_hist: [hue histogram | value histogram | HOG at each cell size] (linclass.features), each
    column standardized with the training split's statistics."""
    hue_bins: int = Field(10, ge=0, le=360, description="chroma-weighted hue histogram bins (0: none)")
    value_bins: int = Field(8, ge=0, le=256, description="histogram bins of max(R, G, B) (0: none)")
    orientations: int = Field(18, ge=1, le=360, description="HOG orientation bins")
    signed: bool = Field(True, description="HOG angles over 360 degrees (true) or 180 (false)")
    cells: Annotated[list[Cell], AfterValidator(_distinct)] = Field(
        [8, 16], description="HOG cell sizes in pixels, one HOG per size ([]: no HOG)")
    chunk_images: int = Field(1024, ge=1, description="images computed at a time (memory, never values)")
    learning_rate: FeatureRates = FeatureRates()
    strength: FeatureStrengths = FeatureStrengths()

    @field_validator("cells")
    @classmethod
    def _some_part(cls, cells: list[int], info: ValidationInfo) -> list[int]:
        if not cells and info.data.get("hue_bins") == 0 and info.data.get("value_bins") == 0:
            raise ValueError("is empty with hue_bins=0 and value_bins=0: allowed at least one part of the features")
        return cells


class Grid(Section):
    """The combinations that `dvc repro` trains: one train@<loss>-<regularizer> stage per pair on the pixels,
    and one train_features@<kind> stage per kind of features that trains every pair on them."""
    losses: Annotated[list[LossName], AfterValidator(_distinct)] = Field(
        ["svm", "softmax"], min_length=1, description="each trained with every regularizer")
    regularizers: Annotated[list[RegularizerName], AfterValidator(_distinct)] = Field(
        ["none", "l1", "l2", "elasticnet"], min_length=1, description="each trained with every loss")
    features: Annotated[list[FeatureKind], AfterValidator(_distinct)] = Field(
        ["hog_hist"], description="each loss x regularizer also trained on these features ([]: pixels only)")


class Settings(Section):
    data: Data = Data()
    preprocess: Preprocess = Preprocess()
    loss: Losses = Losses()
    regularizer: Regularizers = Regularizers()
    train: Train = Train()
    tracking: Tracking = Tracking()
    studies: Studies = Studies()
    grid: Grid = Grid()
    features: Features = Features()
    checked: bool = Field(True, description="set by the composition check (conf/config.yaml)")

    @field_validator("checked")
    @classmethod
    def _true(cls, value: bool) -> bool:
        if value is not True:
            raise ValueError("is set by the composition check and must be true")
        return value


# ---- checking ----

def _dotted(loc: tuple, prefix: str = "") -> str:
    """('grid', 'losses', 0) -> 'grid.losses[0]' (after `prefix`)."""
    return "".join([prefix, *(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)]).lstrip(".")


PREFIX = "Input should be "   # the start of pydantic's own message, dropped where the range is shown
RANGE_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "literal_error",
                "finite_number", "too_short", "string_too_short")
TYPE_ERRORS = ("int_type", "int_from_float", "float_type", "string_type", "bool_type", "list_type", "int_parsing",
               "float_parsing", "none_required")


def _walk(model: type[BaseModel] | None, loc: tuple) -> tuple[tuple, Any, type[BaseModel] | None]:
    """(the keys and list indexes of an error's `loc`, without pydantic's names of union members such as
    'function-after[...]'; the field at its end, None for a list element or an unknown key; the section
    holding its last key)."""
    kept: list = []
    field, section = None, model
    for part in loc:
        if isinstance(part, int):
            kept.append(part)
            field = None
        elif model is not None and (part in model.model_fields or "[" not in part):
            kept.append(part)
            section, field = model, model.model_fields.get(part)
            inner = field.annotation if field is not None else None
            model = inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None
    return tuple(kept), field, section


def shown(value: Any) -> str:
    """A setting's value as written: YAML's words for what YAML read as a bool or null (train.epochs=true), else
    its repr; never a password (an error line may end up in a shared log)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return repr(redact_url(value))


def closest(given: Any, choices: list[str]) -> str | None:
    """The choice closest to `given` (case aside), None where none is close."""
    lower = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(str(given).lower(), list(lower), n=1, cutoff=0.6)
    return lower[close[0]] if close else None


def one_line(exc: ValidationError, model: type[BaseModel] | None = None, prefix: str = "", field: Any = None) -> str:
    """The first error of a pydantic ValidationError as one line: the setting, its value, what is allowed."""
    error = exc.errors()[0]
    loc, found, section = _walk(model, error["loc"])
    key, field = _dotted(loc, prefix), found if model else field
    if error["type"] == "extra_forbidden":
        known = list(section.model_fields) if section else []
        where = _dotted(loc[:-1], prefix)
        close = closest(loc[-1], known)
        if close:
            return f"unknown setting {key}; did you mean {'.'.join(filter(None, [where, close]))}?"
        elsewhere = [other.rsplit(".", 1)[0] for other in leaf_keys(Settings()) if other.rsplit(".", 1)[-1] == loc[-1]]
        also = f"; {loc[-1]} is a key of {', '.join(elsewhere)}" if elsewhere else ""   # train.learning_rate: per loss
        return (f"unknown setting {key}; known {f'keys of {where}' if where else 'top-level keys'}: "
                f"{', '.join(known)}{also}")

    if error["type"] == "missing":
        return f"missing setting {key}"
    value = f"{key}={shown(error['input'])}"
    if error["type"] == "model_type" and isinstance(getattr(field, "annotation", None), type):   # a whole section
        keys = list(field.annotation.model_fields)
        return f"{value}: {key} is a section, not a setting; its settings: {', '.join(keys)} (e.g. {key}.{keys[0]}=...)"
    if error["type"] == "literal_error":   # a name among a few: the one meant, where one is close
        choices = re.findall(r"'([^']*)'", error["ctx"]["expected"])
        close = closest(error["input"], choices)
        return f"{value} is not one of {', '.join(map(repr, choices))}{f'; did you mean {close!r}?' if close else ''}"
    if error["type"] == "finite_number":
        finite = allowed(field).replace("a number", "a finite number", 1) if field else "a finite number"
        return f"{value} is out of range: allowed {finite}"
    if error["type"] == "string_pattern_mismatch":
        return f"{value} is out of range: allowed {PATTERN_WORDS.get(error['ctx']['pattern'], 'other text')}"
    if error["type"] in RANGE_ERRORS:   # a field, or an element of a list
        return f"{value} is out of range: allowed {allowed(field) if field else error['msg'].removeprefix(PREFIX)}"
    if field is not None and error["type"] in TYPE_ERRORS:
        return f"{value} is not {allowed(field)}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{value} {message}" if message.startswith(("is ", "carries", "lists")) else f"{value}: {message}"


def leaf_keys(section: BaseModel, path: str = "") -> list[str]:
    """Every setting's full key under `section`: ['data.name', 'data.url', ...]."""
    keys = []
    for name in type(section).model_fields:
        value = getattr(section, name)
        keys += leaf_keys(value, f"{path}{name}.") if isinstance(value, BaseModel) else [f"{path}{name}"]
    return keys


def validate(params: Any) -> Settings:
    """params.yaml's settings as `Settings`; ConfigError (one line) for the first bad or unknown one."""
    if not isinstance(params, dict):
        raise ConfigError(f"expected a mapping of settings, got {type(params).__name__}")
    try:
        settings = Settings.model_validate(params)
    except ValidationError as exc:
        raise ConfigError(one_line(exc, Settings)) from None
    missing = _first_missing(settings)
    if missing:   # params.yaml states every setting (conf/ composed): a missing one is a damaged file
        raise ConfigError(f"missing setting {missing}")
    return settings


def _first_missing(section: BaseModel, path: str = "") -> str | None:
    for name in type(section).model_fields:
        if name not in section.model_fields_set:
            return f"{path}{name}"
        value = getattr(section, name)
        if isinstance(value, BaseModel) and (missing := _first_missing(value, f"{path}{name}.")):
            return missing
    return None


@functools.cache
def _field_adapter(section: type[Section], name: str) -> TypeAdapter:
    field = section.model_fields[name]
    kind: Any = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    return TypeAdapter(kind, config=ConfigDict(strict=True, allow_inf_nan=False))


def check(section: type[Section], **values: Any) -> None:
    """The library's check of its arguments: ValueError (one line) unless each keyword is a valid value
    of the field of that name in `section`, e.g. check(Train, epochs=epochs, batch_size=batch_size)."""
    for name, value in values.items():
        if isinstance(value, np.generic):   # numpy scalars count as the Python numbers they hold
            value = value.item()
        try:
            _field_adapter(section, name).validate_python(value)
        except ValidationError as exc:
            raise ValueError(one_line(exc, prefix=name, field=section.model_fields[name])) from None


def allowed(field: Any) -> str:
    """What a field allows, in words: 'an integer >= 1', "one of 'a', 'b'", 'a list of numbers > 0'."""
    import typing

    import annotated_types as at

    words = {at.Ge: (">=", "ge"), at.Gt: (">", "gt"), at.Le: ("<=", "le"), at.Lt: ("<", "lt")}
    bounds = [f"{words[type(m)][0]} {getattr(m, words[type(m)][1]):g}" for m in field.metadata if type(m) in words]
    non_empty = any(isinstance(m, at.MinLen) and m.min_length == 1 for m in field.metadata)
    kind = field.annotation
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    args = tuple(typing.get_args(a)[0] if typing.get_origin(a) is Annotated else a for a in args)
    if origin is Literal:
        text = "one of " + ", ".join(map(repr, args))
    elif origin is list:
        inner = typing.get_args(args[0])[0] if typing.get_origin(args[0]) is Annotated else args[0]
        items = (", ".join(map(repr, typing.get_args(inner))) if typing.get_origin(inner) is Literal
                 else {int: "integers", float: "numbers", str: "names"}.get(inner, str(inner)))
        text = f"a {'non-empty ' if non_empty else ''}list of {items}"
    else:
        nouns = {int: "an integer", float: "a number", str: "non-empty text" if non_empty else "text",
                 bool: "true or false", type(None): "null"}
        names = [nouns.get(a, getattr(a, "__name__", str(a))) for a in (args if origin is not None else (kind,))]
        text = " or ".join(dict.fromkeys(names))
    return " ".join([text, " and ".join(bounds)]).strip()


def describe(prefix: str = "", section: BaseModel | None = None, path: str = "") -> list[str]:
    """One line per setting under `prefix`: key = default (what is allowed) what it means."""
    section = Settings() if section is None else section
    lines = []
    for name, field in type(section).model_fields.items():
        key, value = f"{path}{name}", getattr(section, name)
        if isinstance(value, BaseModel):
            lines += describe(prefix, value, key + ".")
        elif key.startswith(prefix) and key != "checked":
            meaning = f"  {field.description}" if field.description else ""
            lines.append(f"{key} = {value!r}  ({allowed(field)}){meaning}")
    return lines


def is_int(value: Any) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def default(section: type[Section], name: str) -> Any:
    """The default of a setting, for a library function's signature: default(Train, "epochs") -> 40."""
    return section.model_fields[name].default
