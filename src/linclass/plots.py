"""The visual viewpoint: each row of W (C, 3072) is a template image; plus the study figures.

Every figure is written atomically (linclass.files.atomic_file) and with fixed
metadata (no software version, no creation date) so the same inputs give the same bytes.
Figures are built on matplotlib.figure.Figure (Agg), never on global pyplot state.
"""

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.image
import numpy as np
from matplotlib.figure import Figure

from linclass.data.cifar import as_images
from linclass.files import atomic_file
from linclass.settings import Studies, default

IMAGE_SIDE = 32
IMAGE_DIM = 3 * IMAGE_SIDE * IMAGE_SIDE  # 3072 = R plane + G plane + B plane, each row-major 32x32
SPARSITY_TOL = default(Studies, "near_zero_tol")  # |w| <= tol * max|W| counts as a zero weight


def _metadata(fmt):
    """Metadata that keeps the bytes independent of the matplotlib version and the time of day."""
    return {"png": {"Software": None}, "svg": {"Date": None, "Creator": None},
            "pdf": {"CreationDate": None, "Creator": None, "Producer": None}}.get(fmt)


def save_figure(fig, path):
    """Write a figure atomically; the format comes from the suffix of `path` (png, svg or pdf)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in ("png", "svg", "pdf"):
        raise ValueError(f"figure path must end in .png, .svg or .pdf, got {str(path)!r}")
    with matplotlib.rc_context({"svg.hashsalt": "linclass"}), atomic_file(path) as tmp:
        fig.savefig(tmp, format=fmt, metadata=_metadata(fmt), dpi=100)
    return path


def set_margins(fig, left, right, bottom, top, **space):
    """The figure's margins in inches (subplots_adjust takes fractions of it), chosen for the labels it holds:
    fig.tight_layout() would measure every label first, which costs about as much as drawing the figure."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        **space)


def _check_W(W):
    W = np.asarray(W)
    if W.ndim != 2 or W.shape[1] != IMAGE_DIM:
        raise ValueError(f"W must have shape (C, {IMAGE_DIM}) (32x32x3 templates), got {W.shape}")
    return W


def _check_names(class_names, num_classes):
    class_names = [str(name) for name in class_names]
    if len(class_names) != num_classes:
        raise ValueError(f"need one class name per row of W ({num_classes}), got {len(class_names)}")
    return class_names


# ---------------------------------------------------------------- templates

def template_images(W):
    """Rows of W (C, 3072) as uint8 pictures (C, 32, 32, 3).

    Each template is rescaled min-max to 0..255 on its own (like CS231n): 255 * (w - min) / (max - min).
    A constant row (max == min) becomes a black image.
    """
    W = _check_W(W).astype(np.float64)  # a copy of at most C * 3072 numbers: exact rescaling
    low = W.min(axis=1, keepdims=True)
    span = W.max(axis=1, keepdims=True) - low
    scaled = 255.0 * (W - low) / np.where(span > 0, span, 1.0)
    images = np.rint(scaled).astype(np.uint8)
    return as_images(images)


def _safe_name(name):
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name)


def save_template_pngs(W, class_names, out_dir, upscale=8):
    """One PNG per class, `template_<idx>_<name>.png`, upscaled by nearest neighbour (32*upscale px square)."""
    images = template_images(W)
    class_names = _check_names(class_names, images.shape[0])
    if not isinstance(upscale, (int, np.integer)) or upscale < 1:
        raise ValueError(f"upscale must be an integer >= 1, got {upscale!r}")
    out_dir = Path(out_dir)
    big = images.repeat(upscale, axis=1).repeat(upscale, axis=2)  # (C, 32u, 32u, 3)
    paths = []
    for idx, (name, image) in enumerate(zip(class_names, big)):
        path = out_dir / f"template_{idx}_{_safe_name(name)}.png"
        with atomic_file(path) as tmp:
            matplotlib.image.imsave(tmp, image, format="png", metadata={"Software": None})
        paths.append(path)
    return paths


MOSAIC_GAP = 4  # white pixels between two templates of a mosaic


def template_mosaic(rows):
    """Pictures (R, C, 32, 32, 3) uint8 as one picture of R rows and C columns, MOSAIC_GAP white pixels apart:
    shape (R * (32 + gap) - gap, C * (32 + gap) - gap, 3)."""
    rows = np.asarray(rows)
    R, C, side = rows.shape[0], rows.shape[1], IMAGE_SIDE + MOSAIC_GAP
    cells = np.full((R, C, side, side, 3), 255, dtype=np.uint8)
    cells[:, :, :IMAGE_SIDE, :IMAGE_SIDE] = rows
    return cells.transpose(0, 2, 1, 3, 4).reshape(R * side, C * side, 3)[:-MOSAIC_GAP, :-MOSAIC_GAP]


def _show_mosaic(ax, rows, column_labels, row_labels=None):
    """One image of all templates, labelled above its columns (and left of its rows): one axes, not one per
    template, so a figure of 80 templates draws in a fraction of the time."""
    rows = np.asarray(rows)
    centers = (IMAGE_SIDE - 1) / 2 + (IMAGE_SIDE + MOSAIC_GAP) * np.arange(max(rows.shape[:2]))
    ax.imshow(template_mosaic(rows), interpolation="nearest")
    ax.set_xticks(centers[:rows.shape[1]], column_labels, fontsize=9)
    ax.set_yticks(centers[:rows.shape[0]], row_labels if row_labels is not None else [""] * rows.shape[0],
                  fontsize=10)
    ax.tick_params(length=0, top=True, labeltop=True, bottom=False, labelbottom=False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def plot_template_grid(W, class_names, path, title):
    """One labeled row of the C templates of W (C, 3072)."""
    images = template_images(W)
    class_names = _check_names(class_names, images.shape[0])
    C = images.shape[0]
    fig = Figure(figsize=(1.3 * C, 1.9))
    _show_mosaic(fig.subplots(), images[None], class_names)
    fig.suptitle(title)
    set_margins(fig, left=0.1, right=0.1, bottom=0.1, top=0.75)
    return save_figure(fig, path)


def plot_templates_comparison(models, class_names, path):
    """Templates of several models: rows = model names (e.g. "svm-l2"), columns = classes."""
    if not models:
        raise ValueError("models must hold at least one {name: W} entry, got none")
    rows = {name: template_images(W) for name, W in models.items()}
    C = next(iter(rows.values())).shape[0]
    class_names = _check_names(class_names, C)
    for name, images in rows.items():
        if images.shape[0] != C:
            raise ValueError(f"model {name!r} has {images.shape[0]} templates, expected {C} like the others")
    fig = Figure(figsize=(1.3 * C + 1.2, 1.5 * len(rows) + 0.4))
    _show_mosaic(fig.subplots(), np.stack(list(rows.values())), class_names, list(rows))
    fig.suptitle("class templates per model")
    set_margins(fig, left=1.4, right=0.1, bottom=0.1, top=0.75)   # model names of up to about 20 characters
    return save_figure(fig, path)


# ---------------------------------------------------------------- weights

def weight_sparsity(W, tol=SPARSITY_TOL):
    """Fraction of near-zero weights: mean(|w| <= tol * max|W|) over all entries (python float).

    tol is relative to the largest weight so the number does not depend on the scale of W
    (default 1e-2: smaller than 1% of the largest magnitude). An all-zero W has sparsity 1.0.
    """
    W = np.asarray(W)
    if W.size == 0:
        raise ValueError("W must not be empty")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    magnitude = np.abs(W)
    return float(np.mean(magnitude <= tol * magnitude.max()))


def plot_weight_histograms(models, path, tol=SPARSITY_TOL, bins=101):
    """One histogram of the weights per model, titled with its near-zero fraction (see weight_sparsity).

    L1 piles weights up at exactly 0 (sparse); L2 spreads them into a bell of small values.
    """
    if not models:
        raise ValueError("models must hold at least one {name: W} entry, got none")
    ncols = min(4, len(models))  # the grid's rows are usually one loss each
    nrows = -(-len(models) // ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.8 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax in axes[len(models):]:
        ax.set_visible(False)
    for ax, (name, W) in zip(axes, models.items()):
        counts, edges = np.histogram(np.asarray(W).ravel(), bins=bins)
        ax.stairs(counts, edges, fill=True, color="tab:blue")  # one artist, not a bar per bin
        ax.set_yscale("log")
        ax.set_title(f"{name}\nnear-zero: {weight_sparsity(W, tol):.1%}", fontsize=10)
        ax.set_xlabel("weight")
    for ax in axes[::ncols]:
        ax.set_ylabel("count (log)")
    fig.suptitle(f"weights (near-zero: |w| <= {tol:g} max|W|)")
    set_margins(fig, left=0.75, right=0.2, bottom=0.5, top=0.9, wspace=0.3, hspace=0.6)
    return save_figure(fig, path)


# ---------------------------------------------------------------- training and evaluation

def _require_columns(df, columns, name):
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}; it has {list(df.columns)}")


def plot_loss_curves(steps_df, epochs_df, path, title):
    """Left: data / regularization / total loss per SGD step. Right: train / val accuracy per epoch."""
    _require_columns(steps_df, ["step", "data_loss", "reg_loss", "total_loss"], "steps_df")
    _require_columns(epochs_df, ["epoch", "train_accuracy", "val_accuracy"], "epochs_df")
    fig = Figure(figsize=(12, 3.6))
    loss_ax, acc_ax = fig.subplots(1, 2)
    for column, label in (("data_loss", "data loss"), ("reg_loss", "regularization"), ("total_loss", "total")):
        loss_ax.plot(steps_df["step"], steps_df[column], label=label, linewidth=1)
    loss_ax.set_xlabel("SGD step")
    loss_ax.set_ylabel("loss")
    legend_beside(loss_ax)
    acc_ax.plot(epochs_df["epoch"], epochs_df["train_accuracy"], marker="o", label="train")
    if np.isfinite(np.asarray(epochs_df["val_accuracy"], dtype=float)).any():
        acc_ax.plot(epochs_df["epoch"], epochs_df["val_accuracy"], marker="o", label="val")
    acc_ax.set_ylim(0, 1)
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("accuracy")
    legend_beside(acc_ax)
    fig.suptitle(title)
    set_margins(fig, left=0.7, right=0.9, bottom=0.55, top=0.45, wspace=0.45)   # room for the legends beside
    return save_figure(fig, path)


def plot_confusion_matrix(cm, class_names, path, title):
    """Counts (C, C), rows = true class, columns = predicted class, each cell annotated."""
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C), got {cm.shape}")
    class_names = _check_names(class_names, cm.shape[0])
    C = cm.shape[0]
    fig = Figure(figsize=(0.7 * C + 2.5, 0.7 * C + 1.5))
    ax = fig.subplots()
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(C), class_names, rotation=45, ha="right")
    ax.set_yticks(range(C), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    dark = cm > cm.max() / 2
    for (t, p), count in np.ndenumerate(cm):  # text labels, not numerics
        ax.text(p, t, str(count), ha="center", va="center", fontsize=7, color="white" if dark[t, p] else "black")
    ax.set_title(title)
    set_margins(fig, left=1.5, right=0.2, bottom=1.4, top=0.45)   # class names of up to about 12 characters
    return save_figure(fig, path)


def plot_weight_scaling(df, path, loss_column):
    """The scaling study: `loss_column` against the scale s of (sW, sb) on a log2 axis, one line per model."""
    _require_columns(df, ["model", "scale", loss_column], "scaling table")
    fig = Figure(figsize=(7.5, 3.8))
    ax = fig.subplots()
    for model, rows in df.groupby("model", sort=False):
        rows = rows.sort_values("scale")
        ax.plot(rows["scale"], rows[loss_column], marker="o", label=str(model))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("scale s (weights sW, bias sb)")
    ax.set_ylabel(loss_column)
    ax.set_title(f"{loss_column} when W is scaled")
    legend_beside(ax)
    set_margins(fig, left=0.8, right=2.0, bottom=0.55, top=0.35)   # model names of up to about 28 characters
    return save_figure(fig, path)


def plot_training_losses(curves, path, title="Training loss", columns=4):
    """Small multiples (training_losses_figure), written to `path`."""
    return save_figure(training_losses_figure(curves, title, columns), path)


def every_kth(steps, values, points):
    """At most about `points` of a curve: every k-th step and the last one (values as they are, not means)."""
    steps, values = np.asarray(steps), np.asarray(values)
    keep = np.unique(np.r_[np.arange(0, len(values), -(-len(values) // points)), len(values) - 1])
    return steps[keep], values[keep]


def training_losses_figure(curves, title="Training loss", columns=4, points=400):
    """Small multiples: one panel per model (`columns` a row; the grid's rows are its losses), its total loss
    against the SGD step in colour over those of the other models of the same loss in light grey, on a log axis
    shared by the models of that loss: the hinge loss and the cross-entropy have different units (C - 1 and
    ln C at the start), so a model is compared with its own kind only. A model's loss is the first part of its
    name (svm-l2, softmax-l2-hog_hist). curves: {model name: (steps (N,), loss (N,))}, each drawn at about
    `points` steps (every_kth: a 3-inch panel shows no more)."""
    if not curves:
        raise ValueError("no training curves to plot")
    curves = {name: every_kth(steps, loss, points) for name, (steps, loss) in curves.items()}
    ncols = min(columns, len(curves))
    nrows = -(-len(curves) // ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.6 * nrows + 0.6))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, squeeze=False)).ravel()
    for ax in axes[len(curves):]:
        ax.set_visible(False)
    loss_of = {name: name.split("-")[0] for name in curves}
    scale_of = {}   # loss -> the first panel of that loss, whose y axis the others share
    names = list(curves)
    for index, (ax, (name, (steps, loss))) in enumerate(zip(axes, curves.items())):
        for other, (other_steps, other_loss) in curves.items():
            if other != name and loss_of[other] == loss_of[name]:
                ax.plot(other_steps, other_loss, color="0.85", linewidth=0.8)
        ax.plot(steps, loss, color="tab:blue", linewidth=1.2)
        if loss_of[name] in scale_of:
            ax.sharey(scale_of[loss_of[name]])
        else:
            scale_of[loss_of[name]] = ax
        if index % ncols and loss_of[names[index - 1]] == loss_of[name]:
            ax.tick_params(axis="y", which="both", labelleft=False)   # the panel on its left labels the axis
        ax.set_title(f"{name}: final {np.asarray(loss)[-1]:.3f}", fontsize=10)
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    for ax in axes[::ncols]:
        ax.set_ylabel("total loss (log)")
    for ax in axes[(nrows - 1) * ncols:]:
        ax.set_xlabel("SGD step")
    fig.suptitle(f"{title} (grey: the other models of the same loss, on its axis)")
    set_margins(fig, left=0.8, right=0.15, bottom=0.55, top=0.75, wspace=0.08, hspace=0.4)
    return fig


def legend_beside(ax, **kwargs):
    """The axes' legend to the right of its plotting area, where it covers no data."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, **kwargs)


# ---------------------------------------------------------------- what a features model learned

def hog_cell_weights(W_hog, orientations, cells_per_side):
    """Per class, the weight of each cell's orientation bins (C, cells, cells, orientations): W's HOG columns are
    laid out (block row, block column, cell row, cell column, orientation) over 2 x 2 blocks at stride one cell,
    so a cell appears in up to 4 blocks; its weight is the sum over them."""
    W_hog = np.asarray(W_hog)
    blocks = cells_per_side - 1
    if W_hog.shape[1] != blocks * blocks * 4 * orientations:
        raise ValueError(f"HOG weights must have {blocks * blocks * 4 * orientations} columns for {cells_per_side}x"
                         f"{cells_per_side} cells of {orientations} orientations, got {W_hog.shape[1]}")
    per_block = W_hog.reshape(len(W_hog), blocks, blocks, 2, 2, orientations)
    cells = np.zeros((len(W_hog), cells_per_side, cells_per_side, orientations))
    for i in (0, 1):
        for j in (0, 1):
            cells[:, i:i + blocks, j:j + blocks] += per_block[:, :, :, i, j]
    return cells


def glyph_segments(cells, signed, origin=(0.0, 0.0)):
    """HOG glyph of one class: in each cell, one stroke per orientation along the edge it stands for
    (perpendicular to the gradient), as long as the bin's positive weight (the class's evidence for that edge)
    allows; cells (side, side, orientations). Returns (segments (n, 2, 2), widths (n,)), cell (r, c) centred
    at origin + (c, side - 1 - r) so that the picture stands upright."""
    side, orientations = cells.shape[0], cells.shape[2]
    span = 360 if signed else 180
    angles = np.deg2rad((np.arange(orientations) + 0.5) * span / orientations + 90)  # the edge, not the gradient
    positive = np.clip(cells, 0, None)
    strength = positive / (positive.max() or 1.0)
    r, c, o = np.nonzero(strength)
    half = 0.45 * strength[r, c, o]
    dx, dy = half * np.cos(angles[o]), half * np.sin(angles[o])
    x, y = origin[0] + c, origin[1] + side - 1 - r
    segments = np.stack([np.stack([x - dx, y - dy], 1), np.stack([x + dx, y + dy], 1)], 1)
    return segments, 0.5 + 1.5 * strength[r, c, o]


def _bins_heatmap(ax, weights, colours, class_names, title):
    """Classes x bins, red for evidence for the class, blue against; under it, a strip in each bin's colour."""
    limit = float(np.abs(weights).max()) or 1.0
    bins = weights.shape[1]
    ax.imshow(weights, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto",
              extent=(-0.5, bins - 0.5, len(weights) - 0.5, -0.5))
    ax.imshow(np.asarray(colours)[None], aspect="auto",
              extent=(-0.5, bins - 0.5, len(weights) + 0.5, len(weights) - 0.3))
    ax.set_ylim(len(weights) + 0.5, -0.5)
    ax.set_yticks(range(len(weights)), class_names, fontsize=8)
    ax.tick_params(labelleft=ax.get_subplotspec().is_first_col())   # the class names once, at the left
    ax.set_xticks([])
    ax.set_title(title, fontsize=8)


def plot_feature_weights(W, layout, class_names, path, title):
    """What a features model learned: per class (rows), its weights on the hue bins and on the value bins
    (heatmaps over a strip of the bins' colours), and the HOG glyph of its weights per cell at the finest cell
    size. layout is the features stage's layout.json ({"parts": {name: [start, stop]}, "orientations",
    "signed"}). Three axes in all: a grid of small axes per class cost seconds per figure."""
    import matplotlib.colors
    from matplotlib.collections import LineCollection

    W = np.asarray(W)
    class_names = _check_names(class_names, len(W))
    parts = {name: slice(*bounds) for name, bounds in layout["parts"].items()}
    hogs = sorted(int(name[3:]) for name in parts if name.startswith("hog"))
    panels = [name for name in ("hue", "value") if name in parts] + ([f"hog{hogs[0]}"] if hogs else [])
    if not panels or W.shape[1] != max(part.stop for part in parts.values()):
        raise ValueError(f"W has {W.shape[1]} columns; the layout {layout['parts']} does not describe them")
    fig = Figure(figsize=(3.0 * len(panels), 0.4 * len(W) + 1.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, part in zip(axes, panels, strict=True):
        weights = W[:, parts[part]]
        if part == "hue":
            hues = np.arange(weights.shape[1]) / weights.shape[1]
            colours = matplotlib.colors.hsv_to_rgb(np.stack([hues, np.ones_like(hues), np.ones_like(hues)], 1))
            _bins_heatmap(ax, weights, colours, class_names, "weights on hue bins")
        elif part == "value":
            greys = np.linspace(0.1, 0.9, weights.shape[1])
            _bins_heatmap(ax, weights, np.stack([greys] * 3, 1), class_names, "weights on value bins")
        else:   # one glyph per class, two to a row
            side = IMAGE_SIDE // hogs[0]
            cells = hog_cell_weights(weights, layout["orientations"], side)
            per_row, step = 2, side + 1
            rows = -(-len(W) // per_row)
            drawn = [glyph_segments(cells[k], layout["signed"],
                                    origin=(step * (k % per_row), step * (rows - 1 - k // per_row)))
                     for k in range(len(W))]
            ax.add_collection(LineCollection(np.concatenate([d[0] for d in drawn]), colors="white",
                                             linewidths=np.concatenate([d[1] for d in drawn])))
            for k, name in enumerate(class_names):
                ax.text(step * (k % per_row) + (side - 1) / 2, step * (rows - 1 - k // per_row) - 0.75, name,
                        color="white", ha="center", va="center", fontsize=7)
            ax.set_facecolor("black")
            ax.set_xlim(-0.5, step * per_row - 1.5)
            ax.set_ylim(-1.2, step * rows - 1.5)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"HOG glyph per class, {hogs[0]}x{hogs[0]} cells", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.1, right=0.98, top=1 - 0.6 / fig.get_figheight(), bottom=0.03, wspace=0.35)
    return save_figure(fig, path)
