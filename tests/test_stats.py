"""linclass.core.stats: the Wilson interval covers what it says, McNemar's p-values by hand, bad input."""
import numpy as np
import pytest

from linclass.core.stats import (
    McNemar,
    accuracy_interval,
    mcnemar,
    mcnemar_from_counts,
    verdict,
    wilson_interval,
    z_value,
)

DRAWS = 2000


def simulated_accuracies(rng, accuracy, n, draws=DRAWS, chunk=250):
    """Correct counts of `draws` test runs of a model of true accuracy `accuracy` on n images each:
    every image is predicted right with probability `accuracy`, independently."""
    return np.concatenate([(rng.random((chunk, n)) < accuracy).sum(axis=1) for _ in range(draws // chunk)])


@pytest.mark.parametrize("n", [1000, 10000])
@pytest.mark.parametrize("accuracy", [0.1, 0.42, 0.9])
def test_wilson_interval_covers_the_true_accuracy_95_percent_of_the_time(accuracy, n):
    rng = np.random.default_rng([23, n, int(accuracy * 100)])
    correct = simulated_accuracies(rng, accuracy, n)
    low, high = wilson_interval(correct, n)
    coverage = np.mean((low <= accuracy) & (accuracy <= high))
    assert abs(coverage - 0.95) <= 0.02, f"coverage {coverage:.4f} at accuracy {accuracy}, n {n}"
    # and it is not wide for nothing: on average as wide as +-z sqrt(p (1 - p) / n), to within 2%
    assert np.mean(high - low) / 2 == pytest.approx(1.96 * np.sqrt(accuracy * (1 - accuracy) / n), rel=0.02)


@pytest.mark.parametrize("level", [0.8, 0.99])
def test_wilson_interval_covers_at_other_levels(level):
    rng = np.random.default_rng([23, int(level * 100)])
    correct = simulated_accuracies(rng, 0.42, 1000)
    low, high = wilson_interval(correct, 1000, level=level)
    assert abs(np.mean((low <= 0.42) & (0.42 <= high)) - level) <= 0.02


def test_wilson_interval_by_hand():
    # 42 right of 100 at 95%: z = 1.959964, z^2 = 3.841459, p = 0.42
    #   shrink = 1 + z^2 / n                                   = 1.0384146
    #   centre = (0.42 + 3.841459 / 200) / 1.0384146           = 0.4229595
    #   half   = z / shrink * sqrt(0.42 * 0.58 / 100 + z^2 / 40000)
    #          = 1.887456 * sqrt(0.002436 + 0.0000960)         = 0.0949757
    assert z_value(0.95) == pytest.approx(1.959964, abs=1e-6)
    low, high = wilson_interval(42, 100)
    assert isinstance(low, float) and isinstance(high, float)
    assert (low, high) == pytest.approx((0.4229595 - 0.0949757, 0.4229595 + 0.0949757), abs=1e-6)
    # Newcombe (1998), Statistics in Medicine 17: 857-872, example (a): 81/263 -> 0.2553 to 0.3662
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    # the interval of the issue: 42% of 10,000 test images is about +-0.0097
    low, high = wilson_interval(4200, 10000)
    assert (high - low) / 2 == pytest.approx(0.0097, abs=5e-5)


def test_wilson_interval_is_vectorised_and_stays_in_0_1():
    correct = np.array([[0, 3, 10], [1, 5, 9]])
    low, high = wilson_interval(correct, 10)
    assert low.shape == high.shape == (2, 3)
    for index in np.ndindex(correct.shape):
        assert (low[index], high[index]) == wilson_interval(int(correct[index]), 10)
    assert low[0, 0] == 0.0 and high[0, 2] == 1.0  # 0 of 10 right: from exactly 0; 10 of 10: up to exactly 1
    assert np.all((0 < high[:, :2]) & (low[:, 1:] < 1)) and np.all(low < high)
    low, high = wilson_interval(np.array([1, 10, 100]), np.array([10, 100, 1000]))
    assert np.all(np.diff(high - low) < 0)  # the same 10% on more images: narrower


def test_wilson_interval_against_scipy():
    stats = pytest.importorskip("scipy.stats", reason="scipy is not installed in this venv (not a linclass dependency)")
    for correct, total, level in [(0, 7, 0.95), (42, 100, 0.95), (4171, 10000, 0.95), (999, 1000, 0.9), (17, 40, 0.5)]:
        expected = stats.binomtest(correct, total).proportion_ci(confidence_level=level, method="wilson")
        assert wilson_interval(correct, total, level) == pytest.approx((expected.low, expected.high), abs=1e-12)


def test_accuracy_interval_counts_the_right_predictions():
    y_true = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    y_pred = np.array([0, 1, 2, 3, 0, 0, 0, 0, 0, 0])
    accuracy, low, high = accuracy_interval(y_true, y_pred, level=0.9)
    assert accuracy == 0.4
    assert (low, high) == wilson_interval(4, 10, level=0.9)


def test_mcnemar_by_hand():
    # b = 7 images only A got right, c = 2 only B: under "equally good", X ~ Binomial(9, 1/2)
    #   P(X <= 2) = (C(9,0) + C(9,1) + C(9,2)) / 2^9 = (1 + 9 + 36) / 512 = 46 / 512
    #   exact p = 2 * 46 / 512 = 0.1796875;   mid-p = 2 * (1 + 9) / 512 + 36 / 512 = 56 / 512 = 0.109375
    assert mcnemar_from_counts(7, 2) == McNemar(b=7, c=2, p_value=92 / 512, mid_p=56 / 512)
    assert mcnemar_from_counts(2, 7).p_value == 92 / 512  # two-sided: symmetric in A and B
    # 10 to 0: p = 2 * C(10, 0) / 2^10 = 2 / 1024;  mid-p = 1 / 1024
    assert mcnemar_from_counts(10, 0) == McNemar(b=10, c=0, p_value=2 / 1024, mid_p=1 / 1024)
    # 6 to 4: P(X <= 4) = (1 + 10 + 45 + 120 + 210) / 1024 = 386 / 1024 -> p = 772 / 1024
    assert mcnemar_from_counts(6, 4).p_value == 772 / 1024
    # b = c: the doubled tail is over 1, capped
    assert mcnemar_from_counts(5, 5) == McNemar(b=5, c=5, p_value=1.0, mid_p=1.0)


def test_mcnemar_without_disagreement_says_nothing():
    assert mcnemar_from_counts(0, 0) == McNemar(b=0, c=0, p_value=1.0, mid_p=1.0)
    y = np.array([0, 1, 2, 1])
    same = mcnemar(y, np.array([0, 1, 0, 0]), np.array([0, 1, 0, 0]))
    assert (same.b, same.c, same.p_value) == (0, 0, 1.0)
    assert verdict(same) == "within noise"


def test_mcnemar_counts_only_the_images_one_model_got_right():
    y_true = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    pred_a = np.array([0, 1, 2, 0, 0, 9, 9, 7])  # right on 0, 1, 2, 7
    pred_b = np.array([0, 0, 0, 3, 4, 5, 8, 7])  # right on 0, 3, 4, 5, 7
    # both right: 0, 7; both wrong: 6 (with different wrong labels: still not a disagreement that counts)
    result = mcnemar(y_true, pred_a, pred_b)
    assert (result.b, result.c) == (2, 3)  # only A: 1, 2; only B: 3, 4, 5
    assert result == mcnemar_from_counts(2, 3)


def test_mcnemar_against_scipy():
    stats = pytest.importorskip("scipy.stats", reason="scipy is not installed in this venv (not a linclass dependency)")
    for b, c in [(1, 0), (7, 2), (13, 30), (250, 300), (1400, 1600), (5100, 4900)]:
        expected = stats.binomtest(b, b + c, 0.5).pvalue
        assert mcnemar_from_counts(b, c).p_value == pytest.approx(expected, rel=1e-9)
        low = min(b, c)
        mid = 2 * stats.binom.cdf(low - 1, b + c, 0.5) + stats.binom.pmf(low, b + c, 0.5)
        assert mcnemar_from_counts(b, c).mid_p == pytest.approx(min(1.0, mid), rel=1e-9)


def test_verdict():
    assert verdict(mcnemar_from_counts(7, 2)) == "within noise"          # p = 0.18
    assert verdict(mcnemar_from_counts(7, 2), alpha=0.2) == "better"
    assert verdict(mcnemar_from_counts(2, 7), alpha=0.2) == "worse"      # A chosen, but B is right more often
    assert verdict(mcnemar_from_counts(10, 0)) == "better"               # p = 0.002
    assert verdict(mcnemar_from_counts(10, 0), alpha=0.001) == "within noise"
    # A right on 100 more of 10,000 test images (1 point of accuracy): real if the models disagree on
    # 1,000 images (p = 0.0017), noise if they disagree on 3,000 (p = 0.071)
    assert verdict(mcnemar_from_counts(550, 450)) == "better"
    assert verdict(mcnemar_from_counts(1550, 1450)) == "within noise"


@pytest.mark.parametrize("call, message", [
    (lambda: wilson_interval(0, 0), r"^total must be >= 1"),
    (lambda: wilson_interval([3, 12], 10), r"^correct must be <= total, got correct=12 for total=10$"),
    (lambda: wilson_interval(-1, 10), r"^correct must be whole numbers >= 0, got -1$"),
    (lambda: wilson_interval(4.5, 10), r"^correct must be whole numbers >= 0, got 4.5$"),
    (lambda: wilson_interval([1, 2], [3, 4, 5]), r"^correct and total must have broadcastable shapes"),
    (lambda: wilson_interval(4, 10, level=1.0), r"^level=1.0 is out of range: allowed a number > 0 and < 1$"),
    (lambda: wilson_interval(4, 10, level=0), r"^level=0 is out of range"),
    (lambda: wilson_interval(4, 10, level=95), r"^level=95 is out of range"),
    (lambda: wilson_interval(4, 10, level="95%"), r"^level='95%' is not a number"),  # type: ignore[arg-type]
    (lambda: accuracy_interval([0, 1, 2], [0, 1]), r"^y_true and the predictions must be 1-D of equal length"),
    (lambda: accuracy_interval([], []), r"must not be empty \(n = 0\)$"),
    (lambda: mcnemar([0, 1], [0, 1], [0, 1, 1]), r"got shapes \(2,\), \(2,\), \(3,\)$"),
    (lambda: mcnemar([], [], []), r"must not be empty"),
    (lambda: mcnemar_from_counts(-1, 3), r"^b must be a whole number >= 0, got -1$"),
    (lambda: mcnemar_from_counts(2, 0.5), r"^c must be a whole number >= 0, got 0.5$"),  # type: ignore[arg-type]
    (lambda: verdict(mcnemar_from_counts(7, 2), alpha=1.5), r"^alpha=1.5 is out of range"),
])
def test_bad_input_is_one_line_value_error(call, message):
    with pytest.raises(ValueError, match=message) as error:
        call()
    assert "\n" not in str(error.value)


def test_compare_models_puts_the_accuracies_beside_mcnemar():
    """10 images: A right on 0-6, B right on 3-8: b = 3 (images 0, 1, 2), c = 2 (7, 8); X ~ Binomial(5, 1/2):
    p = min(1, 2 P(X <= 2)) = min(1, 2 * 16/32) = 1, mid-p = 2 P(X < 2) + P(X = 2) = (2 * 6 + 10) / 32."""
    from linclass.core.stats import compare_models

    y = np.zeros(10, dtype=int)
    a = np.where(np.arange(10) <= 6, 0, 1)           # right on 0..6 (7 images)
    b = np.where((np.arange(10) >= 3) & (np.arange(10) <= 8), 0, 1)  # right on 3..8 (6 images)
    result = compare_models(y, a, b, alpha=0.5)
    assert result == {"images": 10, "accuracy_a": 0.7, "accuracy_b": 0.6, "difference": pytest.approx(0.1),
                      "b": 3, "c": 2, "p_value": 1.0, "mid_p": pytest.approx(22 / 32),
                      "verdict": "within noise"}
    assert all(type(result[k]) is float for k in ("accuracy_a", "accuracy_b", "difference", "p_value"))  # JSON, tags
    # the difference is (b - c) / n: what both got right or wrong cancels out
    assert result["difference"] == pytest.approx(result["accuracy_a"] - result["accuracy_b"])
