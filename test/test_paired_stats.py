"""Paired statistics and fidelity (pvd_core.paired_stats, pvd_core.fidelity) against values
worked out by hand, so the distillation benchmark's verdict rests on checked arithmetic."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pvd_core.fidelity import FidelityMeter
from pvd_core.paired_stats import (bootstrap_gain_ci, decision, paired_ranks, paired_spread, paired_t,
                                   pairs_to_decide, rule_outcomes, running_ci)


def test_paired_t_hand_computed():
    # d = [1, 2, 0]: mean 1, sample stdev 1. With df = 2 the t CDF is closed-form,
    # F(t) = 1/2 + t / (2 sqrt(2 + t^2)), so the 97.5 % quantile q solves q / sqrt(2 + q^2) = 0.95
    # and the two-sided p-value of t = mean / (sd / sqrt 3) = sqrt 3 is 1 - sqrt(3 / 5).
    r = paired_t([1.0, 2.0, 3.0], [2.0, 4.0, 3.0])
    q = 0.95 * math.sqrt(2.0 / (1.0 - 0.95 ** 2))
    assert r.n == 3 and r.mean == pytest.approx(1.0) and r.stdev == pytest.approx(1.0)
    assert r.ci95[0] == pytest.approx(1.0 - q / math.sqrt(3), rel=1e-9)
    assert r.ci95[1] == pytest.approx(1.0 + q / math.sqrt(3), rel=1e-9)
    assert r.p_value == pytest.approx(1.0 - math.sqrt(3.0 / 5.0), rel=1e-9)
    # The sign follows treated - baseline.
    assert paired_t([2.0, 4.0, 3.0], [1.0, 2.0, 3.0]).mean == pytest.approx(-1.0)


def test_paired_t_degenerate_samples():
    one = paired_t([1.0], [3.0])
    assert one.n == 1 and one.mean == 2.0 and math.isnan(one.ci95[0]) and math.isnan(one.p_value)
    flat = paired_t([1.0, 2.0], [2.0, 3.0])  # every pair +1: no spread
    assert flat.ci95 == (1.0, 1.0) and flat.p_value == 0.0
    with pytest.raises(ValueError, match="equal-length"):
        paired_t([1.0, 2.0], [1.0])


def test_paired_spread_hand_computed():
    # a = [-3, -1, 1, 3], b = [-1, 0, 0, 1]: sums [-4, -1, 1, 4], differences [2, 1, -1, -2], both
    # mean 0, so r = -18 / sqrt(34 * 10). With n = 4 (df 2) the two-sided p of Pearson's r is 1 - |r|.
    r = paired_spread([-3.0, -1.0, 1.0, 3.0], [-1.0, 0.0, 0.0, 1.0])
    assert r.n == 4
    assert r.sd_baseline == pytest.approx(math.sqrt(20.0 / 3.0)) and r.sd_treated == pytest.approx(math.sqrt(2.0 / 3.0))
    assert r.p_value == pytest.approx(1.0 - 18.0 / math.sqrt(340.0), rel=1e-9)
    # Only the spreads matter, not which arm is better on average: a shifted copy has p = nan (no spread
    # in the differences), and swapping the arms leaves p unchanged.
    assert math.isnan(paired_spread([1.0, 2.0, 4.0], [2.0, 3.0, 5.0]).p_value)
    assert paired_spread([-1.0, 0.0, 0.0, 1.0], [-3.0, -1.0, 1.0, 3.0]).p_value == pytest.approx(r.p_value)
    assert math.isnan(paired_spread([1.0, 2.0], [1.0, 3.0]).p_value)
    with pytest.raises(ValueError, match="equal-length"):
        paired_spread([1.0, 2.0], [1.0])


def test_paired_ranks_hand_computed():
    # d = 1, 2, 3, -0.5: |d| ranks 2, 3, 4, 1, so W- = 1; the exact two-sided p counts the sign
    # patterns with W <= 1 ({} and {rank 1}): 2 of 16, doubled: 0.25.
    r = paired_ranks([10.0, 10.0, 10.0, 10.0], [11.0, 12.0, 13.0, 9.5])
    assert (r.n, r.treated_ahead, r.baseline_ahead) == (4, 3, 1)
    assert r.median == pytest.approx(1.5) and r.wilcoxon_p == pytest.approx(0.25)
    # One huge gain and many small losses: the mean is positive, the typical pair is not.
    r = paired_ranks([0.0] * 7, [20.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0])
    assert r.median == -1.0 and (r.treated_ahead, r.baseline_ahead) == (1, 6)
    assert math.isnan(paired_ranks([1.0, 2.0], [1.0, 2.0]).wilcoxon_p)
    assert paired_ranks([], []).n == 0


def test_running_ci_is_paired_t_of_every_prefix():
    rng = np.random.default_rng(3)
    d = rng.normal(1.0, 3.0, size=(4, 12))
    lo, hi = running_ci(d)
    assert np.isnan(lo[:, 0]).all() and np.isnan(hi[:, 0]).all()
    for i in range(4):
        for k in range(2, 13):
            ci = paired_t(np.zeros(k), d[i, :k]).ci95
            assert (lo[i, k - 1], hi[i, k - 1]) == pytest.approx(ci, abs=1e-9)


def test_rule_outcomes_of_the_sequential_rule():
    # Almost no noise: a true +5 stops on "gain" at the first allowed look, a true -1 on "below_margin".
    quiet = np.random.default_rng(0).normal(0.0, 0.01, size=(50, 20))
    r = rule_outcomes(quiet, 5.0, min_pairs=8)
    assert (r.gain, r.below_margin, r.undecided, r.mean_pairs) == (1.0, 0.0, 0.0, 8.0)
    r = rule_outcomes(quiet, -1.0, min_pairs=8)
    assert (r.gain, r.below_margin, r.mean_pairs) == (0.0, 1.0, 8.0)
    # A true gain halfway to the margin with large noise: nothing decides within 10 pairs.
    loud = np.random.default_rng(1).normal(0.0, 50.0, size=(200, 10))
    assert rule_outcomes(loud, 0.75).undecided > 0.9
    # With no true gain, looking after every pair says "gain" more often than one look's 2.5 %
    # (the reason this is measured), and the three outcomes partition the benchmarks.
    noise = np.random.default_rng(2).normal(0.0, 3.0, size=(20_000, 40))
    r = rule_outcomes(noise, 0.0)
    one_look = rule_outcomes(noise[:, :8], 0.0)
    assert 0.015 < one_look.gain < 0.035 and r.gain > one_look.gain
    assert r.gain + r.below_margin + r.undecided == pytest.approx(1.0)


def test_decision_rule():
    assert decision((0.2, 3.0), n=8) == "gain"
    assert decision((-1.0, 1.4), n=8) == "below_margin"
    assert decision((0.1, 1.0), n=9) == "gain"  # both hold: the gain is the claim tested
    assert decision((-1.0, 2.0), n=12) is None
    assert decision((0.2, 3.0), n=7) is None  # never before min_pairs
    assert decision((math.nan, math.nan), n=10) is None


def _matrix(entries: dict[tuple[int, int], int]) -> np.ndarray:
    m = np.zeros((3, 3), dtype=np.int64)
    for (g, p), n in entries.items():
        m[g, p] = n
    return m


def _pairs_with(n: int, mean: float, stdev: float) -> list[float]:
    """n paired differences with exactly this mean and sample stdev."""
    z = np.linspace(-1.0, 1.0, n)
    return list(mean + stdev * z / z.std(ddof=1))


@pytest.mark.parametrize("mean,stdev,expected", [(0.5, 2.9, 35), (0.0, 2.9, 17), (3.0, 1.0, 8)])
def test_pairs_to_decide_is_where_the_rule_first_stops(mean, stdev, expected):
    # Checked against the real rule, not against a second copy of its formula: samples with the
    # projected mean and stdev are undecided one pair earlier and decided at the projection.
    n = pairs_to_decide(mean, stdev)
    assert n == expected
    decided = paired_t([0.0] * n, _pairs_with(n, mean, stdev))
    assert decision(decided.ci95, n) is not None
    if n > 8:
        before = paired_t([0.0] * (n - 1), _pairs_with(n - 1, mean, stdev))
        assert decision(before.ci95, n - 1) is None


def test_pairs_to_decide_undefined_inputs():
    assert pairs_to_decide(float("nan"), 1.0) is None and pairs_to_decide(0.5, float("nan")) is None
    assert pairs_to_decide(0.75, 2.9, limit=20) is None  # needs 60: beyond the limit
    assert pairs_to_decide(0.0, 1.0, margin=0.0) is None  # lo > 0 and hi < 0 both need a zero-width CI


def test_bootstrap_gain_ci_hand_computed():
    # Two scans, two classes. Scan A: both models perfect (gain 0). Scan B: the baseline puts one
    # of two class-1 points in class 2, the treated model is perfect. Resampling 2 scans gives
    # AA (p 1/4, gain 0), AB (1/2) or BB (1/4, = B alone): baseline IoU_1 = 2/4, IoU_2 = 4/6,
    # mIoU 7/12, gain 100 * 5/12. So the 2.5 % and 97.5 % quantiles are exactly 0 and 500/12.
    perfect = _matrix({(1, 1): 2, (2, 2): 2})
    flawed = _matrix({(1, 1): 1, (1, 2): 1, (2, 2): 2})
    base = np.stack([perfect, flawed])
    treated = np.stack([perfect, perfect])
    lo, hi = bootstrap_gain_ci([base], [treated], classes=[1, 2], n_resamples=4000, seed=0)
    assert lo == pytest.approx(0.0, abs=1e-9) and hi == pytest.approx(500.0 / 12.0, rel=1e-9)
    # Identical scans: every replicate is the full-data gain, the CI collapses onto it.
    lo, hi = bootstrap_gain_ci([np.stack([flawed] * 3)], [np.stack([perfect] * 3)], classes=[1, 2],
                               n_resamples=50)
    assert lo == pytest.approx(500.0 / 12.0) and hi == pytest.approx(500.0 / 12.0)
    # Two pairs: the mean over pairs (here 0 and 500/12 on identical scans).
    lo, hi = bootstrap_gain_ci([np.stack([flawed] * 2), np.stack([perfect] * 2)],
                               [np.stack([perfect] * 2)] * 2, classes=[1, 2], n_resamples=20)
    assert lo == pytest.approx(250.0 / 12.0) and hi == pytest.approx(250.0 / 12.0)
    with pytest.raises(ValueError, match="one shape"):
        bootstrap_gain_ci([base], [treated[:1]], classes=[1, 2])


def test_fidelity_meter_hand_computed():
    # Class 0 is never predicted (the Segmenter's rule): row 2's teacher label is 1, not 0.
    teacher = torch.tensor([[0.0, math.log(3.0), 0.0], [0.0, 0.0, 2.0], [9.0, 1.0, 0.0]])
    student = torch.tensor([[0.0, math.log(2.0), 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 1.0]])
    meter = FidelityMeter()
    meter.update(student[:2], teacher[:2])  # accumulated over two updates, as over two scans
    meter.update(student[2:], teacher[2:])
    got = meter.result()
    # Labels: teacher 1, 2, 1; student 1, 2, 2 -> agreement 2/3.
    # Row 0: p = [1, 3, 1] / 5, q = [1, 2, 1] / 4. Row 1: p = q, KL 0. Row 2 by the definition.
    p0, q0 = np.array([1.0, 3.0, 1.0]) / 5.0, np.array([1.0, 2.0, 1.0]) / 4.0
    p2 = np.exp([9.0, 1.0, 0.0]) / np.exp([9.0, 1.0, 0.0]).sum()
    q2 = np.exp([0.0, 0.0, 1.0]) / np.exp([0.0, 0.0, 1.0]).sum()
    kl0, kl2 = float((p0 * np.log(p0 / q0)).sum()), float((p2 * np.log(p2 / q2)).sum())
    assert got.points == 3 and got.agreement == pytest.approx(2.0 / 3.0)
    assert got.kl == pytest.approx((kl0 + kl2) / 3, rel=1e-5)
    with pytest.raises(ValueError, match="no points"):
        FidelityMeter().result()
