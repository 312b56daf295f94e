"""conf/ -> params.yaml -> validate(): the committed params.yaml is fresh, overrides compose, bad
settings fail in one line that names the key, the value and what is allowed."""
from __future__ import annotations

import copy
import math
import shutil
from pathlib import Path

import pytest
import yaml

from linclass.config import compose, flatten, load_params
from linclass.settings import ConfigError, validate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reference() -> dict:
    """conf/ composed with no overrides: the defaults, and the list of known keys."""
    return compose(ROOT / "conf")


def stale_keys(params: dict, composed: dict) -> list[str]:
    """Dotted keys whose value differs between params.yaml and the composition of conf/ (or exist in one only)."""
    a, b = flatten(params), flatten(composed)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>"))


def with_setting(params: dict, dotted: str, value) -> dict:
    params = copy.deepcopy(params)
    *parents, last = dotted.split(".")
    node = params
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return params


# --- params.yaml is conf/ composed --------------------------------------------------------------

def test_committed_params_yaml_is_conf_composed(reference):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stale = stale_keys(params, reference)
    assert not stale, f"params.yaml is stale (differs from conf/ at {', '.join(stale)}): run `make params`"


def test_stale_check_catches_an_edit_of_conf(tmp_path, reference):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    sgd = conf / "train" / "sgd.yaml"
    sgd.write_text(sgd.read_text().replace(f"epochs: {reference['train']['epochs']}",
                                           f"epochs: {reference['train']['epochs'] + 1}"))
    assert stale_keys(reference, compose(conf)) == ["train.epochs"]


def test_write_params_writes_the_composition_byte_for_byte_as_dvc_does(tmp_path):
    """`make exp` (DVC's own composition, dvc exp run -S) rewrote params.yaml without linclass's header and with
    `n` quoted: every experiment's commit carried that noise, even one that changed nothing."""
    from dvc.utils.hydra import compose_and_dump

    from linclass.config import write_params

    ours, dvcs = tmp_path / "ours" / "params.yaml", tmp_path / "dvc" / "params.yaml"
    ours.parent.mkdir()
    dvcs.parent.mkdir()
    written = write_params(ROOT / "conf", ours, ["train.epochs=7"])
    compose_and_dump(str(dvcs), str(ROOT / "conf"), None, "config", str(ROOT), ["train.epochs=7"])
    assert ours.read_text() == dvcs.read_text()
    assert yaml.safe_load(ours.read_text()) == written and written["train"]["epochs"] == 7
    assert [p.name for p in ours.parent.iterdir()] == ["params.yaml"]  # no temp file left behind


# --- overrides -----------------------------------------------------------------------------------

@pytest.mark.parametrize("group, option", [("train", "smoke"), ("tracking", "server")])
def test_group_override_swaps_the_whole_section(reference, group, option):
    composed = compose(ROOT / "conf", [f"{group}={option}"])
    expected = yaml.safe_load((ROOT / "conf" / group / f"{option}.yaml").read_text())
    assert composed[group] == expected
    assert composed[group] != reference[group]
    assert {k: v for k, v in composed.items() if k != group} == {k: v for k, v in reference.items() if k != group}


def test_smoke_training_is_shorter(reference):
    assert compose(ROOT / "conf", ["train=smoke"])["train"]["epochs"] < reference["train"]["epochs"]


def test_value_override(reference):
    composed = compose(ROOT / "conf", ["train.epochs=7", "grid.losses=[softmax]"])
    assert composed["train"]["epochs"] == 7 and composed["grid"]["losses"] == ["softmax"]
    assert stale_keys(composed, reference) == ["grid.losses", "train.epochs"]


@pytest.mark.parametrize("override, message", [
    ("nosuch.key=1", "unknown setting nosuch.key; known: data, preprocess"),
    ("regularizer.l2.strenght=0.1", "unknown setting regularizer.l2.strenght; did you mean regularizer.l2.strength?"),
    ("+regularizer.l2.strenght=0.1", "unknown setting regularizer.l2.strenght; did you mean regularizer.l2.strength?"),
    ("+train.epoch=5", "unknown setting train.epoch; did you mean train.epochs?"),
    ("trian.epochs=5", "unknown setting trian.epochs; did you mean train.epochs?"),
    ("studies.hard_case.n=5", "unknown setting studies.hard_case; did you mean studies.hard_cases?"),
    ("+foo=1", "unknown setting foo; known: data, preprocess"),
    ("train.learning_rate=0.1", "unknown setting train.learning_rate; known keys of train: epochs, batch_size, "
                                "lr_decay, init_scale, l1_step, seed, blas_threads; learning_rate is a key of "
                                "loss.svm, loss.squared_svm, loss.softmax, studies.hard_cases"),
    ("loss=hinge", "loss=hinge: the losses trained are grid.losses, a list of 'svm', 'squared_svm', 'softmax' "
                   "(e.g. grid.losses=[svm])"),
    ("train.epochs=abc", "train.epochs='abc' is not an integer >= 1"),
    ("grid.losses=[hinge]", "grid.losses[0]='hinge' is not one of 'svm', 'squared_svm', 'softmax'"),
    ("grid.regularizers=[L2]", "grid.regularizers[0]='L2' is not one of 'none', 'l1', 'l2', 'elasticnet'; did you "
                               "mean 'l2'?"),
    ("train.l1_step=proximl", "train.l1_step='proximl' is not one of 'subgradient', 'proximal'; did you mean "
                              "'proximal'?"),
    ("train.epochs=true", "train.epochs=true is not an integer >= 1"),
])
def test_a_mistyped_or_bad_override_is_one_line_naming_it(override, message):
    with pytest.raises(ConfigError) as info:
        compose(ROOT / "conf", [override])
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("overrides, message", [
    (["train.epochs=2", "train.epochs=3"],
     "train.epochs is given twice (train.epochs=2 and train.epochs=3): give it once"),
    (["train.epochs"], "'train.epochs' sets nothing: allowed key=value, e.g. train.epochs=5"),
    (["loss=svn"], "loss=svn: the losses trained are grid.losses, a list of 'svm', 'squared_svm', 'softmax' (did "
                   "you mean grid.losses=[svm]?); one loss's setting is loss.<name>.<key>=value (linclass settings "
                   "loss)"),
    (["xyz=5"], "unknown setting xyz; known: data, preprocess, loss, regularizer, train, tracking, studies, grid, "
                "features"),
])
def test_an_override_given_twice_or_without_a_value_is_one_line(overrides, message):
    with pytest.raises(ConfigError) as info:
        compose(ROOT / "conf", overrides)
    assert str(info.value) == message


def test_the_composition_itself_rejects_a_mistyped_key_in_one_line():
    """What DVC runs on `dvc exp run -S`: Hydra's compose with the project's check, no pre-check of ours."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from linclass.config import register

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for override, message in (
            ("regularizer.l2.strenght=0.1", "did you mean regularizer.l2.strength?"),
            ("+train.epoch=5", "did you mean train.epochs?"),
            ("+foo=1", "unknown setting foo;"),
            ("train.epochs=0", "train.epochs=0 is out of range"),
        ):
            with pytest.raises(Exception) as info:
                OmegaConf.to_container(hydra_compose(config_name="config", overrides=[override]), resolve=True)
            assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


# --- validate ------------------------------------------------------------------------------------

def test_defaults_are_valid(reference):
    assert validate(copy.deepcopy(reference)).model_dump() == reference


@pytest.mark.parametrize("group, option", [("train", "smoke"), ("tracking", "server")])
def test_group_options_are_valid(reference, group, option):
    validate(compose(ROOT / "conf", [f"{group}={option}"]))


def test_full_grid_is_valid(reference):
    validate(with_setting(reference, "grid.losses", ["svm", "squared_svm", "softmax"]))


# (dotted key, bad value, text the message must show for the value)
BAD = [
    ("data.url", "ftp://example.org/cifar.tar.gz", "ftp://example.org/cifar.tar.gz"),
    ("data.url", "cifar-10-python.tar.gz", "cifar-10-python.tar.gz"),
    ("data.url", None, "null"),   # as YAML writes it
    ("data.md5", "not-hex-" * 4, "not-hex-"),
    ("data.md5", "c58f30108f718f92721af3b95e74349", "c58f30108f718f92721af3b95e74349"),
    ("data.retries", 0, "0"),
    ("data.timeout", 0, "0"),
    ("preprocess.val_size", 0, "0"),
    ("preprocess.val_size", 50_000, "50000"),
    ("preprocess.val_size", 100.5, "100.5"),
    ("preprocess.val_size", "100", "'100'"),
    ("preprocess.seed", -1, "-1"),
    ("preprocess.scale", 0.0, "0.0"),
    ("preprocess.max_train", 0, "0"),
    ("train.epochs", 0, "0"),
    ("train.epochs", 2.5, "2.5"),
    ("train.epochs", True, "true"),
    ("train.batch_size", 0, "0"),
    ("train.batch_size", -50, "-50"),
    ("loss.svm.learning_rate", 0, "0"),
    ("loss.softmax.learning_rate", -0.01, "-0.01"),
    ("loss.svm.learning_rate", math.nan, "nan"),
    ("loss.svm.learning_rate", math.inf, "inf"),
    ("loss.softmax.learning_rate", "fast", "'fast'"),
    ("train.lr_decay", 1.5, "1.5"),
    ("train.lr_decay", 0.0, "0.0"),
    ("train.init_scale", -1e-3, "-0.001"),
    ("train.seed", -1, "-1"),
    ("train.blas_threads", 0, "0"),
    ("loss.svm.delta", 0.0, "0.0"),
    ("loss.svm.delta", -1.0, "-1.0"),
    ("regularizer.l2.strength", -1e-3, "-0.001"),
    ("regularizer.none.strength", -1.0, "-1.0"),
    ("regularizer.none.strength", 0.5, "0.5"),
    ("features.cells", [32], "features.cells[0]=32"),
    ("features.cells", [0, 8], "features.cells[0]=0"),
    ("regularizer.l1.strength", "a lot", "'a lot'"),
    ("regularizer.elasticnet.beta", -0.5, "-0.5"),
    ("tracking.uri", "htp://127.0.0.1:5000", "htp://127.0.0.1:5000"),
    ("tracking.uri", 5000, "5000"),
    ("tracking.experiment", "", "''"),
    ("studies.scales", [], "[]"),
    ("studies.scales", [0.5, -1.0], "studies.scales[1]=-1.0"),
    ("studies.scales", "1.0", "'1.0'"),
    ("studies.zero_hinge_subset", 1, "1"),
    ("studies.near_zero_tol", 0.0, "0.0"),
    ("studies.near_zero_tol", 1.5, "1.5"),
    ("studies.hard_cases.n", 5, "5"),
    ("grid.losses", ["hinge"], "'hinge'"),
    ("grid.losses", ["svm", "SVM"], "'SVM'"),
    ("grid.losses", [], "[]"),
    ("grid.losses", "svm", "'svm'"),
    ("grid.regularizers", ["l3"], "'l3'"),
    ("grid.regularizers", ["l2", "dropout"], "'dropout'"),
    ("grid.losses", ["svm", "svm"], "['svm', 'svm']"),
    ("data.retries", 1_000_000, "1000000"),
    ("preprocess.scale", 1e-300, "1e-300"),
    ("train.blas_threads", "1; touch pwned;", "'1; touch pwned;'"),
]
ALLOWED_WORDS = ("allowed", "known", "is not an integer", "is not a number", "is not text", "is not a non-empty list",
                 "is not one of")


def test_features_of_no_part_at_all_are_refused(reference):
    settings = with_setting(with_setting(with_setting(reference, "features.cells", []), "features.hue_bins", 0),
                            "features.value_bins", 0)
    with pytest.raises(ConfigError, match=r"^features.cells=\[\] is empty with hue_bins=0 and value_bins=0: allowed"):
        validate(settings)
    validate(with_setting(settings, "features.value_bins", 4))   # one part is enough


@pytest.mark.parametrize("key, value, shown", BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_bad_value_is_one_line_naming_key_value_and_what_is_allowed(reference, key, value, shown):
    with pytest.raises(ConfigError) as info:
        validate(with_setting(reference, key, value))
    message = str(info.value)
    assert "\n" not in message
    assert key in message, message
    assert shown in message, message
    assert any(word in message for word in ALLOWED_WORDS), message


@pytest.mark.parametrize("uri", ["http://alice:s3cret@127.0.0.1:5000", "postgresql://alice:s3cret@127.0.0.1/mlflow"])
def test_a_password_in_the_tracking_uri_is_refused_without_showing_it(reference, uri):
    # it would be stored in params.yaml, dvc.lock and git (data.url refuses credentials for the same reason)
    with pytest.raises(ConfigError) as info:
        validate(with_setting(reference, "tracking.uri", uri))
    message = str(info.value)
    assert "\n" not in message and "carries a password" in message and "MLFLOW_TRACKING_PASSWORD" in message
    assert "s3cret" not in message, message
    validate(with_setting(reference, "tracking.uri", "postgresql://alice@127.0.0.1/mlflow"))  # a user alone: fine


@pytest.mark.parametrize("key, hint", [
    ("nosuch", "known top-level keys: data, preprocess"),
    ("train.momentum", "known keys of train: epochs, batch_size"),
    ("train.epoch", "did you mean train.epochs?"),
    ("loss.hinge", "known keys of loss: svm, squared_svm, softmax"),
    ("loss.softmax.delta", "known keys of loss.softmax: learning_rate"),  # softmax has no margin
    ("regularizer.l2.beta", "known keys of regularizer.l2: strength"),
    ("studies.hard_cases.lr", "known keys of studies.hard_cases: n, seed"),
])
def test_unknown_setting_is_one_line_naming_it_and_the_known_keys(reference, key, hint):
    with pytest.raises(ConfigError) as info:
        validate(with_setting(reference, key, 1))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"unknown setting {key}; "), message
    assert hint in message, message


def test_missing_setting_is_named(reference):
    params = copy.deepcopy(reference)
    del params["train"]["epochs"]
    with pytest.raises(ConfigError, match=r"^missing setting train\.epochs$"):
        validate(params)


@pytest.mark.parametrize("text, expected", [
    ("train: [\n", r"^params\.yaml is not valid YAML at line 2: "),
    ("train:\n  epochs: 3\n   batch_size: 5\n", r"^params\.yaml is not valid YAML at line 3: "),
    ("", r"^params\.yaml: expected a mapping of settings, got NoneType$"),
    ("- 1\n- 2\n", r"^params\.yaml: expected a mapping of settings, got list$"),
])
def test_unreadable_params_yaml_is_one_line(tmp_path, monkeypatch, text, expected):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(text)
    with pytest.raises(ConfigError, match=expected) as info:
        load_params("params.yaml")
    assert "\n" not in str(info.value)


# --- every path a user types a setting on: `linclass config` / `make params`, `linclass exp` (make exp SET=...),
# and DVC's own `dvc exp run -S` (which composes conf/ through hydra_plugins/linclass_check) ------------------

TYPOS = [
    ("regularizer.l2.strenght=0.1", "unknown setting regularizer.l2.strenght; did you mean regularizer.l2.strength?"),
    ("+regularizer.l2.strenght=0.1", "unknown setting regularizer.l2.strenght; did you mean regularizer.l2.strength?"),
    ("+train.epoch=5", "unknown setting train.epoch; did you mean train.epochs?"),
    ("+foo=1", "unknown setting foo; known"),
    ("loss=hinge", "loss=hinge: the losses trained are grid.losses"),
    ("train=smok", "train=smok is not an option of the group train (options: sgd, smoke)"),
]
DVC_FOOTER = "Having any troubles? Hit us up at https://dvc.org/support"


@pytest.fixture(scope="module")
def typo_project(tmp_path_factory):
    from conftest import make_project

    return make_project(tmp_path_factory.mktemp("typos") / "project")


def error_lines(stderr: str) -> list[str]:
    """What the command said, without DVC's support footer (DVC adds it to every error it reports)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(DVC_FOOTER)]


@pytest.mark.slow
@pytest.mark.parametrize("override, message", TYPOS, ids=[o for o, _ in TYPOS])
def test_a_mistyped_setting_is_one_line_on_every_path_before_any_stage(typo_project, override, message):
    from conftest import BIN

    params = (typo_project.path / "params.yaml").read_bytes()
    for cmd in ([str(BIN / "linclass"), "config", override], [str(BIN / "linclass"), "exp", override],
                [str(BIN / "dvc"), "exp", "run", "-S", override]):
        proc = typo_project.run(*cmd, check=False, timeout=120)
        lines = error_lines(proc.stderr)
        assert proc.returncode != 0 and len(lines) == 1, f"{cmd}: {proc.stdout}{proc.stderr}"
        assert message in lines[0] and "Traceback" not in proc.stderr, lines[0]
        assert "Running stage" not in proc.stdout + proc.stderr, proc.stdout
        assert (typo_project.path / "params.yaml").read_bytes() == params, f"{cmd} changed params.yaml"
        assert not (typo_project.path / "data").exists() and not (typo_project.path / "models").exists()


@pytest.mark.slow
def test_a_mistyped_key_in_conf_is_one_line_from_make_params(typo_project):
    """`make params` after a hand edit of conf/: the same line, params.yaml untouched."""
    from conftest import BIN

    sgd = typo_project.path / "conf" / "train" / "sgd.yaml"
    original, params = sgd.read_text(), (typo_project.path / "params.yaml").read_bytes()
    try:
        sgd.write_text(original.replace("epochs:", "epoch:"))
        proc = typo_project.run(str(BIN / "linclass"), "config", check=False)
        assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
            "error: unknown setting train.epoch; did you mean train.epochs?"], proc.stderr
        assert (typo_project.path / "params.yaml").read_bytes() == params
    finally:
        sgd.write_text(original)
