"""Every figure renders to a real PNG of sensible size, and text stays legible: class names on the
axes, numbers per cell only where they fit, no tick label overlapping another."""

import itertools

import numpy as np
import pytest
from PIL import Image

from yingshe.data.sources import FASHION_CLASSES
from yingshe.evaluate import figures, plots

FASHION = FASHION_CLASSES
CIFAR100_LIKE = [
    f"{name}_{i}" for i, name in enumerate(["aquarium_fish", "sweet_pepper", "willow_tree"] * 34)
][:100]


def assert_real_png(path, min_side=300, max_side=4000):
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert min_side <= width <= max_side and min_side <= height <= max_side, image.size
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
    assert pixels.std() > 5, "not a blank canvas"


def matrix(k: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    m = rng.integers(0, 4, (k, k))
    np.fill_diagonal(m, rng.integers(20, 60, k))
    return m.tolist()


def tick_boxes(fig, axis: str):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    labels = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    return [label.get_window_extent(renderer) for label in labels if label.get_text()]


def overlaps(boxes) -> list[tuple[int, int]]:
    return [(i, j) for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2) if a.overlaps(b)]


def test_confusion_matrix_names_every_class_and_numbers_every_cell_for_ten_classes(tmp_path):
    fig = plots.confusion_figure(matrix(10), FASHION, normalize=False)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == FASHION
    assert [t.get_text() for t in ax.get_xticklabels()] == FASHION
    assert len(ax.texts) == 100
    assert not overlaps(tick_boxes(fig, "y"))
    width, height = fig.bbox.width, fig.bbox.height
    for box in tick_boxes(fig, "x") + tick_boxes(fig, "y"):
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, "label clipped"
    path = plots.confusion_matrix_plot(matrix(10), FASHION, tmp_path / "cm.png", normalize=True)
    assert_real_png(path)


def test_confusion_matrix_of_a_hundred_classes_drops_cell_numbers_and_keeps_labels_apart(tmp_path):
    fig = plots.confusion_figure(matrix(100), CIFAR100_LIKE, normalize=True)
    assert len(fig.axes[0].texts) == 0
    for axis in ("x", "y"):
        boxes = tick_boxes(fig, axis)
        assert len(boxes) == 100 and not overlaps(boxes), axis
    assert_real_png(
        plots.confusion_matrix_plot(matrix(100), CIFAR100_LIKE, tmp_path / "cm.png"), max_side=4000
    )


def test_training_curves_and_comparison(tmp_path):
    history = [
        {
            "epoch": e,
            "train_loss": 2 / e,
            "val_loss": 2.2 / e,
            "train_accuracy": 1 - 0.5 / e,
            "val_accuracy": 1 - 0.6 / e,
            "lr": 1e-3 / e,
        }
        for e in range(1, 6)
    ]
    assert_real_png(plots.training_curves(history, tmp_path / "curves.png", "seed-cnn on fashion-mnist"))
    assert_real_png(plots.compare_curves({"a": history, "b": history[:3]}, tmp_path / "compare.png"))


def test_one_epoch_curves_have_whole_epoch_ticks_markers_and_the_best_epoch(tmp_path, monkeypatch):
    row = {
        "epoch": 1,
        "train_loss": 2.0,
        "val_loss": 2.1,
        "train_accuracy": 0.3,
        "val_accuracy": 0.25,
        "lr": 1e-3,
    }
    drawn = []
    monkeypatch.setattr(plots, "save", lambda fig, path: drawn.append(fig) or path)
    plots.training_curves([row], tmp_path / "curves.png", "one epoch", best_epoch=1)
    for ax in drawn[0].axes:
        assert list(ax.get_xticks()) == [1] and ax.get_xlim() == (0.5, 1.5)
        lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 1 and line.get_xdata()[0] == 1]
        assert all(
            line.get_marker() not in (None, "None", "") for line in lines if line.get_linestyle() != ":"
        )
        assert any(line.get_label() == "best (epoch 1)" for line in ax.get_lines())


def test_reliability_diagram(tmp_path):
    edges = [i / 15 for i in range(16)]
    calibration = {
        "edges": edges,
        "count": [0] * 5 + [10] * 10,
        "confidence": edges[:-1],
        "accuracy": edges[1:],
    }
    assert_real_png(plots.reliability_diagram(calibration, 0.0312, tmp_path / "rel.png"))


@pytest.mark.parametrize("channels", [1, 3])
def test_error_grid_and_explanation_figure(tmp_path, channels):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 28, 28, channels), dtype=np.uint8)
    heat = rng.random((6, 28, 28), dtype=np.float32)
    captions = [f"true: {FASHION[i]}\npred: {FASHION[-i - 1]} (9{i}%)" for i in range(6)]
    assert_real_png(plots.error_grid(images, heat, captions, tmp_path / "grid.png", "Most confidently wrong"))
    top = [("Ankle boot", 0.7), ("Sneaker", 0.2), ("Sandal", 0.1)]
    path = plots.explanation_figure(
        images[0], heat[0], top, "Sneaker", "gradcam", "x/boot.png", tmp_path / "e.png"
    )
    assert_real_png(path, min_side=250)


def label_rows(f1s: list[float]) -> list[dict]:
    """`per_class` rows of a multi-label report on 100 images, one per F1 (counts made up to match)."""
    rows = []
    for i, f1 in enumerate(f1s):
        tp = round(40 * f1)
        rows.append(
            {
                "class": f"label_{i}_{'x' * 30}",
                "f1": f1,
                "threshold": 0.5,
                "tp": tp,
                "fp": 40 - tp,
                "fn": 40 - tp,
                "tn": 20 + tp,
            }
        )
    return rows


def test_weakest_labels_come_first_and_a_label_never_seen_nor_called_is_not_weak():
    rows = label_rows([0.9, 0.2, 0.5, 0.2])
    rows[3]["fn"] += 1  # same F1 as label 1, one more error: first
    rows.append({"class": "absent", "f1": 0.0, "threshold": 0.5, "tp": 0, "fp": 0, "fn": 0, "tn": 100})
    assert figures.weakest_labels(rows) == [3, 1, 2, 0, 4]
    assert figures.weakest_labels(rows, count=2) == [3, 1]


def test_label_confusion_panels_say_how_many_labels_they_show(tmp_path):
    rows = label_rows([0.1, 0.3, 0.6])
    fig = plots.label_confusion_figure(rows, total=45)
    assert "the 3 labels with the lowest F1 of 45" in fig.get_suptitle()
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.texts]
    assert len(axes) == 3 and all(len(ax.texts) == 4 for ax in axes)
    assert axes[0].get_title().startswith(plots.short(rows[0]["class"], plots.PANEL_NAME_CHARS))
    assert "TP 4" in [t.get_text().split("\n")[0] for t in axes[0].texts]
    assert "all 3 labels" in plots.label_confusion_figure(rows, total=3).get_suptitle()


def test_label_pr_panels_draw_a_curve_or_say_the_label_had_no_positive_image():
    rows = label_rows([0.1, 0.6])
    for row in rows:
        row.update(support=10, precision=0.6, recall=0.5, average_precision=0.7)
    curve = (np.array([0.5, 0.8, 1.0]), np.array([1.0, 0.5, 0.0]))  # (precision, recall)
    fig = plots.label_pr_figure(rows, [curve, None], total=2, images=100)
    first, second = [ax for ax in fig.axes if ax.get_visible()][:2]
    assert len(first.lines) >= 2  # the curve and the label's chance line
    assert "no positive image" in " ".join(t.get_text() for t in second.texts)
    assert not second.lines
    only_absent = plots.label_pr_figure(rows[1:], [None], total=2, images=100)  # no curve at all
    assert "the 1 labels with the lowest F1 of 2" in only_absent.get_suptitle()
