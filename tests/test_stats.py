"""lift_local.stats against direct computation on known data: the exact McNemar and permutation p-values
enumerated by hand, intervals against their normal approximations, and verdicts that follow the numbers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from lift_local import stats


def test_the_interval_of_an_accuracy_matches_the_normal_approximation():
    values = np.r_[np.ones(240), np.zeros(160)]  # 60% of 400 items
    low, high = stats.interval(values)
    half = 1.96 * math.sqrt(0.6 * 0.4 / 400)  # 0.048
    assert low == pytest.approx(0.6 - half, abs=0.006) and high == pytest.approx(0.6 + half, abs=0.006)
    assert stats.interval(values, seed=3) != stats.interval(values, seed=4)
    assert stats.interval(values, seed=3) == stats.interval(values, seed=3)


def test_an_interval_narrows_with_confidence_and_is_a_point_when_every_item_agrees():
    values = np.r_[np.ones(30), np.zeros(20)]
    wide, narrow = stats.interval(values, confidence=0.99), stats.interval(values, confidence=0.8)
    assert wide[0] < narrow[0] < 0.6 < narrow[1] < wide[1]
    # BCa is undefined when every resample is the same; the interval is then that value.
    assert stats.interval(np.ones(50)) == (1.0, 1.0)


def test_a_paired_interval_of_a_correlation_matches_fishers_z():
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    y = 0.6 * x + 0.8 * rng.normal(size=300)
    low, high = stats.paired_interval(lambda a, b: scipy_stats.spearmanr(a, b).statistic, x, y, resamples=2000)
    rho = scipy_stats.spearmanr(x, y).statistic
    half = 1.06 / math.sqrt(300 - 3)  # Fieller et al.'s standard error of Spearman's z
    assert low == pytest.approx(math.tanh(math.atanh(rho) - 1.96 * half), abs=0.02)
    assert high == pytest.approx(math.tanh(math.atanh(rho) + 1.96 * half), abs=0.02)
    with pytest.raises(ValueError, match="same, non-zero number of items"):
        stats.paired_interval(np.mean, x, y[:-1])


def test_mcnemar_is_the_exact_binomial_test_on_the_discordant_items():
    # 15 items only A gets right, 5 only B, 30 both, 50 neither.
    a = np.r_[np.ones(15), np.zeros(5), np.ones(30), np.zeros(50)]
    b = np.r_[np.zeros(15), np.ones(5), np.ones(30), np.zeros(50)]
    difference = stats.paired_difference(a, b, kind="accuracy")
    two_sided = 2 * sum(math.comb(20, k) for k in range(15, 21)) / 2**20
    assert difference.p_value == pytest.approx(two_sided, rel=1e-12)  # 0.041
    assert difference.difference == pytest.approx(0.10) and difference.test == "McNemar" and difference.n == 100
    # The interval the test inverts: Clopper-Pearson of A's share of the 20 discordant items, scaled to 100.
    share_low, share_high = scipy_stats.beta.ppf(0.025, 15, 6), scipy_stats.beta.ppf(0.975, 16, 5)
    assert difference.ci_low == pytest.approx(0.2 * (2 * share_low - 1), rel=1e-9)
    assert difference.ci_high == pytest.approx(0.2 * (2 * share_high - 1), rel=1e-9)
    few = stats.paired_difference(np.r_[np.zeros(3), np.ones(197)], np.ones(200), kind="accuracy")
    assert few.p_value == pytest.approx(0.25) and few.ci_low < 0 < few.ci_high  # a bootstrap said -4.0 to -0.5
    # The 80 concordant items say nothing about which arm is better: the same p without them.
    assert stats.paired_difference(a[:20], b[:20], kind="accuracy").p_value == pytest.approx(two_sided)
    assert stats.paired_difference(a, a, kind="accuracy").p_value == 1.0


@pytest.mark.parametrize("a_only", range(0, 31))
def test_the_accuracy_interval_excludes_zero_exactly_when_mcnemar_rejects(a_only):
    """Of 30 discordant items among 200, A right on `a_only`: printed side by side, interval and test never
    disagree (a bootstrap interval excluded zero at 0 against 3, where p = 0.25)."""
    b_only = 30 - a_only
    a = np.r_[np.ones(a_only), np.zeros(b_only), np.ones(70), np.zeros(100)]
    b = np.r_[np.zeros(a_only), np.ones(b_only), np.ones(70), np.zeros(100)]
    difference = stats.paired_difference(a, b, kind="accuracy")
    assert difference.ci_low <= difference.difference <= difference.ci_high
    assert (difference.p_value < 0.05) == (difference.ci_low > 0 or difference.ci_high < 0)


def test_the_permutation_test_is_exact_on_few_items():
    a = np.array([2.1, 1.7, 2.5, 1.9, 2.2, 1.4, 2.0, 1.8])
    b = np.array([2.4, 1.9, 2.4, 2.3, 2.6, 1.6, 2.1, 2.2])
    observed = abs(np.mean(a - b))
    flips = [np.mean(np.array(signs) * (a - b)) for signs in itertools.product((1, -1), repeat=len(a))]
    exact = np.mean([abs(value) >= observed - 1e-12 for value in flips])  # 2^8 sign flips: 6/256
    difference = stats.paired_difference(a, b, kind="nll")
    assert difference.p_value == pytest.approx(exact)
    assert difference.test == "permutation" and difference.difference == pytest.approx(np.mean(a - b))


def test_accuracy_items_must_be_right_or_wrong():
    with pytest.raises(ValueError, match="must be 1 \\(right\\) or 0 \\(wrong\\)"):
        stats.paired_difference([1, 0.5], [1, 0], kind="accuracy")
    with pytest.raises(ValueError, match="same length"):
        stats.paired_difference([1, 0], [1], kind="accuracy")
    with pytest.raises(ValueError, match="unknown kind"):
        stats.paired_difference([1, 0], [1, 0], kind="f1")


def accuracy(right: int, of: int, seed: int) -> np.ndarray:
    values = np.r_[np.ones(right), np.zeros(of - right)]
    return np.random.default_rng(seed).permutation(values)


def test_sentences_name_the_better_arm_or_say_that_no_difference_is_detectable():
    better = np.r_[np.ones(40), np.zeros(160)]  # right where the other is wrong, on 40 of 200 items
    worse = np.r_[np.zeros(40), np.zeros(160)]
    win = stats.paired_difference(better, worse, kind="accuracy")
    assert stats.sentence("curated", "random", "ARC-Easy", win, "accuracy").startswith(
        "curated beats random on ARC-Easy by 20.0 points (95% CI ")
    loss = stats.paired_difference(worse, better, kind="accuracy")
    assert stats.sentence("curated", "random", "ARC-Easy", loss, "accuracy").startswith(
        "random beats curated on ARC-Easy by 20.0 points (95% CI ")
    same = stats.paired_difference(accuracy(100, 200, 1), accuracy(102, 200, 2), kind="accuracy")
    text = stats.sentence("curated", "random", "MMLU", same, "accuracy")
    assert text.startswith("no difference between curated and random is detectable on MMLU with 200 items (−1.0 points")
    assert "McNemar p = " in text


def test_lower_nll_is_better_in_words():
    rng = np.random.default_rng(5)
    random_arm = rng.normal(2.0, 0.3, 100)
    curated = random_arm - 0.2 + rng.normal(0, 0.05, 100)
    difference = stats.paired_difference(curated, random_arm, kind="nll")
    assert difference.difference < 0 and difference.ci_high < 0 and difference.p_value < 0.001
    assert stats.sentence("curated", "random", "held-out answers", difference, "nll") == (
        f"curated beats random on held-out answers: {-difference.difference:.3f} nats/token lower NLL "
        f"(95% CI {-difference.ci_high:.3f} to {-difference.ci_low:.3f}, permutation p < 0.001)")
    reverse = stats.paired_difference(random_arm, curated, kind="nll")
    assert stats.sentence("random", "curated", "held-out answers", reverse, "nll").startswith(
        "curated beats random on held-out answers: ")


def test_a_verdict_needs_both_the_test_and_the_interval():
    """p just above 0.05 with an interval that excludes zero is not a win: the sentence never claims more
    than both numbers beside it."""
    borderline = stats.Difference(0.105, 0.005, 0.2, 0.0504, "McNemar", 200)
    assert not borderline.significant()
    assert stats.sentence("a", "b", "X", borderline, "accuracy").startswith("no difference between a and b")
    assert stats.Difference(0.105, 0.005, 0.2, 0.03, "McNemar", 200).significant()
    assert not stats.Difference(0.105, -0.005, 0.2, 0.03, "McNemar", 200).significant()
