"""The visual viewpoint: templates as images, the figures of the studies."""

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from linclass.plots import (
    plot_confusion_matrix,
    plot_loss_curves,
    plot_template_grid,
    plot_templates_comparison,
    plot_weight_histograms,
    plot_weight_scaling,
    save_template_pngs,
    template_images,
    weight_sparsity,
)

NAMES = ["plane", "car", "bird"]


def random_W(seed=0, C=3):
    return np.random.default_rng(seed).standard_normal((C, 3072)).astype(np.float32)


def test_template_images_shape_and_range():
    images = template_images(random_W())
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images.reshape(3, -1).min(axis=1), 0)
    np.testing.assert_array_equal(images.reshape(3, -1).max(axis=1), 255)


def test_red_plane_becomes_a_red_image():
    W = np.zeros((1, 3072), dtype=np.float32)
    pattern = np.linspace(0.0, 1.0, 1024, dtype=np.float32)  # a ramp, row-major over the 32x32 pixels
    W[0, :1024] = pattern  # R plane first
    image = template_images(W)[0]
    assert image[..., 1].max() == 0 and image[..., 2].max() == 0  # no green, no blue
    assert image[0, 0, 0] == 0 and image[31, 31, 0] == 255
    assert image[0, 1, 0] < image[1, 0, 0]  # row-major: one row down is 32 steps along the ramp


def test_blue_plane_is_last():
    W = np.zeros((1, 3072))
    W[0, 2048:] = 1.0
    image = template_images(W)[0]
    assert (image[..., 2] == 255).all() and (image[..., :2] == 0).all()


def test_constant_template_is_black_not_nan():
    images = template_images(np.full((2, 3072), 0.7))
    assert (images == 0).all()


@pytest.mark.parametrize("shape", [(3, 3071), (3072,), (2, 32, 32, 3)])
def test_template_images_rejects_other_shapes(shape):
    with pytest.raises(ValueError, match="3072"):
        template_images(np.zeros(shape))


def test_template_pngs_written_and_readable(tmp_path):
    paths = save_template_pngs(random_W(), NAMES, tmp_path / "templates", upscale=8)
    assert [p.name for p in paths] == ["template_0_plane.png", "template_1_car.png", "template_2_bird.png"]
    first = matplotlib.image.imread(paths[0])
    assert first.shape[:2] == (256, 256)
    # nearest-neighbour upscaling: every 8x8 block is one template pixel
    expected = template_images(random_W())[0] / 255
    np.testing.assert_allclose(first[::8, ::8, :3], expected, atol=1e-6)
    np.testing.assert_allclose(first[7::8, 7::8, :3], expected, atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "templates").iterdir()) == sorted(p.name for p in paths)


def test_template_pngs_are_deterministic(tmp_path):
    a = save_template_pngs(random_W(), NAMES, tmp_path / "a")
    b = save_template_pngs(random_W(), NAMES, tmp_path / "b")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def test_template_pngs_need_one_name_per_class(tmp_path):
    with pytest.raises(ValueError, match="class name"):
        save_template_pngs(random_W(), NAMES[:2], tmp_path)


def test_grid_and_comparison_figures(tmp_path):
    grid = plot_template_grid(random_W(), NAMES, tmp_path / "grid.png", title="svm")
    comparison = plot_templates_comparison({"svm-l2": random_W(1), "softmax-l1": random_W(2)}, NAMES,
                                           tmp_path / "comparison.png")
    grid_image, comparison_image = matplotlib.image.imread(grid), matplotlib.image.imread(comparison)
    assert grid_image.shape[1] > grid_image.shape[0]  # one wide row
    assert comparison_image.shape[0] > grid_image.shape[0]  # two rows of models
    assert sorted(p.name for p in tmp_path.iterdir()) == ["comparison.png", "grid.png"]  # no temp files


def test_template_mosaic_places_each_picture_in_its_cell_with_white_gaps():
    from linclass.plots import MOSAIC_GAP, template_mosaic

    rows = np.random.default_rng(0).integers(0, 255, (2, 3, 32, 32, 3), dtype=np.uint8)
    mosaic = template_mosaic(rows)
    side = 32 + MOSAIC_GAP
    assert mosaic.shape == (2 * side - MOSAIC_GAP, 3 * side - MOSAIC_GAP, 3) and mosaic.dtype == np.uint8
    for r in range(2):
        for c in range(3):
            assert np.array_equal(mosaic[r * side:r * side + 32, c * side:c * side + 32], rows[r, c])
    assert (mosaic[32:side] == 255).all() and (mosaic[:, 32:side] == 255).all()  # the gaps


def test_figures_are_deterministic(tmp_path):
    a = plot_templates_comparison({"svm-l2": random_W(1)}, NAMES, tmp_path / "a.png")
    b = plot_templates_comparison({"svm-l2": random_W(1)}, NAMES, tmp_path / "b.png")
    assert a.read_bytes() == b.read_bytes()


def test_comparison_rejects_mismatched_models(tmp_path):
    with pytest.raises(ValueError, match="templates"):
        plot_templates_comparison({"a": random_W(C=3), "b": random_W(C=2)}, NAMES, tmp_path / "c.png")


def test_weight_sparsity_by_hand():
    W = np.array([[10.0, 0.05, -0.1, 0.0], [-0.2, 5.0, 0.0, 3.0]])
    # tol 1e-2 of max|W| = 10 -> |w| <= 0.1 counts: 0.05, -0.1, 0.0, 0.0 -> 4 of 8
    assert weight_sparsity(W) == 0.5
    assert weight_sparsity(W, tol=0.025) == 5 / 8  # adds -0.2
    assert weight_sparsity(100 * W) == 0.5  # relative to the largest weight: scale-free
    assert weight_sparsity(np.zeros((2, 2))) == 1.0


def test_weight_histograms_and_scaling_plot(tmp_path):
    rng = np.random.default_rng(0)
    l1_like = rng.standard_normal((3, 3072)) * (rng.random((3, 3072)) < 0.1)
    hist = plot_weight_histograms({"l1": l1_like, "l2": random_W()}, tmp_path / "hist.png")
    df = pd.DataFrame({"model": ["a", "a", "b", "b"], "scale": [1.0, 2.0, 1.0, 2.0],
                       "softmax_loss": [1.0, 0.5, 2.0, 1.0]})
    scaling = plot_weight_scaling(df, tmp_path / "scaling.svg", "softmax_loss")
    assert matplotlib.image.imread(hist).shape[1] > 0
    assert scaling.read_text().lstrip().startswith("<?xml")
    with pytest.raises(ValueError, match="hinge_loss"):
        plot_weight_scaling(df, tmp_path / "x.png", "hinge_loss")


def test_loss_curves_and_confusion_matrix(tmp_path):
    steps = pd.DataFrame({"step": [1, 2, 3], "epoch": [1, 1, 2], "data_loss": [3.0, 2.0, 1.5],
                          "reg_loss": [0.1, 0.2, 0.2], "total_loss": [3.1, 2.2, 1.7]})
    epochs = pd.DataFrame({"epoch": [1, 2], "train_accuracy": [0.3, 0.4], "val_accuracy": [np.nan, np.nan],
                           "learning_rate": [1e-3, 1e-3]})
    curves = plot_loss_curves(steps, epochs, tmp_path / "curves.png", title="svm-l2")
    cm = plot_confusion_matrix(np.array([[5, 1, 0], [2, 3, 1], [0, 0, 6]]), NAMES, tmp_path / "cm.png", "cm")
    assert matplotlib.image.imread(curves).ndim == 3 and matplotlib.image.imread(cm).ndim == 3
    with pytest.raises(ValueError, match="total_loss"):
        plot_loss_curves(steps.drop(columns="total_loss"), epochs, tmp_path / "bad.png", title="x")
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(np.zeros((2, 3)), NAMES, tmp_path / "bad.png", "x")


def test_unknown_figure_format_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"\.png"):
        plot_template_grid(random_W(), NAMES, tmp_path / "grid.gif", title="x")




def test_every_training_curve_has_its_own_panel_beside_the_models_of_its_loss():
    """8 models: 8 visible panels on log axes; each draws the 4 curves of its loss (hinge and cross-entropy have
    other units), its own in colour on top, on the axis the models of its loss share."""
    from linclass.plots import training_losses_figure

    steps = np.arange(1, 51)
    curves = {f"{loss}-{reg}": (steps, (2.0 + i) / np.sqrt(steps))
              for i, (loss, reg) in enumerate((lo, r) for lo in ("svm", "softmax") for r in ("none", "l1", "l2", "en"))}
    fig = training_losses_figure(curves, columns=4)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 8
    for ax, (name, (_, loss)) in zip(panels, curves.items()):
        assert len(ax.lines) == 4 and ax.get_yscale() == "log"
        assert ax.get_title().startswith(f"{name}: final") and np.array_equal(ax.lines[-1].get_ydata(), loss)
        assert ax.lines[-1].get_color() != ax.lines[0].get_color()   # its own curve stands out from the grey
        same = [other for other in curves if other.split("-")[0] == name.split("-")[0]]
        assert sorted(line.get_ydata()[0] for line in ax.lines) == sorted(curves[m][1][0] for m in same)
    fig.canvas.draw()
    assert len({ax.get_ylim() for ax in panels[:4]}) == 1 and len({ax.get_ylim() for ax in panels[4:]}) == 1
    assert panels[0].get_ylim() != panels[4].get_ylim()   # one scale per loss: its models compare by eye
    labelled = [ax.yaxis.get_major_ticks()[0].label1.get_visible() for ax in panels]
    assert labelled == [True, False, False, False] * 2   # the first panel of a row labels the axis its row shares
    long = {"a": (np.arange(1, 9001), np.linspace(3, 1, 9000)), "b": (np.arange(1, 9001), np.linspace(2, 1, 9000))}
    drawn = training_losses_figure(long, points=400).axes[0].lines[-1]
    assert 300 <= len(drawn.get_xdata()) <= 401 and drawn.get_xdata()[[0, -1]].tolist() == [1, 9000]
    assert drawn.get_ydata()[-1] == 1.0   # the last step's loss itself, not a mean


def test_a_legend_beside_the_axes_covers_no_data():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from linclass.plots import legend_beside

    fig = Figure(figsize=(7.5, 3.8))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i in range(8):
        ax.plot([1, 2, 4], [i, i + 1, i + 2], label=f"model {i}")
    legend = legend_beside(ax)
    fig.tight_layout()
    renderer = fig.canvas.get_renderer()
    box, area = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    assert box.x0 >= area.x1 and box.x1 <= fig.bbox.x1 + 1   # right of the plotting area, inside the figure
