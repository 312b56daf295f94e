"""The lecture's claims about losses, measured: scaling W, the loss questions, the initial-loss check."""

import math

import numpy as np
import pytest

from linclass.core.losses import hinge_loss
from linclass.core.model import class_scores
from linclass.studies.loss_questions import LOSS_STUDY_COLUMNS, initial_loss_check, loss_behaviour_table
from linclass.studies.weight_scaling import SCALING_COLUMNS, train_zero_hinge_model, weight_scaling_table

SCALES = [0.25, 0.5, 1.0, 2.0, 4.0]


@pytest.fixture(scope="module")
def zero_hinge():
    """50 CIFAR-shaped gaussian 'images' (D = 3072, 10 classes): separable, so hinge 0 is reachable."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 3072)).astype(np.float32)
    y = rng.integers(0, 10, size=120)
    return train_zero_hinge_model(X, y, n=50, seed=0)


@pytest.fixture(scope="module")
def scaling_table(zero_hinge):
    W, b, X_sub, y_sub = zero_hinge
    return weight_scaling_table(W, b, X_sub, y_sub, SCALES, model="svm-zero", beta=0.5)


@pytest.fixture(scope="module")
def scaling(scaling_table):
    return scaling_table.set_index("scale")


def test_zero_hinge_model_has_exactly_zero_hinge(zero_hinge):
    W, b, X_sub, y_sub = zero_hinge
    assert X_sub.shape == (50, 3072) and y_sub.shape == (50,)
    assert W.shape == (10, 3072) and W.dtype == np.float32
    assert hinge_loss(class_scores(X_sub, W, b), y_sub)[0] == 0.0


def test_zero_hinge_model_is_deterministic(zero_hinge):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 3072)).astype(np.float32)
    y = rng.integers(0, 10, size=120)
    W, b, X_sub, _ = train_zero_hinge_model(X, y, n=50, seed=0)
    np.testing.assert_array_equal(W, zero_hinge[0])
    np.testing.assert_array_equal(X_sub, zero_hinge[2])


def test_zero_hinge_model_raises_when_the_budget_is_too_small():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((20, 3072)).astype(np.float32)
    y = rng.integers(0, 10, size=20)
    with pytest.raises(RuntimeError, match="still"):
        train_zero_hinge_model(X, y, n=20, learning_rate=1e-9, epochs=1, max_epochs=2)


def test_scaling_table_columns(scaling_table):
    assert list(scaling_table.columns) == SCALING_COLUMNS
    assert list(scaling_table["scale"]) == SCALES
    assert set(scaling_table["model"]) == {"svm-zero"}


def test_hinge_stays_zero_for_every_scale_at_least_one(scaling):
    assert (scaling.loc[[1.0, 2.0, 4.0], "hinge_loss"] == 0.0).all()
    assert (scaling.loc[[1.0, 2.0, 4.0], "squared_hinge_loss"] == 0.0).all()
    # shrinking W shrinks the margins below delta: the hinge comes back
    assert scaling.loc[0.25, "hinge_loss"] > 0


def test_penalties_grow_like_the_scale(scaling):
    base = scaling.loc[1.0]
    for s in SCALES:
        assert scaling.loc[s, "l2_penalty"] == pytest.approx(s ** 2 * base["l2_penalty"], rel=1e-5)
        assert scaling.loc[s, "l1_penalty"] == pytest.approx(s * base["l1_penalty"], rel=1e-5)
    np.testing.assert_allclose(scaling["elasticnet_penalty"], 0.5 * scaling["l2_penalty"] + scaling["l1_penalty"],
                               rtol=1e-5)


def test_accuracy_does_not_change_and_softmax_falls(scaling):
    assert scaling["accuracy"].nunique() == 1
    assert scaling["accuracy"].iloc[0] == 1.0  # every training example right ...
    assert (np.diff(scaling["softmax_loss"].to_numpy()) < 0).all()  # ... so softmax falls strictly with s


def test_scaling_multiplies_the_bias_too():
    # one example, two classes: scores W x + b = [0, 1] -> (sW, sb) gives [0, s]; delta 1 -> hinge max(0, 1 - s)
    W = np.zeros((2, 1), dtype=np.float32)
    b = np.array([0.0, 1.0], dtype=np.float32)
    X = np.ones((1, 1), dtype=np.float32)
    table = weight_scaling_table(W, b, X, np.array([1]), [0.5, 1.0, 3.0], model="bias-only")
    np.testing.assert_allclose(table["hinge_loss"], [0.5, 0.0, 0.0])
    np.testing.assert_allclose(table["l2_penalty"], 0.0)


def test_scaling_uses_each_losss_margin_and_elastic_nets_beta():
    # scores [0, 1], label 1: hinge max(0, 0 - s + delta); squared hinge max(0, 0 - s + squared_delta)^2
    W, b = np.array([[0.0], [2.0]], np.float32), np.array([0.0, 1.0], np.float32)
    X = np.zeros((1, 1), np.float32)
    table = weight_scaling_table(W, b, X, np.array([1]), [0.5, 1.0], model="m", delta=2.0, squared_delta=3.0, beta=0.25)
    np.testing.assert_allclose(table["hinge_loss"], [1.5, 1.0])
    np.testing.assert_allclose(table["squared_hinge_loss"], [2.5 ** 2, 2.0 ** 2])
    np.testing.assert_allclose(table["elasticnet_penalty"], [0.25 * 1.0 + 1.0, 0.25 * 4.0 + 2.0])


@pytest.mark.parametrize("scales", [[], [0.0], [-1.0, 2.0], [float("nan")]])
def test_scaling_rejects_bad_scales(scales):
    W, b = np.ones((2, 3), np.float32), np.zeros(2, np.float32)
    with pytest.raises(ValueError, match="scales"):
        weight_scaling_table(W, b, np.ones((1, 3), np.float32), np.array([0]), scales, model="m")


# ---------------------------------------------------------------- loss behaviour table

@pytest.fixture(scope="module")
def study():
    table = loss_behaviour_table()
    assert list(table.columns) == LOSS_STUDY_COLUMNS
    return table


def value(table, question, case, loss):
    hit = table[table["question"].str.startswith(question) & (table["case"] == case) & (table["loss"] == loss)]
    assert len(hit) == 1, (question, case, loss)
    return hit["value"].iloc[0]


def test_q1_hinge_ignores_a_small_change_softmax_does_not(study):
    for case in ("car scores [1.3, 4.9, 2.0]", "car score +0.5", "car score -0.5"):
        assert value(study, "Q1", case, "svm") == 0.0
    softmax = [value(study, "Q1", case, "softmax") for case in ("car score -0.5", "car scores [1.3, 4.9, 2.0]",
                                                                 "car score +0.5")]
    assert softmax[0] > softmax[1] > softmax[2] > 0
    assert value(study, "W vs 2W", "car scores of 2W", "svm") == 0.0


def test_q2_min_zero_max_unbounded(study):
    assert value(study, "Q2", "correct class ahead by 1000", "svm") == 0.0
    assert value(study, "Q2", "correct class ahead by 1000", "softmax") == pytest.approx(0.0, abs=1e-12)
    for loss in ("svm", "softmax"):
        small = value(study, "Q2", "correct class behind by 1000", loss)
        huge = value(study, "Q2", "correct class behind by 1e+06", loss)
        assert huge > 900 * small
    assert value(study, "Q2", "correct class behind by 1000", "svm") == pytest.approx(2 * 1001)


@pytest.mark.parametrize("C", [3, 10])
def test_q3_loss_at_zero_weights(study, C):
    assert value(study, "Q3", f"C = {C}, all scores 0", "svm") == pytest.approx(C - 1)
    assert value(study, "Q3", f"C = {C}, all scores 0", "softmax") == pytest.approx(math.log(C))


def test_q4_q5_q6_on_the_lecture_examples(study):
    expected = {"svm": [2.9, 0.0, 12.9], "svm_all_classes": [3.9, 1.0, 13.9],
                "svm_mean_classes": [1.45, 0.0, 6.45], "squared_svm": [8.41, 0.0, 83.25]}
    questions = {"svm": "Q4", "svm_all_classes": "Q4", "svm_mean_classes": "Q5", "squared_svm": "Q6"}
    for loss, values in expected.items():
        got = [value(study, questions[loss], name, loss) for name in ("cat", "car", "frog")]
        np.testing.assert_allclose(got, values, atol=1e-9)
        assert value(study, questions[loss], "mean over examples", loss) == pytest.approx(np.mean(values))


def test_softmax_vs_svm_scores(study):
    cases = ["scores [10, -2, 3], y = 0", "scores [10, 9, 9], y = 0", "scores [10, -100, -100], y = 0"]
    assert [value(study, "softmax vs svm", c, "svm") for c in cases] == [0.0, 0.0, 0.0]
    softmax = [value(study, "softmax vs svm", c, "softmax") for c in cases]
    assert softmax[1] == pytest.approx(math.log(1 + 2 * math.exp(-1)))
    assert softmax[0] == pytest.approx(math.log(1 + math.exp(-12) + math.exp(-7)))
    assert softmax[1] > softmax[0] > softmax[2] >= 0


def test_delta_changes_the_table():
    table = loss_behaviour_table(delta=2.0)
    assert value(table, "Q3", "C = 10, all scores 0", "svm") == pytest.approx(18.0)
    assert value(table, "Q4", "car", "svm_all_classes") == pytest.approx(2.0 + value(table, "Q4", "car", "svm"))


# ---------------------------------------------------------------- initial loss check

@pytest.mark.parametrize("loss, observed, C, ok", [
    ("svm", 9.02, 10, True), ("svm", 7.5, 10, False), ("squared_svm", 9.3, 10, True),
    ("softmax", 2.31, 10, True), ("softmax", 9.0, 10, False), ("softmax", 1.1, 3, True),
    ("softmax", float("nan"), 10, False),
])
def test_initial_loss_check(loss, observed, C, ok):
    result = initial_loss_check(loss, observed, C)
    assert result["ok"] is ok
    expected = math.log(C) if loss == "softmax" else C - 1
    assert result["expected"] == pytest.approx(expected)
    if not math.isnan(observed):
        assert result["relative_error"] == pytest.approx(abs(observed - expected) / expected)


@pytest.mark.parametrize("loss, C, match", [("hinge", 10, "unknown loss"), ("svm", 1, "num_classes")])
def test_initial_loss_check_rejects_bad_input(loss, C, match):
    with pytest.raises(ValueError, match=match):
        initial_loss_check(loss, 1.0, C)
