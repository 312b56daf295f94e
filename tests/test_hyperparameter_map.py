"""The hyperparameter map: the sweep's rows -> a learning rate x strength grid -> a heat map."""

import math

import numpy as np
import pandas as pd
import pytest

from linclass.orchestration.sweep import write_table
from linclass.studies import hyperparameter_map as hm

ROWS = [  # as the sweep's table gives them: sorted by validation accuracy, not by the grid
    {"experiment": "e1", "learning_rate": 0.05, "strength": 1e-3, "val_accuracy": 0.418},
    {"experiment": "e2", "learning_rate": 0.01, "strength": 1e-3, "val_accuracy": 0.402},
    {"experiment": "e3", "learning_rate": 0.05, "strength": 1e-2, "val_accuracy": 0.401},
    {"experiment": "e4", "learning_rate": 0.01, "strength": 1e-2, "val_accuracy": 0.385},
    {"experiment": "e5", "learning_rate": 0.10, "strength": 1e-3, "val_accuracy": None},  # failed
]


def test_grid_has_one_cell_per_row():
    learning_rates, strengths, values = hm.map_grid(ROWS)
    np.testing.assert_array_equal(learning_rates, [0.01, 0.05, 0.10])
    np.testing.assert_array_equal(strengths, [1e-3, 1e-2])
    assert values.shape == (3, 2)
    for row in ROWS:
        i, j = list(learning_rates).index(row["learning_rate"]), list(strengths).index(row["strength"])
        expected = row["val_accuracy"]
        assert (math.isnan(values[i, j]) if expected is None else values[i, j] == expected), row
    assert math.isnan(values[2, 1])  # no row for (0.1, 1e-2)
    assert hm.best_cell(learning_rates, strengths, values) == (0.05, 1e-3, 0.418)


def test_bad_rows_are_one_line_errors():
    with pytest.raises(ValueError, match="no rows"):
        hm.map_grid([])
    with pytest.raises(ValueError, match="two sweep rows for learning_rate=0.05, strength=0.001"):
        hm.map_grid([*ROWS, {"learning_rate": 0.05, "strength": 1e-3, "val_accuracy": 0.3}])
    with pytest.raises(ValueError, match=r"row 0 \(x\): strength=None is not a number > 0"):
        hm.map_grid([{"experiment": "x", "learning_rate": 0.05, "strength": None, "val_accuracy": 0.3}])
    with pytest.raises(ValueError, match="all failed"):
        hm.best_cell(*hm.map_grid([{"learning_rate": 0.05, "strength": 1e-3, "val_accuracy": None}]))


def test_sweep_table_csv_draws_the_same_map(tmp_path):
    rows = [{**row, "model": "softmax-l2", "epochs": 20, "train_accuracy": 0.5, "test_accuracy": 0.4}
            for row in ROWS]
    csv = write_table(rows, tmp_path / "sweeps" / "softmax-l2.csv")
    back = pd.read_csv(csv)
    assert list(back["experiment"]) == ["e2", "e4", "e1", "e3", "e5"]  # by learning rate, then strength
    np.testing.assert_array_equal(hm.map_grid(back.to_dict("records"))[2], hm.map_grid(ROWS)[2])


def test_heat_map_picture_and_sentence(tmp_path):
    grid = hm.map_grid(ROWS)
    first = hm.plot_map(*grid, tmp_path / "a.png", title="softmax-l2")
    again = hm.plot_map(*grid, tmp_path / "b.png", title="softmax-l2")
    assert first.stat().st_size > 5000 and first.read_bytes() == again.read_bytes()
    sentence = hm.describe("softmax-l2", *grid)
    assert sentence == ("softmax-l2: over 4 runs (learning rate 0.01 .. 0.1, λ 0.001 .. 0.01) the validation "
                        "accuracy ranges from 0.3850 to 0.4180, the best at learning rate 0.05 and λ=0.001.")


def test_committed_sweep_tables_are_complete_grids():
    """The documented sweeps behind conf/loss/ (sweeps/*.csv): every cell measured, the chosen rates best."""
    from conftest import ROOT

    from linclass.config import compose

    conf = compose(ROOT / "conf")
    for csv in sorted((ROOT / "sweeps").glob("*.csv")):
        learning_rates, strengths, values = hm.map_grid(pd.read_csv(csv).to_dict("records"))
        assert np.isfinite(values).all(), csv.name
        loss = csv.stem.split("-")[0]
        assert conf["loss"][loss]["learning_rate"] in learning_rates, csv.name
