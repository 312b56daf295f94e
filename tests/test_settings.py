"""linclass.settings: each setting declared once, used by the config check and by the library."""
import numpy as np
import pytest
import yaml
from conftest import ROOT

from linclass.config import compose
from linclass.core.losses import LOSSES
from linclass.core.metrics import check_labels
from linclass.core.regularizers import REGULARIZERS
from linclass.core.sgd import train_sgd
from linclass.settings import (
    LOSS_NAMES,
    REGULARIZER_NAMES,
    Data,
    ElasticNet,
    Losses,
    Settings,
    Studies,
    SvmLoss,
    Train,
    check,
    default,
    describe,
)


def test_conf_states_the_schema_defaults():
    """The defaults live in the schema (the library takes them); conf/ states the same values for people."""
    composed = compose(ROOT / "conf")
    assert composed == Settings().model_dump()
    assert yaml.safe_load((ROOT / "params.yaml").read_text()) == composed


def test_the_library_defaults_are_the_schema_defaults():
    import inspect

    from linclass import plots
    from linclass.core import losses, model, regularizers
    from linclass.studies import loss_questions, regularization_path, weight_scaling

    signature = inspect.signature(train_sgd).parameters
    for name in ("epochs", "batch_size", "lr_decay", "init_scale", "seed", "l1_step"):
        assert signature[name].default == default(Train, name) == getattr(Train(), name), name
    delta, beta, tol = SvmLoss().delta, ElasticNet().beta, Studies().near_zero_tol
    expected = {  # every library default that is a setting: (function, argument) -> the setting's default
        (train_sgd, "beta"): beta, (train_sgd, "delta"): delta,
        (model.init_weights, "scale"): Train().init_scale,
        (regularizers.penalty, "beta"): beta, (plots.weight_sparsity, "tol"): tol,
        (weight_scaling.weight_scaling_table, "delta"): delta, (weight_scaling.weight_scaling_table, "beta"): beta,
        (weight_scaling.weight_scaling_table, "squared_delta"): Losses().squared_svm.delta,
        (weight_scaling.train_zero_hinge_model, "delta"): delta,
        (regularization_path.path_point, "near_zero_tol"): tol, (regularization_path.path_point, "beta"): beta,
        (regularization_path.regularization_path, "near_zero_tol"): tol,
        (loss_questions.initial_loss_check, "tolerance"): Studies().initial_loss_tolerance,
        **{(function, "delta"): delta for function in losses.LOSSES.values()},
        **{(function, "beta"): beta for function in regularizers.REGULARIZERS.values()},
    }
    for (function, argument), value in expected.items():
        assert inspect.signature(function).parameters[argument].default == value, (function.__name__, argument)


@pytest.mark.parametrize("section, values, message", [
    (Train, {"epochs": 0}, "epochs=0 is out of range: allowed an integer >= 1"),
    (Train, {"epochs": 2.0}, "epochs=2.0 is not an integer >= 1"),
    (Train, {"epochs": True}, "epochs=true is not an integer >= 1"),
    (Train, {"l1_step": "prox"}, "l1_step='prox' is not one of 'subgradient', 'proximal'; did you mean 'proximal'?"),
    (Train, {"lr_decay": float("nan")}, "lr_decay=nan is out of range: allowed a finite number > 0 and <= 1"),
    (Data, {"md5": "c58f30108f718f92721af3b95e74349"}, "md5='c58f30108f718f92721af3b95e74349' is out of range: "
                                                        "allowed 32 hex digits (an md5 sum)"),
    (Data, {"url": "ftp://x/y"}, "url='ftp://x/y' is not supported; allowed: http://, https://, file:// URLs"),
])
def test_the_library_check_names_the_value_and_what_is_allowed(section, values, message):
    with pytest.raises(ValueError) as info:
        check(section, **values)
    assert str(info.value).startswith(message), str(info.value)


def test_the_library_refuses_what_the_config_refuses():
    X, y = np.zeros((4, 3), np.float32), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"^epochs=0 is out of range: allowed an integer >= 1$"):
        train_sgd(X, y, epochs=0)
    with pytest.raises(ValueError, match=r"^l1_step='x' is not one of 'subgradient', 'proximal'$"):
        train_sgd(X, y, l1_step="x")
    check(Train, epochs=np.int64(3))   # numpy numbers are numbers


def test_library_names_are_the_declared_ones():
    assert tuple(LOSSES) == LOSS_NAMES
    assert tuple(REGULARIZERS) == REGULARIZER_NAMES


def test_check_labels():
    check_labels(np.array([0, 2]), 3)
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 3\), got label 3"):
        check_labels(np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="integer labels"):
        check_labels(np.array([0.0]))


def test_describe_lists_every_setting_with_its_default_and_range():
    lines = describe()
    assert len(lines) == len([k for k in _flat(Settings().model_dump()) if k != "checked"])
    assert "train.epochs = 40  (an integer >= 1)  passes over the training split" in lines
    assert all(line.count("  ") >= 2 for line in lines), [line for line in lines if line.count("  ") < 2]   # described
    assert any(line.startswith("train.l1_step = 'proximal'  (one of 'subgradient', 'proximal')") for line in lines)
    assert describe("regularizer.l2") == ["regularizer.l2.strength = 0.001  (a number >= 0)  "
                                          "lambda: total loss = data loss + lambda R(W)"]


def _flat(d, prefix=""):
    for key, value in d.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"
