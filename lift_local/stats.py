"""What a comparison of scores over items can claim: bootstrap intervals, paired differences with their test,
and the verdict in words. Pure numpy/scipy (no lift-local import), so any part of lift-local reuses it.

- Intervals are scipy's BCa bootstrap over items (bias-corrected and accelerated: right for skewed
  statistics such as accuracy near 0 or 1 and correlations); where BCa is undefined (every resample
  gives the same value, e.g. a model right on every item) the percentile interval, which is then that
  value, is used.
- Two arms on the same items are compared item by item: the mean of the per-item differences, its
  interval, and a paired test. Right/wrong items get the exact McNemar test (a binomial test on the items
  where exactly one arm is right: the others say nothing about which is better) and the interval that test
  inverts (Clopper-Pearson on those items), so that interval and test agree even when few items differ,
  where a bootstrap interval is too narrow (3 items of 200 right in one arm only: McNemar p = 0.25, and
  every bootstrap resample but one in twenty holds one of them). Continuous per-item values (NLL) get the
  bootstrap interval and a paired permutation test (the sign of each item's difference flipped at random).
- A verdict claims a winner only when the test rejects at the interval's level and the interval excludes
  zero, so the sentence never contradicts the numbers printed beside it.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from scipy import stats

Kind = Literal["accuracy", "nll"]
KINDS: tuple[Kind, ...] = ("accuracy", "nll")


def interval(values: Sequence[float] | np.ndarray, *, statistic: Callable = np.mean, confidence: float = 0.95,
             resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """The bootstrap interval of `statistic` over the items' `values`."""
    return paired_interval(statistic, values, confidence=confidence, resamples=resamples, seed=seed)


def paired_interval(statistic: Callable, *samples: Sequence[float] | np.ndarray, confidence: float = 0.95,
                    resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """The bootstrap interval of `statistic(*samples)`, the samples resampled together (item i of each stays
    paired), e.g. a Spearman correlation of (x, y). A statistic that takes `axis` is run vectorised."""
    arrays = [np.asarray(sample, dtype=float) for sample in samples]
    if not arrays or len({len(a) for a in arrays}) != 1:
        raise ValueError("paired samples must have the same, non-zero number of items")
    if len(arrays[0]) < 2:
        raise ValueError(f"a bootstrap interval needs at least 2 items, got {len(arrays[0])}")
    options = dict(paired=True, confidence_level=confidence, n_resamples=resamples,
                   rng=np.random.default_rng(seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa's DegenerateDataWarning: handled below
        result = stats.bootstrap(arrays, statistic, method="BCa", **options)
        low, high = result.confidence_interval
        if not (np.isfinite(low) and np.isfinite(high)):
            low, high = stats.bootstrap(arrays, statistic, method="percentile", **options).confidence_interval
    return float(low), float(high)


@dataclasses.dataclass(frozen=True)
class Difference:
    """a - b on the same items: the mean per-item difference, its interval and the paired test."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str  # "McNemar" or "permutation"
    n: int

    def significant(self, confidence: float = 0.95) -> bool:
        """The test rejects at this level and the interval excludes zero."""
        return self.p_value < 1 - confidence and (self.ci_low > 0 or self.ci_high < 0)


def paired_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, kind: Kind,
                      confidence: float = 0.95, resamples: int = 10_000, seed: int = 0) -> Difference:
    """Compare two arms item by item: `kind` "accuracy" for 1/0 per item (exact McNemar), "nll" for a
    continuous value per item (paired permutation test)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired samples must be two lists of the same length, got {x.shape} and {y.shape}")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: choose from {', '.join(KINDS)}")
    if kind == "accuracy":
        if not np.isin(np.r_[x, y], (0.0, 1.0)).all():
            raise ValueError("accuracy items must be 1 (right) or 0 (wrong)")
        a_only, b_only = int(np.sum((x == 1) & (y == 0))), int(np.sum((x == 0) & (y == 1)))
        p, (low, high) = _mcnemar(a_only, b_only, len(x), confidence)
        test = "McNemar"
    else:
        low, high = interval(x - y, confidence=confidence, resamples=resamples, seed=seed)
        p = stats.permutation_test(
            (x, y), lambda u, v, axis: np.mean(u - v, axis=axis), permutation_type="samples",
            n_resamples=resamples, rng=np.random.default_rng(seed), vectorized=True,
        ).pvalue
        test = "permutation"
    return Difference(float(np.mean(x - y)), low, high, float(p), test, len(x))


def _mcnemar(a_only: int, b_only: int, n: int, confidence: float) -> tuple[float, tuple[float, float]]:
    """The exact McNemar test's p and the interval of the accuracy difference it inverts: of the d items where
    exactly one arm is right, A's share has a Clopper-Pearson interval, and the difference is d/n (2 share - 1)."""
    discordant = a_only + b_only
    if not discordant:
        return 1.0, (0.0, 0.0)
    test = stats.binomtest(a_only, discordant, 0.5)
    share = test.proportion_ci(confidence_level=confidence, method="exact")
    scale = discordant / n
    return float(test.pvalue), (scale * (2 * share.low - 1), scale * (2 * share.high - 1))


def sentence(name_a: str, name_b: str, benchmark: str, difference: Difference, kind: Kind,
             confidence: float = 0.95) -> str:
    """The comparison in words: who is better and by how much, or that no difference is detectable.
    Accuracy differences are in percentage points, NLL differences in nats per token."""
    unit = "points" if kind == "accuracy" else "nats/token"
    test = f"{difference.test} {_p(difference.p_value)}"
    if not difference.significant(confidence):
        return (f"no difference between {name_a} and {name_b} is detectable on {benchmark} with {difference.n} "
                f"items ({_number(difference.difference, kind)} {unit}, {confidence:.0%} CI "
                f"{_number(difference.ci_low, kind)} to {_number(difference.ci_high, kind)}, {test})")
    better = 1 if kind == "accuracy" else -1  # higher accuracy is better, lower NLL
    a_wins = better * difference.difference > 0
    winner, loser, flip = (name_a, name_b, better) if a_wins else (name_b, name_a, -better)
    low, high = sorted((flip * difference.ci_low, flip * difference.ci_high))
    size = f"{_number(flip * difference.difference, kind)} {unit}"
    numbers = f"{confidence:.0%} CI {_number(low, kind)} to {_number(high, kind)}, {test}"
    if kind == "accuracy":
        return f"{winner} beats {loser} on {benchmark} by {size} ({numbers})"
    return f"{winner} beats {loser} on {benchmark}: {size} lower NLL ({numbers})"


def _number(value: float, kind: Kind) -> str:
    text = f"{value * 100:.1f}" if kind == "accuracy" else f"{value:.3f}"
    return text.replace("-", "\N{MINUS SIGN}") if float(text) else text.lstrip("-")


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"
