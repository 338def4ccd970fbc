"""The cylindrical voxelizer against a brute-force per-point reference (docs/method.md section 1)."""
from __future__ import annotations

import math
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pvd_core.config import GridConfig
from pvd_core.data import semantickitti as sk
from pvd_core.voxelizer import CylindricalVoxelizer, majority_labels

SMALL = dict(size=[32, 32, 8], rho=[0.0, 50.0], phi=[-math.pi, math.pi], z=[-4.0, 2.0])


def reference(points: np.ndarray, grid: GridConfig):
    """Per-point Python version of docs/method.md section 1: kept flags, cells and 9-d features (float64)."""
    lo = [grid.rho[0], grid.phi[0], grid.z[0]]
    hi = [grid.rho[1], grid.phi[1], grid.z[1]]
    interval = [(hi[d] - lo[d]) / (grid.size[d] - 1) for d in range(3)]
    kept, cells, feats, fractions = [], [], [], []
    for row in points:
        x, y, z = (float(v) for v in row[:3])
        intensity = float(row[3]) if len(row) > 3 else 0.0
        if not all(math.isfinite(v) for v in (x, y, z, intensity)):
            kept.append(False)
            continue
        pol = [math.hypot(x, y), math.atan2(y, x), z]
        inside = all(lo[d] <= pol[d] <= hi[d] for d in range(3))
        if grid.out_of_volume == "drop" and not inside:
            kept.append(False)
            continue
        kept.append(True)
        cell, frac = [], []
        for d in range(3):
            clipped = min(max(pol[d], lo[d]), hi[d])
            position = (clipped - lo[d]) / interval[d]
            cell.append(min(int(math.floor(position)), grid.size[d] - 1))
            frac.append(position - math.floor(position))
        centre = [(cell[d] + 0.5) * interval[d] + lo[d] for d in range(3)]
        feats.append([pol[0] - centre[0], pol[1] - centre[1], pol[2] - centre[2],
                      pol[0], pol[1], pol[2], x, y, intensity])
        cells.append(cell)
        fractions.append(frac)
    return (np.array(kept), np.array(cells, dtype=np.int64).reshape(-1, 3),
            np.array(feats).reshape(-1, 9), np.array(fractions).reshape(-1, 3))


def check_against_reference(points: np.ndarray, grid: GridConfig) -> None:
    scan = CylindricalVoxelizer(grid)(points)
    kept, cells, feats, frac = reference(points, grid)
    np.testing.assert_array_equal(scan.kept, kept)
    assert scan.num_points == int(kept.sum())
    # float32 vs float64 may flip a cell only for a point sitting on a cell border
    differ = (scan.grid_index != cells).any(axis=1)
    on_border = (np.minimum(frac, 1 - frac) < 1e-3).any(axis=1)
    assert not (differ & ~on_border).any(), points[scan.kept][differ & ~on_border][:5]
    assert differ.sum() <= max(2, 0.001 * len(differ))
    same = ~differ
    np.testing.assert_allclose(scan.point_features[same], feats[same], rtol=1e-5, atol=2e-4)
    # the occupied voxels are exactly the distinct cells, sorted by linear index
    uniq = np.unique(scan.grid_index, axis=0)
    np.testing.assert_array_equal(scan.voxel_coords, uniq)
    np.testing.assert_array_equal(scan.voxel_coords[scan.point_to_voxel], scan.grid_index)
    size = np.asarray(grid.size)
    assert (scan.voxel_coords >= 0).all() and (scan.voxel_coords < size).all()
    assert scan.voxel_coords.dtype == np.int32 and scan.point_features.dtype == np.float32
    assert scan.point_to_voxel.dtype == np.int64


def random_points(rng: np.random.Generator, n: int) -> np.ndarray:
    """Points in and well outside the default volume (rho to 70 m, z from -7 to 5 m)."""
    rho = rng.uniform(0, 70, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    pts = np.stack([rho * np.cos(phi), rho * np.sin(phi), rng.uniform(-7, 5, n),
                    rng.uniform(0, 1, n)], axis=1).astype(np.float32)
    return pts


def with_bad_rows(points: np.ndarray) -> np.ndarray:
    bad = np.array([[np.nan, 1, 0, 0.5], [1, np.inf, 0, 0.5], [1, 1, -np.inf, 0.5],
                    [1, 1, 0, np.nan], [np.nan] * 4], dtype=np.float32)
    out = np.concatenate([points, bad])
    return out[np.random.default_rng(5).permutation(len(out))]


@pytest.mark.parametrize("mode", ["clip", "drop"])
def test_random_points_match_reference(mode: str) -> None:
    grid = GridConfig(**SMALL, out_of_volume=mode)
    points = with_bad_rows(random_points(np.random.default_rng(0), 3000))
    outside = ~((np.hypot(points[:, 0], points[:, 1]) <= 50) & (points[:, 2] >= -4) & (points[:, 2] <= 2))
    assert outside.sum() > 500  # the test really exercises out-of-volume points
    check_against_reference(points, grid)


@pytest.mark.parametrize("mode", ["clip", "drop"])
def test_real_points_match_reference(real_scan_path: Path, mode: str) -> None:
    points = sk.read_points(real_scan_path)[::7]
    grid = GridConfig(size=[480, 360, 32], out_of_volume=mode)
    check_against_reference(with_bad_rows(points), grid)


def test_non_default_volume_and_three_columns() -> None:
    grid = GridConfig(size=[16, 48, 4], rho=[2.0, 20.0], phi=[-1.0, 2.0], z=[-1.0, 1.0],
                      out_of_volume="drop")
    points = random_points(np.random.default_rng(1), 800)[:, :3] * 0.4
    check_against_reference(points, grid)
    scan = CylindricalVoxelizer(grid)(points)
    np.testing.assert_array_equal(scan.point_features[:, 8], 0.0)  # no intensity column


def test_clip_mode_border_cells() -> None:
    grid = GridConfig(**SMALL, out_of_volume="clip")
    vox = CylindricalVoxelizer(grid)
    points = np.array([
        [0.0, 0.0, -4.0, 0],     # the min corner -> cell (0, 16, 0)  (phi = 0 is mid-range)
        [100.0, 0.0, 10.0, 0],   # far outside: clipped to the last rho and z cells
        [-50.0, 0.0, 2.0, 0],    # rho = 50, phi = pi, z = 2: all at their max -> last cells
        [0.0, -5.0, -9.0, 0],    # below the z range -> z cell 0
    ], dtype=np.float32)
    scan = vox(points)
    assert scan.kept.all()
    assert scan.grid_index[1, 0] == 31 and scan.grid_index[1, 2] == 7
    np.testing.assert_array_equal(scan.grid_index[2], [31, 31, 7])
    assert scan.grid_index[3, 2] == 0 and scan.grid_index[0, 0] == 0 and scan.grid_index[0, 2] == 0
    # Clipped points keep their true coordinates in the features (upstream: offsets from the
    # border voxel centre are simply large).
    np.testing.assert_allclose(scan.point_features[1, 3:6], [100.0, 0.0, 10.0], atol=1e-5)
    dropped = CylindricalVoxelizer(GridConfig(**SMALL, out_of_volume="drop"))(points)
    np.testing.assert_array_equal(dropped.kept, [True, False, True, False])


def test_labels_follow_kept_points() -> None:
    grid = GridConfig(**SMALL, out_of_volume="drop")
    rng = np.random.default_rng(2)
    points = with_bad_rows(random_points(rng, 500))
    labels = rng.integers(0, 20, len(points))
    scan = CylindricalVoxelizer(grid)(points, labels)
    np.testing.assert_array_equal(scan.point_labels, labels[scan.kept])
    assert scan.voxel_labels.shape == (scan.num_voxels,)
    with pytest.raises(ValueError, match="labels"):
        CylindricalVoxelizer(grid)(points, labels[:-1])


def test_empty_and_malformed_input() -> None:
    vox = CylindricalVoxelizer(GridConfig(**SMALL))
    scan = vox(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert scan.num_points == 0 and scan.num_voxels == 0
    assert scan.voxel_coords.shape == (0, 3) and scan.voxel_labels.shape == (0,)
    all_nan = vox(np.full((3, 4), np.nan, np.float32))
    assert all_nan.num_points == 0 and not all_nan.kept.any()
    with pytest.raises(ValueError, match="shape"):
        vox(np.zeros((5, 2), np.float32))


def majority_reference(point_to_voxel: np.ndarray, labels: np.ndarray, num_voxels: int) -> np.ndarray:
    out = np.zeros(num_voxels, dtype=np.int64)
    for v in range(num_voxels):
        counts = Counter(int(lab) for lab in labels[point_to_voxel == v] if lab != 0)
        if counts:
            best = max(counts.values())
            out[v] = min(label for label, c in counts.items() if c == best)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_majority_labels_against_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_voxels = 300
    p2v = rng.integers(0, num_voxels, 3000)
    # Few classes and many zeros: plenty of ties and zero-majority voxels.
    labels = np.where(rng.random(3000) < 0.5, 0, rng.integers(1, 5, 3000))
    got = majority_labels(p2v, labels, num_voxels)
    np.testing.assert_array_equal(got, majority_reference(p2v, labels, num_voxels))


def test_majority_label_zero_loses() -> None:
    p2v = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    labels = np.array([0, 0, 0, 5, 0, 0, 3, 7, 7, 3, 9])
    # voxel 0: one 5 beats three 0s; voxel 1: only 0s; voxel 2: tie 3 vs 7 -> smaller;
    # voxel 3: a single point; voxel 4: empty -> 0
    np.testing.assert_array_equal(majority_labels(p2v, labels, 5), [5, 0, 3, 9, 0])


def test_voxel_labels_on_real_scan(real_scan_path: Path, real_label_path: Path) -> None:
    points = sk.read_points(real_scan_path)
    labels = sk.read_labels(real_label_path, num_points=len(points)).astype(np.int64)
    scan = CylindricalVoxelizer(GridConfig(size=[480, 360, 32]))(points, labels)
    assert scan.num_points == len(points)  # clip mode keeps every finite point
    # docs/data.md (real test samples): this scan occupies 46 952 voxels of the 480 x 360 x 32 grid.
    assert scan.num_voxels == 46_952
    # Brute force on a subset of voxels (the full Python loop would be slow).
    chosen = np.arange(0, scan.num_voxels, 97)
    for v in chosen:
        counts = Counter(int(lab) for lab in scan.point_labels[scan.point_to_voxel == v] if lab != 0)
        expected = 0
        if counts:
            best = max(counts.values())
            expected = min(lab for lab, c in counts.items() if c == best)
        assert scan.voxel_labels[v] == expected


def test_voxelizer_pickles_for_spawned_workers() -> None:
    vox = CylindricalVoxelizer(GridConfig(**SMALL))
    points = random_points(np.random.default_rng(4), 400)
    expected = vox(points)
    clone = pickle.loads(pickle.dumps(vox))
    got = clone(points)
    np.testing.assert_array_equal(got.point_features, expected.point_features)
    np.testing.assert_array_equal(got.voxel_coords, expected.voxel_coords)
    np.testing.assert_array_equal(got.point_to_voxel, expected.point_to_voxel)
