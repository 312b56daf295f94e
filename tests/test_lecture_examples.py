"""The lecture's worked examples, reproduced exactly (slides can be wrong: we trust the maths)."""

import math

import numpy as np
import pytest

from linclass.core.losses import get_loss, hinge_loss, softmax_loss, softmax_probabilities
from linclass.core.model import class_scores
from linclass.core.regularizers import penalty

# The cat/car/frog score table: columns of the slide are examples; here rows are examples (N, C).
SCORES = np.array([
    [3.2, 5.1, -1.7],   # cat image, y = cat (0)
    [1.3, 4.9, 2.0],    # car image, y = car (1)
    [2.2, 2.5, -3.1],   # frog image, y = frog (2)
])
LABELS = np.array([0, 1, 2])


def test_hinge_losses_of_the_score_table():
    per_example = hinge_loss(SCORES, LABELS, reduction="none")
    np.testing.assert_allclose(per_example, [2.9, 0.0, 12.9], atol=1e-12)
    value, _ = hinge_loss(SCORES, LABELS)
    assert value == pytest.approx(15.8 / 3)
    assert round(value, 2) == 5.27


def test_softmax_of_the_cat_image():
    cat_scores = SCORES[:1]
    probabilities = softmax_probabilities(cat_scores)[0]
    np.testing.assert_allclose(probabilities, [0.13, 0.87, 0.00], atol=0.005)
    loss = softmax_loss(cat_scores, LABELS[:1], reduction="none")[0]
    assert round(loss, 2) == 2.04  # natural log
    # the slide's "0.89" is -log10(0.13): linclass uses the natural log, so it must NOT give 0.89
    assert abs(loss - 0.89) > 1.0


def test_four_pixel_image_scores():
    W = np.array([[0.2, -0.5, 0.1, 2.0],
                  [1.5, 1.3, 2.1, 0.0],
                  [0.0, 2.5, 0.2, -0.3]])
    x = np.array([[56.0, 231.0, 24.0, 2.0]])
    b = np.array([1.1, 3.2, -1.2])
    cat, dog, ship = class_scores(x, W, b)[0]
    assert cat == pytest.approx(-96.8)
    assert dog == pytest.approx(437.9)
    # The slide prints ship = 61.95, which is wrong for the printed W: with W[2, 1] = 2.5 the maths gives
    # 0*56 + 2.5*231 + 0.2*24 - 0.3*2 - 1.2 = 580.5. Even the original cs231n weight 0.25 gives 60.75;
    # 61.95 is 0.25*231 + 0.2*24 - 0.3*2 WITHOUT the bias -1.2 (the slide dropped b).
    assert ship == pytest.approx(580.5)
    assert ship != pytest.approx(61.95)
    W_original = W.copy()
    W_original[2, 1] = 0.25
    assert class_scores(x, W_original, b)[0, 2] == pytest.approx(60.75)
    assert class_scores(x, W_original, np.zeros(3))[0, 2] == pytest.approx(61.95)


def test_car_loss_stays_zero_when_W_is_doubled():
    # scores are linear in W (b = 0 here), so 2W doubles the scores; all car margins stay negative
    car_scores, car_label = SCORES[1:2], LABELS[1:2]
    assert hinge_loss(car_scores, car_label, reduction="none")[0] == 0.0
    assert hinge_loss(2 * car_scores, car_label, reduction="none")[0] == 0.0
    # but the frog's loss changes: W is not unique, scaling it changes the other losses
    assert hinge_loss(2 * SCORES[2:], LABELS[2:], reduction="none")[0] != pytest.approx(12.9)


def test_l2_prefers_spread_out_weights():
    # both give the same score on x = [1, 1, 1, 1]
    w1 = np.array([[1.0, 0.0, 0.0, 0.0]])
    w2 = np.array([[0.25, 0.25, 0.25, 0.25]])
    assert penalty("l2", w1) == pytest.approx(1.0)
    assert penalty("l2", w2) == pytest.approx(0.25)
    assert penalty("l2", w2) < penalty("l2", w1)
    assert penalty("l1", w1) == penalty("l1", w2) == 1.0  # L1 cannot tell them apart


def test_first_iteration_sanity_check():
    # W ~ 0 => all scores ~ 0 => SVM loss = C - 1 (every margin is delta = 1) and softmax loss = log C
    C, D, N = 10, 3072, 64
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D))
    W = 1e-8 * rng.standard_normal((C, D))
    y = rng.integers(0, C, N)
    scores = class_scores(X, W, np.zeros(C))
    assert get_loss("svm")(scores, y)[0] == pytest.approx(C - 1, abs=1e-5)
    assert get_loss("softmax")(scores, y)[0] == pytest.approx(math.log(C), abs=1e-5)


def test_svm_vs_softmax_slide():
    scores = np.array([[-2.85, 0.86, 0.28]])
    y = np.array([2])
    assert hinge_loss(scores, y)[0] == pytest.approx(1.58)
    softmax_value = softmax_loss(scores, y)[0]
    expected = -math.log(math.exp(0.28) / (math.exp(-2.85) + math.exp(0.86) + math.exp(0.28)))
    assert softmax_value == pytest.approx(expected)
    assert round(softmax_value, 2) == 1.04


def test_linclass_lecture_prints_the_worked_examples_and_names_the_slide_errors(tmp_path):
    """`linclass lecture` (make lecture) is what a teacher shows in class: every number computed, the two slide
    errors named with the value the maths gives. It needs no project and writes nothing."""
    import subprocess

    from conftest import BIN

    proc = subprocess.run([str(BIN / "linclass"), "lecture"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    out = proc.stdout
    assert "cat -96.80, dog 437.90, ship 580.50 (the slide prints ship 61.95" in out
    assert "cat 2.90, car 0.00, frog 12.90; L = 5.27" in out
    assert "SVM loss 0.00 with W, 0.00 with 2W" in out
    assert "probabilities 0.13, 0.87, 0.00; L_i = -ln 0.13 = 2.04 (the slide's 0.89 is -log10" in out
    assert "hinge 1.58, cross-entropy 1.04" in out
    assert "SVM 9.00 (C - 1), softmax 2.30 (ln C)" in out
    assert "w1.x = 1.00 = w2.x, L2 1.00 against 0.25, L1 1.00 against 1.00" in out
    assert list(tmp_path.iterdir()) == []
