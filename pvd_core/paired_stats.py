"""Paired statistics for "does arm B beat arm A": the distillation benchmark's verdict.

A pair is two runs that differ in one thing only (baseline vs PVD student, same seed =
same initialisation, data order and augmentation), so the per-pair difference cancels
most of the seed-to-seed variance that swamped single-seed comparisons (issue 11: three
seeds, gain +0.69 +- 1.61, a CI of about [-3.3, +4.7]). Two questions, two tools:

- :func:`paired_t`: is the mean gain over *training seeds* different from 0? Paired-t
  95 % CI and two-sided p-value (``scipy.stats``, not hand-written t quantiles).
- :func:`rule_outcomes`: how often the sequential rule below, looking after every pair,
  stops on each answer for a given true gain (its error rates over repeated looks).
- :func:`paired_ranks` (exploratory): is the gain typical of the pairs or carried by a few?
  Median gain, wins each way, Wilcoxon signed-rank p (``scipy.stats``).
- :func:`bootstrap_gain_ci`: how much of the gain could the *validation scans* have
  produced? Scans are resampled with replacement (the same draw for every model, so the
  pairing is kept), the confusion matrices of the drawn scans are summed and mIoU is
  recomputed over a *fixed* class list with :func:`pvd_core.metrics.compute_iou` (the
  one mIoU rule). It conditions on the trained models, so it is narrower than the t CI
  whenever seeds vary more than scans; report both.

:func:`decision` is the sequential stopping rule of the benchmark: stop once the CI is
decisive (lower bound > 0: PVD helps; upper bound < the margin: PVD's gain is below the
worth-having threshold), never before ``min_pairs``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from pvd_core.metrics import compute_iou


@dataclass(frozen=True)
class PairedResult:
    """Summary of paired differences d_i = treated_i - baseline_i."""

    n: int
    mean: float  # mean of d (nan when n == 0)
    stdev: float  # sample standard deviation of d (nan when n < 2)
    ci95: tuple[float, float]  # paired-t CI of the mean of d (nan, nan when n < 2)
    p_value: float  # two-sided paired-t p-value for mean(d) == 0 (nan when n < 2 or stdev == 0 and mean == 0)


def _paired_arrays(caller: str, baseline: Sequence[float], treated: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(baseline, dtype=np.float64)
    b = np.asarray(treated, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"{caller}: baseline {a.shape} and treated {b.shape} must be equal-length 1-D sequences")
    return a, b


def paired_t(baseline: Sequence[float], treated: Sequence[float], confidence: float = 0.95) -> PairedResult:
    """Paired-t summary of ``treated - baseline`` (the two lists are aligned pair by pair).

    With zero spread the CI collapses to the mean and the p-value is 0 (or nan when the
    mean is 0 too): scipy's answer for a degenerate sample, kept rather than invented.
    """
    from scipy import stats

    a, b = _paired_arrays("paired_t", baseline, treated)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"paired_t: confidence must lie in (0, 1), got {confidence}")
    d = b - a
    n = int(d.size)
    if n == 0:
        return PairedResult(0, math.nan, math.nan, (math.nan, math.nan), math.nan)
    mean = float(d.mean())
    if n < 2:
        return PairedResult(n, mean, math.nan, (math.nan, math.nan), math.nan)
    sd = float(d.std(ddof=1))
    half = float(_t_half_width(np.float64(sd), n, confidence))
    if sd == 0.0:
        p = math.nan if mean == 0.0 else 0.0
    else:
        p = float(stats.ttest_rel(b, a).pvalue)
    return PairedResult(n, mean, sd, (mean - half, mean + half), p)


def _t_half_width(sd: np.ndarray, n: Any, confidence: float) -> np.ndarray:
    """Half-width of the paired-t CI for sample stdev ``sd`` of ``n`` pairs (broadcasts)."""
    from scipy import stats

    n = np.asarray(n, dtype=np.float64)
    return stats.t.ppf(0.5 + confidence / 2.0, df=n - 1) * sd / np.sqrt(n)


def running_ci(diffs: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Paired-t CI after each pair, for many sequences at once: ``diffs`` is (sequences, pairs).

    Column k holds what :func:`paired_t` gives for the first k + 1 pairs (nan for k = 0), so a
    simulation of the sequential rule sees exactly the benchmark's intervals.
    """
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"running_ci: diffs must be (sequences, pairs), got shape {d.shape}")
    n = np.arange(1, d.shape[1] + 1, dtype=np.float64)
    mean = np.cumsum(d, axis=1) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (np.cumsum(d * d, axis=1) - n * mean * mean) / (n - 1)
        half = _t_half_width(np.sqrt(np.maximum(var, 0.0)), n, confidence)
    half[:, 0] = np.nan
    return mean - half, mean + half


@dataclass(frozen=True)
class SpreadResult:
    """Seed-to-seed spread of the two arms of paired runs, and whether it differs."""

    n: int
    sd_baseline: float  # sample standard deviation over seeds (nan when n < 2)
    sd_treated: float
    p_value: float  # Pitman-Morgan test of equal variances (nan when n < 3 or either spread is 0)


def paired_spread(baseline: Sequence[float], treated: Sequence[float]) -> SpreadResult:
    """Does the treatment change how much runs vary from seed to seed (not their mean)?

    A treatment can help mostly by rescuing bad seeds; the paired-t test of the mean cannot
    see that. The two arms share seeds, so their spreads are correlated and an F test would be
    wrong; the Pitman-Morgan test uses var(b) - var(a) = cov(a + b, b - a), i.e. equal
    variances iff sums and differences are uncorrelated, and tests that Pearson r (scipy).
    """
    from scipy import stats

    a, b = _paired_arrays("paired_spread", baseline, treated)
    n = int(a.size)
    if n < 2:
        return SpreadResult(n, math.nan, math.nan, math.nan)
    sd_a, sd_b = float(a.std(ddof=1)), float(b.std(ddof=1))
    total, diff = a + b, b - a
    if n < 3 or np.ptp(total) == 0.0 or np.ptp(diff) == 0.0:
        return SpreadResult(n, sd_a, sd_b, math.nan)
    return SpreadResult(n, sd_a, sd_b, float(stats.pearsonr(total, diff).pvalue))


@dataclass(frozen=True)
class RankResult:
    """Per-pair view of paired differences d_i = treated_i - baseline_i, robust to a few large d_i."""

    n: int
    median: float  # median of d (nan when n == 0)
    treated_ahead: int  # pairs with d > 0
    baseline_ahead: int  # pairs with d < 0
    wilcoxon_p: float  # two-sided signed-rank p (zero differences dropped; nan when every d is 0)


def paired_ranks(baseline: Sequence[float], treated: Sequence[float]) -> RankResult:
    """Does the treatment win in most pairs, or do a few large gains carry the mean?

    The paired-t verdict is about the mean, which two seeds with +7 and +10 can carry while the
    typical pair gains little; the median, the win counts and the signed-rank test (which uses
    the ranks of |d|, not their size) say which it is. Exploratory: the verdict stays paired_t.
    """
    from scipy import stats

    a, b = _paired_arrays("paired_ranks", baseline, treated)
    d = b - a
    if d.size == 0:
        return RankResult(0, math.nan, 0, 0, math.nan)
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    p = float(stats.wilcoxon(d).pvalue) if wins + losses else math.nan
    return RankResult(int(d.size), float(np.median(d)), wins, losses, p)


def decision(ci95: tuple[float, float], n: int, min_pairs: int = 8, margin: float = 1.5) -> Optional[str]:
    """The sequential rule: 'gain' (lo > 0), 'below_margin' (hi < margin) or None (keep going).

    Both can hold at once (a small but certain gain); 'gain' wins, as it is the claim the
    benchmark exists to test. Below ``min_pairs`` pairs the answer is always None: a CI
    from 2-3 pairs is too fragile (its width rests on a 2-3 point stdev) to stop on.
    """
    code = int(decision_codes(np.float64(ci95[0]), np.float64(ci95[1]), n, min_pairs, margin))
    return {GAIN: "gain", BELOW_MARGIN: "below_margin"}.get(code)


GAIN, BELOW_MARGIN, UNDECIDED = 1, -1, 0


def decision_codes(lo: np.ndarray, hi: np.ndarray, n: Any, min_pairs: int = 8, margin: float = 1.5) -> np.ndarray:
    """:func:`decision` for arrays of CIs (GAIN, BELOW_MARGIN or UNDECIDED each): the one rule."""
    lo, hi, n = np.broadcast_arrays(np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64),
                                    np.asarray(n))
    ready = (n >= min_pairs) & ~np.isnan(lo) & ~np.isnan(hi)
    return np.where(ready & (lo > 0), GAIN, np.where(ready & (hi < margin), BELOW_MARGIN, UNDECIDED))


@dataclass(frozen=True)
class RuleOutcome:
    """How often the sequential rule ends each way, for one true gain and one noise model."""

    true_gain: float
    gain: float  # fraction of simulated benchmarks that stop on "gain"
    below_margin: float  # ... on "below_margin"
    undecided: float  # ... reach max_pairs without a decision
    mean_pairs: float  # pairs run on average (max_pairs for the undecided)


def rule_outcomes(noise: np.ndarray, true_gain: float, min_pairs: int = 8, margin: float = 1.5,
                  confidence: float = 0.95) -> RuleOutcome:
    """Run :func:`decision` after every pair on simulated benchmarks ``true_gain + noise``.

    ``noise`` is (benchmarks, max_pairs) of zero-mean per-pair gains. The rule looks at the CI
    after every pair from ``min_pairs`` on, so its error rates are not the nominal 2.5 % of one
    look: this measures them (a planning figure for reading a decision, not a result).
    """
    d = true_gain + np.asarray(noise, dtype=np.float64)
    lo, hi = running_ci(d, confidence)
    codes = decision_codes(lo, hi, np.arange(1, d.shape[1] + 1), min_pairs, margin)
    decided = codes != UNDECIDED
    first = np.where(decided.any(axis=1), decided.argmax(axis=1), -1)
    final = np.where(first >= 0, codes[np.arange(d.shape[0]), np.maximum(first, 0)], UNDECIDED)
    pairs = np.where(first >= 0, first + 1, d.shape[1])
    return RuleOutcome(float(true_gain), float(np.mean(final == GAIN)), float(np.mean(final == BELOW_MARGIN)),
                       float(np.mean(final == UNDECIDED)), float(pairs.mean()))


def pairs_to_decide(mean: float, stdev: float, min_pairs: int = 8, margin: float = 1.5,
                    confidence: float = 0.95, limit: int = 10_000) -> Optional[int]:
    """Pairs at which :func:`decision` would stop *if* the mean gain and its stdev stayed as observed.

    A planning figure, not a result: the next pairs will move both. It answers "is another
    session of pairs worth it?": with a mean gain of +0.5 and a stdev of 2.9 the CI must
    shrink to +-1.0 before it clears either bound, which takes 35 pairs; the slowest case is a
    mean halfway between 0 and the margin. None when the inputs are undefined (fewer than 2
    pairs), no CI width could clear either bound, or the answer exceeds ``limit``.
    """
    if math.isnan(mean) or math.isnan(stdev):
        return None
    room = max(mean, margin - mean)  # the CI half-width that clears the nearer bound
    if room <= 0:
        return None
    for n in range(max(2, min_pairs), limit + 1):
        if float(_t_half_width(np.float64(stdev), n, confidence)) < room:
            return n
    return None


def bootstrap_gain_ci(baseline_scans: Sequence[np.ndarray], treated_scans: Sequence[np.ndarray],
                      classes: Sequence[int], n_resamples: int = 2000, seed: int = 0,
                      confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI (mIoU percent) of the mean paired gain, resampling validation scans.

    ``baseline_scans[i]`` / ``treated_scans[i]`` are the per-scan confusion matrices
    (S, C, C) of pair i's two models on the same S validation scans, in the same order.
    Each replicate draws S scan indices with replacement, applies the same draw to every
    model, and computes mean_i [mIoU(treated_i) - mIoU(baseline_i)] over ``classes``.
    ``classes`` must be fixed (the classes of the full validation ground truth): letting a
    replicate's class set vary would mix the metric change into the resampling noise.
    """
    if len(baseline_scans) != len(treated_scans) or not baseline_scans:
        raise ValueError(f"bootstrap_gain_ci: {len(baseline_scans)} baseline and {len(treated_scans)} treated "
                         "models; give one per-scan matrix stack per model of each pair")
    stacks = [np.asarray(m, dtype=np.int64) for m in list(baseline_scans) + list(treated_scans)]
    shape = stacks[0].shape
    if len(shape) != 3 or shape[1] != shape[2] or any(s.shape != shape for s in stacks):
        raise ValueError(f"bootstrap_gain_ci: every stack must be (S, C, C) of one shape, got "
                         f"{sorted({s.shape for s in stacks})}")
    if not classes:
        raise ValueError("bootstrap_gain_ci: classes must name at least one class")
    num_scans, c = shape[0], shape[1]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, num_scans, size=(int(n_resamples), num_scans))
    # Scan multiplicities per replicate, then one matrix product per model: (B, S) @ (S, C*C).
    weights = np.stack([np.bincount(row, minlength=num_scans) for row in draws])
    pairs = len(baseline_scans)
    gains = np.zeros(int(n_resamples))
    for i in range(pairs):
        base = (weights @ stacks[i].reshape(num_scans, c * c)).reshape(-1, c, c)
        treat = (weights @ stacks[pairs + i].reshape(num_scans, c * c)).reshape(-1, c, c)
        for r in range(int(n_resamples)):
            gains[r] += compute_iou(treat[r], classes).miou - compute_iou(base[r], classes).miou
    gains *= 100.0 / pairs
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(gains, [alpha, 1.0 - alpha])
    return float(lo), float(hi)
