"""The regularization path on small data: the lecture's invariants (R(W) falls and L1 sparsity grows as
the strength grows; L2 shrinks W without zeroing it), the table, the sentences and the pictures."""

import numpy as np
import pandas as pd
import pytest

import linclass.studies.regularization_path as rp
from linclass.data.synthetic import class_patterns, synthetic_images

STRENGTHS = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
LOSSES = {"svm": {"learning_rate": 0.01, "delta": 1.0}, "softmax": {"learning_rate": 0.05}}


@pytest.fixture(scope="module")
def data():
    """400 CIFAR-shaped images of 10 smooth class patterns plus noise: 300 to train, 100 to validate."""
    rng = np.random.default_rng(0)
    y = rng.permutation(np.arange(400) % 10)
    X = synthetic_images(y, class_patterns(10, rng), rng, noise=60.0).astype(np.float32)
    X = (X - X[:300].mean(axis=0)) / 255
    return X[:300], y[:300], X[300:], y[300:]


@pytest.fixture(scope="module")
def points(data):
    X, y, X_val, y_val = data
    return rp.regularization_path(X, y, X_val, y_val, losses=LOSSES, regularizers=["l1", "l2", "elasticnet"],
                                  strengths=STRENGTHS, num_classes=10, epochs=5, batch_size=50, lr_decay=0.95,
                                  seed=0, init_scale=1e-3, l1_step="proximal")


@pytest.fixture(scope="module")
def table(points):
    return rp.path_table(points)


def path(table, loss, regularizer):
    return table[(table["loss"] == loss) & (table["regularizer"] == regularizer)].sort_values("strength")


def test_table_has_one_row_per_point_in_order(points, table):
    assert list(table.columns) == list(rp.COLUMNS)
    assert len(table) == 2 * 3 * len(STRENGTHS)
    assert list(table["strength"][:len(STRENGTHS)]) == STRENGTHS
    assert all(p.W.shape == (10, 3072) and p.W.dtype == np.float32 for p in points)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("regularizer", ["l1", "l2", "elasticnet"])
def test_penalty_falls_and_data_loss_rises_along_the_path(table, loss, regularizer):
    rows = path(table, loss, regularizer)
    assert (np.diff(rows["penalty"]) <= 0).all(), rows[["strength", "penalty"]]
    assert rows["penalty"].iloc[-1] < 0.7 * rows["penalty"].iloc[0]
    assert rows["data_loss"].iloc[-1] > rows["data_loss"].iloc[0]


@pytest.mark.parametrize("loss", LOSSES)
def test_l1_sparsity_grows_while_l2_stays_dense(table, loss):
    for regularizer in ("l1", "elasticnet"):
        near_zero = path(table, loss, regularizer)["near_zero"].to_numpy()
        assert (np.diff(near_zero) >= 0).all(), near_zero
        assert near_zero[0] < 0.1 and near_zero[-1] == 1.0  # the strongest L1 zeroes every weight
    l2 = path(table, loss, "l2")
    assert (l2["near_zero"] < 0.1).all(), l2["near_zero"]


def test_too_strong_l1_loses_accuracy(table):
    for loss in LOSSES:
        rows = path(table, loss, "l1")
        assert rows["val_accuracy"].iloc[0] >= 0.9 and rows["val_accuracy"].iloc[-1] <= 0.2


def test_summary_and_sentences_hold_the_measured_numbers(table):
    summary = rp.path_summary(table)
    assert set(summary) == {f"{loss}-{reg}" for loss in LOSSES for reg in ("l1", "l2", "elasticnet")}
    l1 = path(table, "softmax", "l1")
    cells = summary["softmax-l1"]
    assert cells["best_val_accuracy"] == l1["val_accuracy"].max()
    assert cells["near_zero_at_strongest"] == 1.0 and cells["strength_at_strongest"] == 1.0
    sentence = rp.describe_templates(table, "softmax")
    assert f"{l1['near_zero'].iloc[0]:.0%}" in sentence and "100%" in sentence
    assert f"{path(table, 'softmax', 'l2')['penalty'].iloc[-1]:.4g}" in sentence
    curves = rp.describe_curves(table)
    assert f"softmax-l1 {cells['best_val_accuracy']:.4f} at λ={cells['best_strength']:g}" in curves


def test_template_strip_is_one_row_of_W_per_strength(points):
    strengths, templates = rp.template_strip(points, "svm", "l2", class_index=3)
    assert strengths == STRENGTHS and templates.shape == (len(STRENGTHS), 3072)
    np.testing.assert_array_equal(templates[2], points[len(STRENGTHS) + 2].W[3])
    with pytest.raises(ValueError, match="no path points for svm-none"):
        rp.template_strip(points, "svm", "none", class_index=3)


def test_pictures_are_written_and_reproducible(tmp_path, points, table):
    strips = {f"{loss}-{reg}": rp.template_strip(points, loss, reg, 7) for loss in LOSSES for reg in ("l1", "l2")}
    first = rp.plot_template_strips(strips, "horse", tmp_path / "a" / "templates.png")
    again = rp.plot_template_strips(strips, "horse", tmp_path / "b" / "templates.png")
    assert first.read_bytes() == again.read_bytes() and first.stat().st_size > 5000
    curves = rp.plot_path_curves(table, tmp_path / "curves.png")
    assert curves.stat().st_size > 5000
    with pytest.raises(ValueError, match="lacks columns"):
        rp.plot_path_curves(table.drop(columns="near_zero"), tmp_path / "bad.png")


@pytest.mark.parametrize("strengths", [[], [1e-3, 1e-4], [0.0, 1e-3], [1e-3, float("inf")], "1e-3"])
def test_bad_strength_grid_is_one_line(strengths):
    X, y = np.zeros((4, 3), np.float32), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"^strengths(\[\d\])?="):
        rp.regularization_path(X, y, X, y, losses={"svm": {"learning_rate": 0.1}}, regularizers=["l2"],
                               strengths=strengths)


def test_config_rejects_a_bad_path_setting():
    from conftest import ROOT

    from linclass.config import compose
    from linclass.settings import ConfigError

    for override, message in (
        ("studies.regularization_path.strengths=[1e-2,1e-3]", "strictly increasing"),
        ("studies.regularization_path.regularizers=[l3]",
         r"regularizers\[0\]='l3' is not one of 'none', 'l1', 'l2', 'elasticnet'$"),
        ("studies.regularization_path.train_subset=0", "train_subset=0"),
    ):
        with pytest.raises(ConfigError, match=message):
            compose(ROOT / "conf", [override])


def test_path_table_round_trips_through_csv(tmp_path, table):
    table.to_csv(tmp_path / "path.csv", index=False, float_format="%.8g")
    back = pd.read_csv(tmp_path / "path.csv")
    assert rp.describe_curves(back) == rp.describe_curves(table)
