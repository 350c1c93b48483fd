"""Statistics for claims about training runs: derived seeds, trend and equivalence tests.

A claim about SGD training is a statement about a random process, so the training
experiments run several seeds (derived from the run's seed) and test an aggregate:

- :func:`derived_seeds`: ``n`` independent integer seeds from the run's seed
  (``numpy.random.SeedSequence``), so that ``--set seed=K`` changes every inner run.
- :func:`trend_test`: Kendall's tau between the epoch and a series of each seed, over its
  measured (log-spaced) epochs from where the theory says the trend starts
  (``scipy.stats.kendalltau``, one-sided), combined over the seeds by Stouffer's method. A
  flat series has tau near 0 and a large p-value, so the claim fails when nothing changed;
  one monotone series of ``m`` points has ``p = 1/m!``.
- :func:`onset_trend_reason`: the sizing argument of a trend claim tested from each seed's
  terminal-phase onset (the ``reason`` of its claim).
- :func:`equivalence_test`: two one-sided t-tests (TOST, ``scipy.stats.ttest_1samp``) that
  the mean of per-seed differences lies inside ``(-margin, margin)``.

The null hypothesis of every test is "the claim is false", so ``p <= level`` passes
(:meth:`RunContext.claim_test`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import math

import numpy as np
from scipy import stats

from ..core.errors import ParameterError

__all__ = ["TrendResult", "derived_seeds", "equivalence_test", "onset_trend_reason", "trend_test"]


def derived_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent seeds in ``[0, 2^31)`` derived from the run's ``seed``."""
    if n < 1:
        raise ParameterError(f"derived_seeds: need at least one seed, got n={n}")
    return [int(s) % (2**31) for s in np.random.SeedSequence(seed).generate_state(n)]


@dataclass(frozen=True)
class TrendResult:
    """Per-series Kendall's tau combined over seeds by Stouffer's method.

    p_value: the combined one-sided p-value (1 when no series had 3 points to test);
    taus: Kendall's tau of each tested series; skipped: series with fewer than 3 points
    from their start; first, last: medians over the tested series of their first and last value.
    """

    p_value: float
    taus: list[float]
    skipped: int
    first: float
    last: float

    @property
    def statistic(self) -> float:
        """The median of the per-series taus (NaN when none was tested)."""
        return float(np.median(self.taus)) if self.taus else float("nan")

    def summary(self) -> dict[str, float]:
        """Named numbers for ``claim_test(measured=...)``."""
        return {"series_tested": len(self.taus), "series_skipped": self.skipped, "median_first": self.first, "median_last": self.last}


def trend_test(series: Sequence[Mapping[int, float]], starts: Sequence[int], *, decreasing: bool = True) -> TrendResult:
    """Is ``value`` monotone in ``epoch`` from each series' start on, across independent seeds?

    series: one ``{epoch: value}`` per seed (the measured, log-spaced epochs); starts: the
    epoch from which each series is tested (e.g. that seed's terminal-phase onset). Each
    series with at least 3 points from its start gets Kendall's tau against the epoch with the
    one-sided p-value for the alternative ``tau < 0`` (``decreasing``) or ``tau > 0``
    (``scipy.stats.kendalltau``; a constant series has p = 1); the p-values are combined by
    Stouffer's method (``scipy.stats.combine_pvalues``), so a seed trending the other way
    counts against the claim. No testable series gives p = 1 (no evidence, never a pass).
    """
    if len(series) != len(starts):
        raise ParameterError(f"trend_test: {len(series)} series but {len(starts)} start epochs")
    taus: list[float] = []
    pvals: list[float] = []
    firsts: list[float] = []
    lasts: list[float] = []
    for s, start in zip(series, starts):
        epochs = sorted(e for e in s if e >= start)
        values = [float(s[e]) for e in epochs]
        if len(epochs) < 3:
            continue
        res = stats.kendalltau(epochs, values, alternative="less" if decreasing else "greater")
        tau, p = float(res.statistic), float(res.pvalue)
        if not (np.isfinite(tau) and np.isfinite(p)):  # constant series (or NaN values): no trend
            tau, p = 0.0, 1.0
        taus.append(tau)
        pvals.append(min(max(p, 1e-300), 1.0 - 1e-12))
        firsts.append(values[0])
        lasts.append(values[-1])
    skipped = len(series) - len(taus)
    if not taus:
        return TrendResult(1.0, [], skipped, float("nan"), float("nan"))
    p = pvals[0] if len(pvals) == 1 else float(stats.combine_pvalues(pvals, method="stouffer").pvalue)
    return TrendResult(p, taus, skipped, float(np.median(firsts)), float(np.median(lasts)))


def onset_trend_reason(epochs: Sequence[Sequence[int]], onsets: Sequence[int]) -> str:
    """Why level 1e-3 is the right size for :func:`trend_test` from each seed's terminal-phase onset:
    ``epochs`` the measured epochs of each tested seed, ``onsets`` their first zero-error epochs.
    With ``m`` the fewest measured epochs from an onset, one strictly decreasing series alone has
    ``p = 1/m!``."""
    m = min((sum(e >= t for e in ep) for ep, t in zip(epochs, onsets)), default=0)
    return (f"level 1e-3 bounds a false pass; Kendall's tau per seed over its log-spaced measured epochs from its terminal-phase onset (at least {m} per seed), "
            f"Stouffer-combined over {len(onsets)} seeds: one strictly decreasing series of m points alone has p = 1/m! ({m} points: {1.0 / math.factorial(m):.1g}), so a "
            "true claim fails only when most seeds stall; the series carry no batch-norm noise (exact training-set BN statistics) and, in the quick tier, no mini-batch "
            "noise (full batch)")


def equivalence_test(differences: Sequence[float], margin: float) -> tuple[float, float]:
    """TOST: ``(mean difference, p-value)`` for "the mean of ``differences`` lies in ``(-margin, margin)``".

    The p-value is the larger of the two one-sided t-tests (mean > -margin, mean < margin).
    """
    d = np.asarray(differences, dtype=float)
    if d.size < 2 or margin <= 0:
        raise ParameterError(f"equivalence_test: need >= 2 differences and a positive margin, got {d.size} and {margin}")
    lower = stats.ttest_1samp(d, -margin, alternative="greater").pvalue
    upper = stats.ttest_1samp(d, margin, alternative="less").pvalue
    p = float(max(lower, upper))
    return float(d.mean()), (1.0 if not np.isfinite(p) else p)

