"""conf/ (Hydra) -> params.yaml: compose the settings with overrides, check them, write them.

Data flows one way: conf/ -> params.yaml -> stage -> library. `compose` is what DVC does on
`dvc exp run -S ...`; both check the composition against linclass.settings while it is composed
(conf/config.yaml: `checked: ${linclass_check:}`), so that a bad value fails before DVC writes
params.yaml or deletes any output. DVC finds the check by importing hydra_plugins/linclass_check.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel

from linclass.files import atomic_file
from linclass.settings import ConfigError, LossName, RegularizerName, Settings, closest, validate


def check_override_keys(overrides: Iterable[str], conf_dir: str | Path) -> None:
    """ConfigError (one line) for an override of a group option or a top-level section that does not exist.

    Hydra refuses those in several lines; a mistyped key inside a section reaches the schema's check
    instead (the sections are open to new keys: register), which says what it probably meant.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    overrides = list(overrides)
    for item in overrides:
        if "=" not in item and not item.startswith("~"):
            raise ConfigError(f"{item!r} sets nothing: allowed key=value, e.g. train.epochs=5")
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as exc:  # the override's syntax
        raise ConfigError(" ".join(str(exc).split())) from None
    groups = {p.name for p in Path(conf_dir).iterdir() if p.is_dir()}
    given: dict[str, str] = {}
    for override, item in zip(parsed, overrides):
        key = override.key_or_group
        if key in given:   # Hydra would keep the last one, silently
            raise ConfigError(f"{key} is given twice ({given[key]} and {item}): give it once")
        given[key] = item
        top, _, rest = key.partition(".")
        if key in groups and not override.is_delete():   # a config group: train=smoke
            if override.value() not in {p.stem for p in (Path(conf_dir) / key).glob("*.yaml")}:
                raise option_error(conf_dir, key, str(override.value()))
        elif top not in Settings.model_fields:
            sections = [name for name in Settings.model_fields if name != "checked"]   # not a setting: the check's mark
            close = closest(top, sections)
            hint = f"did you mean {'.'.join([close, *filter(None, [rest])])}?" if close else \
                f"known: {', '.join(sections)}"
            raise ConfigError(f"unknown setting {key}; {hint}")


def compose(conf_dir: str | Path, overrides: Iterable[str] = (), config_name: str = "config") -> dict:
    """The Hydra composition of `conf_dir` with `overrides`, checked, as a plain dict (what DVC writes)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides)
    if not Path(conf_dir).is_dir():
        raise ConfigError(f"no settings folder {conf_dir}/ in {Path.cwd()}: run this in the project's root folder")
    check_override_keys(overrides, conf_dir)
    register()
    try:
        with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=overrides)
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except ConfigError:
        raise
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(" ".join(str(exc).split())) from None


def load_params(path: str | Path = "params.yaml") -> dict:
    """params.yaml as a dict; ConfigError (one line) when it is not YAML or not a mapping."""
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


def write_params(conf_dir: str | Path = "conf", path: str | Path = "params.yaml",
                 overrides: Iterable[str] = ()) -> dict:
    """Compose conf/ (with overrides), check it and write it to params.yaml atomically, byte for byte as DVC
    writes it on `dvc exp run` (OmegaConf.to_yaml): an experiment's commit holds only the settings it changed."""
    from omegaconf import OmegaConf

    params = compose(conf_dir, overrides)
    with atomic_file(path) as tmp:
        tmp.write_text(OmegaConf.to_yaml(params), encoding="utf-8")
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


# ---- the check inside Hydra's composition (also DVC's) ----

def _rejected(message: str) -> Exception:
    """An error that OmegaConf passes on as it is, in one line (any other error a resolver raises becomes
    'X raised while resolving interpolation: ...', and OmegaConf appends full_key lines to its own)."""
    from omegaconf.errors import InterpolationResolutionError

    class SettingRejected(InterpolationResolutionError):
        def __str__(self) -> str:
            return str(self.args[0] if self.args else "").splitlines()[0]

    return SettingRejected(message)


def check_composition(*, _root_) -> bool:
    """OmegaConf resolver `linclass_check`: validate the whole composition while it is being resolved."""
    from omegaconf import OmegaConf

    params = OmegaConf.to_container(_root_, resolve=False)
    assert isinstance(params, dict)
    params["checked"] = True
    try:
        validate(params)
    except ConfigError as exc:
        raise _rejected(str(exc)) from None
    return True


def open_sections() -> dict:
    """Every section of the schema, empty: conf/config.yaml puts this node (ConfigStore `linclass_sections`)
    first in its defaults, opened to new keys, so that a mistyped key of a section reaches the schema's
    check (one line, did you mean ...) instead of Hydra's multi-line refusal."""
    def sections(model: type[BaseModel]) -> dict:
        return {name: sections(field.annotation) for name, field in model.model_fields.items()
                if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)}
    return sections(Settings)


TRAINED = {"loss": ("losses", LossName), "regularizer": ("regularizers", RegularizerName)}   # grid's lists


def option_error(conf_dir: str | Path, group: str, option: str) -> ConfigError:
    """The one line for `group=option` when conf/<group>/ has no such option."""
    if group in TRAINED:   # loss=svn: grid's list says which are trained; loss.svm.* sets one
        listed, names = TRAINED[group]
        choices = list(get_args(names))
        close = closest(option, choices)
        example = f"did you mean grid.{listed}=[{close}]?" if close else f"e.g. grid.{listed}=[{choices[0]}]"
        return ConfigError(f"{group}={option}: the {listed} trained are grid.{listed}, a list of "
                           f"{', '.join(map(repr, choices))} ({example}); one {group}'s setting is "
                           f"{group}.<name>.<key>=value (linclass settings {group})")
    options = sorted(p.stem for p in (Path(conf_dir) / group).glob("*.yaml"))
    return ConfigError(f"{group}={option} is not an option of the group {group} (options: {', '.join(options)}); "
                       f"one setting is {group}.<name>=value (linclass settings {group})")


def unknown_option_plugins() -> tuple[type, type]:
    """Two Hydra plugins (hydra_plugins/linclass_check exposes them to Hydra's plugin scan, as DVC loads it):
    a search-path plugin that puts a config source right after conf/, and that source, which claims
    exactly the options of conf/'s groups that conf/ lacks and refuses each in one line. Without it,
    `dvc exp run -S loss=hinge` fails with Hydra's multi-line "Could not find 'loss/hinge'"."""
    from hydra.core.config_search_path import ConfigSearchPath
    from hydra.plugins.config_source import ConfigResult, ConfigSource
    from hydra.plugins.search_path_plugin import SearchPathPlugin

    scheme = "linclass-options"

    class UnknownOptions(ConfigSource):
        @staticmethod
        def scheme() -> str:
            return scheme

        def _group_option(self, config_path: str) -> tuple[str, str] | None:
            group, _, option = config_path.partition("/")
            conf = Path(self.path)
            if group in ("", "hydra") or not option or "/" in option or not (conf / group).is_dir():
                return None
            return None if (conf / group / f"{option}.yaml").exists() else (group, option)

        def is_config(self, config_path: str) -> bool:
            return self._group_option(config_path) is not None

        def load_config(self, config_path: str) -> ConfigResult:
            group, option = self._group_option(config_path) or config_path.partition("/")[::2]
            raise option_error(self.path, group, option)

        def is_group(self, config_path: str) -> bool:
            return False

        def available(self) -> bool:
            return Path(self.path).is_dir()

        def list(self, config_path, results_filter) -> list[str]:
            return []

    class AfterConf(SearchPathPlugin):
        def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
            for element in list(search_path.get_path()):
                path = (element.path or "").removeprefix("file://")   # conf/ as a folder, with or without file://
                if element.provider == "main" and path and "://" not in path:
                    search_path.append("linclass", f"{scheme}://{path}")

    return UnknownOptions, AfterConf


def register() -> None:
    """Register the resolver and the open sections with OmegaConf / Hydra (idempotent)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import DictConfig, OmegaConf

    OmegaConf.register_new_resolver("linclass_check", check_composition, replace=True)
    node = OmegaConf.create(open_sections())

    def open_all(cfg: DictConfig) -> None:
        OmegaConf.set_struct(cfg, False)
        for value in cfg.values():
            if isinstance(value, DictConfig):
                open_all(value)

    open_all(node)
    ConfigStore.instance().store(name="linclass_sections", node=node)

