"""The lecture's worked examples, computed with linclass.core: what `linclass lecture` prints for a class.

Two slides print numbers the maths does not give (the ship's score, and -log10 for the softmax loss); the lines
say so and give what the maths gives. No stage runs this: the loss study (loss_questions.py) measures the
lecture's questions on the same score table for the report.
"""
import numpy as np

from linclass.core.losses import hinge_loss, softmax_loss, softmax_probabilities
from linclass.core.model import class_scores
from linclass.core.regularizers import penalty
from linclass.studies.loss_questions import LECTURE_EXAMPLES, LECTURE_LABELS, LECTURE_SCORES


def nums(values, digits: int = 2) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def worked_examples() -> list[str]:
    """The lines to show in class (natural log)."""
    x, b = np.array([[56.0, 231.0, 24.0, 2.0]]), np.array([1.1, 3.2, -1.2])
    W = np.array([[0.2, -0.5, 0.1, 2.0], [1.5, 1.3, 2.1, 0.0], [0.0, 2.5, 0.2, -0.3]])
    cat, dog, ship = class_scores(x, W, b)[0]
    W_slide = W.copy()
    W_slide[2, 1] = 0.25   # the original slide's weight; the slide's ship score also leaves b out
    ship_slide = class_scores(x, W_slide, np.zeros(3))[0, 2]
    hinge = hinge_loss(LECTURE_SCORES, LECTURE_LABELS, reduction="none")
    car, y_car = LECTURE_SCORES[1:2], LECTURE_LABELS[1:2]
    cat_scores, y_cat = LECTURE_SCORES[:1], LECTURE_LABELS[:1]
    probabilities = softmax_probabilities(cat_scores)[0]
    cross_entropy = softmax_loss(cat_scores, y_cat, reduction="none")[0]
    image, y_image = np.array([[-2.85, 0.86, 0.28]]), np.array([2])
    zeros, y0 = np.zeros((1, 10)), np.array([0])
    ones, w1, w2 = np.ones(4), np.array([[1.0, 0.0, 0.0, 0.0]]), np.full((1, 4), 0.25)
    lines = [
        "The lecture's worked examples, computed by linclass (natural log; classes cat, car, frog):",
        f"f(x, W) = Wx + b, 4 pixels {nums(x[0], 0)}: cat {cat:.2f}, dog {dog:.2f}, ship {ship:.2f}"
        f" (the slide prints ship {ship_slide:.2f}: the ship row's 2nd weight 0.25 instead of 2.5, and no b)",
        "SVM loss of the score table, L_i = sum_(j != y_i) max(0, s_j - s_(y_i) + 1): "
        + ", ".join(f"{name} {v:.2f}" for name, v in zip(LECTURE_EXAMPLES, hinge))
        + f"; L = {hinge.mean():.2f}",
        f"W against 2W: the car image's SVM loss {hinge_loss(car, y_car, reduction='none')[0]:.2f} with W, "
        f"{hinge_loss(2 * car, y_car, reduction='none')[0]:.2f} with 2W (L = 0 does not pick one W)",
        f"softmax of the cat image's scores {nums(cat_scores[0], 1)}: exp {nums(np.exp(cat_scores[0]))}, "
        f"probabilities {nums(probabilities)}; L_i = -ln {probabilities[0]:.2f} = {cross_entropy:.2f}"
        f" (the slide's {-np.log10(probabilities[0]):.2f} is -log10: the loss is the natural log)",
        f"SVM against softmax on the scores {nums(image[0])} (y = the third class): hinge "
        f"{hinge_loss(image, y_image, reduction='none')[0]:.2f}, cross-entropy "
        f"{softmax_loss(image, y_image, reduction='none')[0]:.2f}",
        f"at initialization (all scores 0, C = 10): SVM {hinge_loss(zeros, y0, reduction='none')[0]:.2f} (C - 1), "
        f"softmax {softmax_loss(zeros, y0, reduction='none')[0]:.2f} (ln C)",
        f"L2 prefers spread-out weights: x = [{nums(ones, 0)}], w1 = [{nums(w1[0])}], w2 = [{nums(w2[0])}]: "
        f"w1.x = {w1[0] @ ones:.2f} = w2.x, L2 {penalty('l2', w1):.2f} against {penalty('l2', w2):.2f}, "
        f"L1 {penalty('l1', w1):.2f} against {penalty('l1', w2):.2f}",
        "the lecture's loss questions on these scores: reports/loss_study.csv (make repro); the loss each model "
        "started from: reports/initial_loss.csv",
    ]
    return lines
