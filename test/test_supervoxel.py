"""Supervoxel partition and samplers: ids against brute force, weights against the formula of
docs/method.md section 4.4 computed point by point, and the sampler's frequencies against the exact
inclusion probabilities of successive weighted sampling without replacement."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pvd_core.losses.supervoxel import (class_weights_from_counts, num_supervoxels, sample_supervoxels,
                                        supervoxel_grid, supervoxel_ids, supervoxel_weights)


def _random_coords(gen: torch.Generator, v: int, shape, batch_size: int) -> torch.Tensor:
    return torch.stack([torch.randint(0, batch_size, (v,), generator=gen)]
                       + [torch.randint(0, s, (v,), generator=gen) for s in shape], dim=1).int()


def test_supervoxel_ids_match_brute_force_with_partial_blocks():
    shape, sv = [32, 36, 8], [10, 12, 3]  # 32/10 and 8/3 leave partial border blocks
    assert supervoxel_grid(shape, sv) == (4, 3, 3)
    gen = torch.Generator().manual_seed(0)
    coords = _random_coords(gen, 500, shape, batch_size=3)
    ids = supervoxel_ids(coords, shape, sv)
    assert ids.dtype == torch.int64
    # Brute force: enumerate every block of every scan and test membership by bounds.
    table = {}
    for b in range(3):
        for i, j, k in itertools.product(range(4), range(3), range(3)):
            table[(b, i, j, k)] = len(table)
    for row, got in zip(coords.tolist(), ids.tolist()):
        b, r, p, z = row
        key = next(key for key in table if key[0] == b
                   and key[1] * 10 <= r < (key[1] + 1) * 10
                   and key[2] * 12 <= p < (key[2] + 1) * 12
                   and key[3] * 3 <= z < (key[3] + 1) * 3)
        assert got == table[key]
    assert int(ids.max()) < num_supervoxels(3, shape, sv) == 3 * 4 * 3 * 3


def test_supervoxel_ids_default_grid_has_96_blocks():
    assert supervoxel_grid([480, 360, 32], [120, 60, 8]) == (4, 6, 4)
    corner = torch.tensor([[1, 479, 359, 31]], dtype=torch.int32)
    assert int(supervoxel_ids(corner, [480, 360, 32], [120, 60, 8])[0]) == 2 * 96 - 1


def test_class_weights_from_counts():
    counts = np.array([1000, 400, 100, 25, 0])
    w = class_weights_from_counts(counts)
    share = counts[1:4] / counts[1:].sum()
    expected = 1.0 / np.sqrt(share)
    expected /= expected.max()
    assert float(w[0]) == 0.0
    np.testing.assert_allclose(w[1:4].numpy(), expected, rtol=1e-6)
    assert float(w[3]) == pytest.approx(1.0)
    assert float(w[4]) == 1.0  # never-seen class: treated as the rarest
    assert torch.equal(class_weights_from_counts(torch.zeros(4)), torch.tensor([0.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="counts"):
        class_weights_from_counts(np.array([[1, 2]]))


def _brute_force_weights(sv, labels, rho, n, cw, sampler, gamma, min_points, rho_max):
    out = []
    for k in range(n):
        members = [i for i in range(len(sv)) if sv[i] == k]
        if not members:
            out.append(0.0)
            continue
        classes = {}
        for i in members:
            classes[labels[i]] = classes.get(labels[i], 0) + 1
        a = max([cw[c] for c, cnt in classes.items() if cnt >= min_points], default=0.0)
        b = min(1.0, sum(rho[i] for i in members) / len(members) / rho_max)
        out.append({"difficulty": a * (1 + gamma * b), "class": a, "distance": 1 + gamma * b,
                    "random": 1.0}[sampler])
    return out


@pytest.mark.parametrize("sampler", ["difficulty", "class", "distance", "random"])
def test_supervoxel_weights_match_formula(sampler):
    gen = torch.Generator().manual_seed(1)
    n, P = 12, 300
    # Supervoxels 3 and 7 stay empty; labels skewed so some classes miss min_points.
    choices = torch.tensor([k for k in range(n) if k not in (3, 7)])
    sv = choices[torch.randint(0, len(choices), (P,), generator=gen)]
    labels = torch.multinomial(torch.tensor([0.2, 0.5, 0.2, 0.08, 0.02]), P, replacement=True, generator=gen)
    rho = torch.rand(P, generator=gen) * 60.0  # some beyond rho_max: b is clamped to 1
    cw = class_weights_from_counts(np.array([0, 50, 20, 8, 2]))
    got = supervoxel_weights(sv, labels, rho, n, cw, sampler=sampler, gamma=0.7, min_points=3, rho_max=50.0)
    want = _brute_force_weights(sv.tolist(), labels.tolist(), rho.tolist(), n, cw.tolist(), sampler, 0.7, 3, 50.0)
    np.testing.assert_allclose(got.numpy(), np.array(want), rtol=1e-5, atol=1e-7)
    assert float(got[3]) == 0.0 and float(got[7]) == 0.0


def test_min_points_gates_the_class_term():
    sv = torch.zeros(10, dtype=torch.long)
    labels = torch.tensor([1] * 6 + [3] * 4)  # class 3 (rarest) has only 4 points
    cw = torch.tensor([0.0, 0.2, 0.5, 1.0])
    rho = torch.zeros(10)
    w5 = supervoxel_weights(sv, labels, rho, 1, cw, sampler="class", min_points=5)
    w4 = supervoxel_weights(sv, labels, rho, 1, cw, sampler="class", min_points=4)
    assert float(w5[0]) == pytest.approx(0.2)
    assert float(w4[0]) == pytest.approx(1.0)
    only_unlabeled = supervoxel_weights(sv, torch.zeros(10, dtype=torch.long), rho, 1, cw, sampler="difficulty")
    assert float(only_unlabeled[0]) == 0.0
    with pytest.raises(ValueError, match="sampler"):
        supervoxel_weights(sv, labels, rho, 1, cw, sampler="hardest")


def _chi_square_p_value(observed: np.ndarray, expected: np.ndarray) -> float:
    stat = float(((observed - expected) ** 2 / expected).sum())
    dof = len(observed) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0, dtype=torch.float64),
                                         torch.tensor(stat / 2.0, dtype=torch.float64)))


def _exact_inclusion(weights: np.ndarray, k: int) -> np.ndarray:
    """Inclusion probability of each item under successive sampling, by enumerating ordered draws."""
    n = len(weights)
    incl = np.zeros(n)
    for seq in itertools.permutations([i for i in range(n) if weights[i] > 0], k):
        prob, remaining = 1.0, weights.sum()
        for i in seq:
            prob *= weights[i] / remaining
            remaining -= weights[i]
        incl[list(seq)] += prob
    return incl


WEIGHTS = np.array([0.0, 1.0, 2.0, 3.0, 0.0, 4.0, 0.5, 1.5])


def test_sampler_k1_frequencies_match_weights_chi_square():
    gen = torch.Generator().manual_seed(1234)
    w = torch.tensor(WEIGHTS, dtype=torch.float32)
    draws = 20000
    counts = np.zeros(len(WEIGHTS))
    for _ in range(draws):
        (i,) = sample_supervoxels(w, 1, gen).tolist()
        counts[i] += 1
    assert counts[WEIGHTS == 0].sum() == 0
    nz = WEIGHTS > 0
    expected = draws * WEIGHTS[nz] / WEIGHTS.sum()
    assert _chi_square_p_value(counts[nz], expected) > 1e-3


def test_sampler_k2_matches_exact_inclusion_and_k3_sanity():
    gen = torch.Generator().manual_seed(99)
    w = torch.tensor(WEIGHTS, dtype=torch.float32)
    draws = 12000
    counts2 = np.zeros(len(WEIGHTS))
    counts3 = np.zeros(len(WEIGHTS))
    for _ in range(draws):
        s2 = sample_supervoxels(w, 2, gen).tolist()
        s3 = sample_supervoxels(w, 3, gen).tolist()
        assert len(set(s2)) == 2 and len(set(s3)) == 3  # without replacement
        counts2[s2] += 1
        counts3[s3] += 1
    incl = _exact_inclusion(WEIGHTS, 2)
    assert incl.sum() == pytest.approx(2.0)
    nz = WEIGHTS > 0
    # Per item: binomial z-score within 4.5 sigma of the exact inclusion probability.
    sigma = np.sqrt(draws * incl[nz] * (1 - incl[nz]))
    assert np.all(np.abs(counts2[nz] - draws * incl[nz]) < 4.5 * sigma)
    assert counts2[~nz].sum() == 0 and counts3[~nz].sum() == 0
    # K=3 sanity: inclusion is monotone in weight (the weights are well separated) and
    # flatter than proportional (without replacement saturates the heavy items).
    order = np.argsort(WEIGHTS[nz])
    freq3 = counts3[nz][order] / draws
    assert np.all(np.diff(freq3) > 0)
    assert freq3[-1] < 3 * WEIGHTS[nz].max() / WEIGHTS.sum()


def test_sampler_returns_fewer_when_few_are_nonempty():
    gen = torch.Generator().manual_seed(0)
    w = torch.tensor([0.0, 2.0, 0.0, 0.1])
    for _ in range(50):
        assert sorted(sample_supervoxels(w, 6, gen).tolist()) == [1, 3]
    assert sample_supervoxels(torch.zeros(5), 6, gen).numel() == 0
    with pytest.raises(ValueError, match="weights"):
        sample_supervoxels(torch.tensor([1.0, -1.0]), 1, gen)


def test_empty_supervoxels_never_drawn_by_any_sampler():
    gen = torch.Generator().manual_seed(5)
    shape, svs = [32, 32, 8], [8, 8, 4]
    n = num_supervoxels(2, shape, svs)
    coords = _random_coords(gen, 40, [8, 32, 8], batch_size=2)  # rho < 8: only 1/4 of the blocks occupied
    vsv = supervoxel_ids(coords, shape, svs)
    p2v = torch.randint(0, 40, (400,), generator=gen)
    psv = vsv[p2v]
    labels = torch.randint(0, 4, (400,), generator=gen)
    occupied = set(psv.tolist())
    cw = torch.tensor([0.0, 0.3, 0.6, 1.0])
    for sampler in ("difficulty", "class", "distance", "random"):
        w = supervoxel_weights(psv, labels, torch.rand(400, generator=gen) * 50, n, cw, sampler=sampler, min_points=1)
        for _ in range(200):
            assert set(sample_supervoxels(w, 6, gen).tolist()) <= occupied
    assert n == 64 and len(occupied) <= 32  # half the batch's blocks at most: plenty of empty ones
