"""Seeded training augmentation (docs/method.md section 5)."""
from __future__ import annotations

import numpy as np
import pytest

from pvd_core.augment import FLIP_X, FLIP_XY, FLIP_Y, AugmentParams, Augmenter, transform_points
from pvd_core.config import AugmentConfig


def cloud(n: int = 2000, extra: int = 2) -> np.ndarray:
    rng = np.random.default_rng(123)
    pts = np.concatenate([rng.uniform(-40, 40, (n, 2)), rng.uniform(-3, 1, (n, 1)),
                          rng.uniform(0, 1, (n, 1 + extra))], axis=1)
    return pts.astype(np.float32)


def test_same_seed_same_output_and_input_untouched() -> None:
    aug = Augmenter(AugmentConfig())
    pts = cloud()
    before = pts.copy()
    a = aug(pts, np.random.default_rng(7))
    b = aug(pts, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(pts, before)
    assert a.dtype == pts.dtype and a.shape == pts.shape


def test_different_seeds_differ() -> None:
    aug = Augmenter(AugmentConfig())
    pts = cloud()
    outs = [aug(pts, np.random.default_rng(seed)) for seed in range(5)]
    for i in range(5):
        for j in range(i + 1, 5):
            assert not np.allclose(outs[i][:, :3], outs[j][:, :3])


def test_intensity_and_extra_columns_untouched() -> None:
    pts = cloud(extra=3)
    out = Augmenter(AugmentConfig())(pts, np.random.default_rng(1))
    np.testing.assert_array_equal(out[:, 3:], pts[:, 3:])
    assert not np.allclose(out[:, :3], pts[:, :3])


@pytest.mark.parametrize("seed", range(6))
def test_rho_changes_only_by_scale_under_flip_and_rotation(seed: int) -> None:
    cfg = AugmentConfig(translate_std=0.0, scale=[0.9, 1.1], rotation_deg=180.0)
    pts = cloud()
    aug = Augmenter(cfg)
    params = aug.draw(np.random.default_rng(seed))
    out = aug(pts, np.random.default_rng(seed))
    rho_in = np.hypot(pts[:, 0].astype(np.float64), pts[:, 1])
    rho_out = np.hypot(out[:, 0].astype(np.float64), out[:, 1])
    ratio = rho_out / rho_in
    assert 0.9 <= params.scale <= 1.1
    np.testing.assert_allclose(ratio, params.scale, rtol=1e-5)
    np.testing.assert_array_equal(out[:, 2], pts[:, 2])  # no translation -> z unchanged


def test_flip_and_rotation_follow_upstream_conventions() -> None:
    pts = np.array([[1.0, 2.0, 3.0, 0.5]], dtype=np.float32)
    np.testing.assert_allclose(transform_points(pts, AugmentParams(flip=FLIP_X))[0, :3], [-1, 2, 3])
    np.testing.assert_allclose(transform_points(pts, AugmentParams(flip=FLIP_Y))[0, :3], [1, -2, 3])
    np.testing.assert_allclose(transform_points(pts, AugmentParams(flip=FLIP_XY))[0, :3], [-1, -2, 3])
    rotated = transform_points(pts, AugmentParams(angle_deg=90.0))  # counter-clockwise about z
    np.testing.assert_allclose(rotated[0, :3], [-2, 1, 3], atol=1e-6)
    moved = transform_points(pts, AugmentParams(scale=2.0, translation=(0.5, -0.5, 1.0)))
    np.testing.assert_allclose(moved[0], [2.5, 3.5, 4.0, 0.5])
    with pytest.raises(ValueError, match="flip"):
        transform_points(pts, AugmentParams(flip=4))


def test_draws_stay_in_configured_ranges() -> None:
    cfg = AugmentConfig(rotation_deg=45.0, scale=[0.95, 1.05], translate_std=0.1)
    aug = Augmenter(cfg)
    rng = np.random.default_rng(0)
    draws = [aug.draw(rng) for _ in range(2000)]
    angles = np.array([d.angle_deg for d in draws])
    scales = np.array([d.scale for d in draws])
    trans = np.array([d.translation for d in draws])
    assert np.abs(angles).max() <= 45.0 and np.abs(angles).max() > 40.0
    assert scales.min() >= 0.95 and scales.max() <= 1.05
    assert abs(trans.std() - 0.1) < 0.01 and abs(trans.mean()) < 0.01
    assert set(d.flip for d in draws) == {0, 1, 2, 3}


def test_disabled_parts() -> None:
    pts = cloud()
    off = AugmentConfig(enabled=False)
    out = Augmenter(off)(pts, np.random.default_rng(3))
    np.testing.assert_array_equal(out, pts)
    assert out is not pts
    # Every part set to its identity value: the output equals the input.
    neutral = AugmentConfig(flip=False, rotation_deg=0.0, scale=[1.0, 1.0], translate_std=0.0)
    np.testing.assert_allclose(Augmenter(neutral)(pts, np.random.default_rng(3)), pts, atol=1e-5)
    # Switching flips off does not change what the other parts draw.
    a = Augmenter(AugmentConfig(flip=False)).draw(np.random.default_rng(9))
    b = Augmenter(AugmentConfig(flip=True)).draw(np.random.default_rng(9))
    assert (a.angle_deg, a.scale, a.translation) == (b.angle_deg, b.scale, b.translation)
    assert a.flip == 0


def test_rejects_bad_shape() -> None:
    with pytest.raises(ValueError, match="shape"):
        Augmenter(AugmentConfig())(np.zeros((4, 2), np.float32), np.random.default_rng(0))
