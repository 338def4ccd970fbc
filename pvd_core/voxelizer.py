"""The one cylindrical voxelizer (METHOD.md section 1), used by training, inference and tools.

Index assignment follows upstream Cylinder3D (interval = range / (grid - 1), clipping to
the border voxels) so that imported weights see the inputs they were trained on.
Everything is vectorised numpy: this runs on the per-scan hot path of the ROS node.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from pvd_core.config import GridConfig

POINT_FEATURE_DIM = 9


@dataclass
class VoxelizedScan:
    """One scan on the cylindrical grid.

    ``kept`` selects the input rows that reach the network (finite, and inside the volume
    when ``out_of_volume`` is 'drop'); every other per-point array here is over kept rows.
    """

    kept: np.ndarray  # (N,) bool over the input points
    point_features: np.ndarray  # (M, 9) float32 [drho, dphi, dz, rho, phi, z, x, y, intensity]
    grid_index: np.ndarray  # (M, 3) int32 (rho, phi, z) cell of each kept point
    voxel_coords: np.ndarray  # (V, 3) int32 occupied cells, sorted by linear index
    point_to_voxel: np.ndarray  # (M,) int64 row of voxel_coords holding each kept point
    point_labels: Optional[np.ndarray] = None  # (M,) int64 training classes
    voxel_labels: Optional[np.ndarray] = None  # (V,) int64 majority labels

    @property
    def num_points(self) -> int:
        return int(self.point_features.shape[0])

    @property
    def num_voxels(self) -> int:
        return int(self.voxel_coords.shape[0])


class CylindricalVoxelizer:
    """Maps (N, >=4) x, y, z, intensity points to cylindrical voxels and 9-d point features."""

    def __init__(self, grid: GridConfig):
        self.grid = grid
        self.size = np.asarray(grid.size, dtype=np.int64)
        self.min_bound = np.asarray(grid.min_bound, dtype=np.float32)
        self.max_bound = np.asarray(grid.max_bound, dtype=np.float32)
        self.interval = (self.max_bound - self.min_bound) / (self.size - 1).astype(np.float32)

    def polar(self, xyz: np.ndarray) -> np.ndarray:
        """(N, 3) cartesian -> (N, 3) float32 (rho, phi, z)."""
        rho = np.hypot(xyz[:, 0], xyz[:, 1])
        phi = np.arctan2(xyz[:, 1], xyz[:, 0])
        return np.stack([rho, phi, xyz[:, 2]], axis=1).astype(np.float32, copy=False)

    def in_volume(self, pol: np.ndarray) -> np.ndarray:
        return np.all((pol >= self.min_bound) & (pol <= self.max_bound), axis=1)

    def cell_of(self, pol: np.ndarray) -> np.ndarray:
        """Grid cell of polar points, clipped to the volume (upstream rule)."""
        clipped = np.clip(pol, self.min_bound, self.max_bound)
        idx = np.floor((clipped - self.min_bound) / self.interval).astype(np.int64)
        return np.minimum(idx, self.size - 1)

    def voxel_centres(self, cells: np.ndarray) -> np.ndarray:
        """Polar centre (rho, phi, z) of integer cells, float32."""
        return ((cells.astype(np.float32) + 0.5) * self.interval + self.min_bound).astype(np.float32)

    def linear_index(self, cells: np.ndarray) -> np.ndarray:
        return (cells[:, 0] * self.size[1] + cells[:, 1]) * self.size[2] + cells[:, 2]

    def __call__(self, points: np.ndarray, labels: Optional[np.ndarray] = None) -> VoxelizedScan:
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] < 3:
            raise ValueError(f"points must be an (N, >=3) array, got shape {points.shape}")
        if labels is not None and len(labels) != len(points):
            raise ValueError(f"{len(labels)} labels for {len(points)} points")
        xyz = points[:, :3].astype(np.float32, copy=False)
        intensity = (points[:, 3].astype(np.float32, copy=False) if points.shape[1] > 3
                     else np.zeros(len(points), np.float32))
        kept = np.isfinite(xyz).all(axis=1) & np.isfinite(intensity)
        pol_all = self.polar(xyz)
        if self.grid.out_of_volume == "drop":
            with np.errstate(invalid="ignore"):
                kept &= self.in_volume(pol_all)
        if not kept.all():
            xyz, intensity, pol = xyz[kept], intensity[kept], pol_all[kept]
        else:
            pol = pol_all
        cells = self.cell_of(pol)
        centres = self.voxel_centres(cells)
        features = np.empty((len(xyz), POINT_FEATURE_DIM), dtype=np.float32)
        features[:, 0:3] = pol - centres
        features[:, 3:6] = pol
        features[:, 6:8] = xyz[:, :2]
        features[:, 8] = intensity
        linear = self.linear_index(cells)
        uniq, point_to_voxel = np.unique(linear, return_inverse=True)
        voxel_coords = self._cells_from_linear(uniq)
        point_labels = voxel_labels = None
        if labels is not None:
            point_labels = np.asarray(labels, dtype=np.int64)[kept]
            voxel_labels = majority_labels(point_to_voxel, point_labels, len(uniq))
        return VoxelizedScan(
            kept=kept,
            point_features=features,
            grid_index=cells.astype(np.int32),
            voxel_coords=voxel_coords,
            point_to_voxel=point_to_voxel.astype(np.int64).reshape(-1),
            point_labels=point_labels,
            voxel_labels=voxel_labels,
        )

    def _cells_from_linear(self, linear: np.ndarray) -> np.ndarray:
        z = linear % self.size[2]
        rest = linear // self.size[2]
        return np.stack([rest // self.size[1], rest % self.size[1], z], axis=1).astype(np.int32)


def majority_labels(point_to_voxel: np.ndarray, point_labels: np.ndarray, num_voxels: int) -> np.ndarray:
    """Most frequent label per voxel; label 0 loses to any other label present.

    Ties between non-zero labels go to the smaller class index (deterministic).
    """
    if num_voxels == 0:
        return np.zeros(0, dtype=np.int64)
    num_labels = int(point_labels.max()) + 1 if len(point_labels) else 1
    pair = point_to_voxel.astype(np.int64) * num_labels + point_labels
    pairs, counts = np.unique(pair, return_counts=True)
    voxel = pairs // num_labels
    label = pairs % num_labels
    # Rank: any non-zero label beats label 0, then higher count, then smaller label.
    score = (label > 0).astype(np.int64)
    order = np.lexsort((-label, counts, score, voxel))  # last key is primary
    last_of_voxel = np.r_[voxel[order][1:] != voxel[order][:-1], True]
    result = np.zeros(num_voxels, dtype=np.int64)
    chosen = order[last_of_voxel]
    result[voxel[chosen]] = label[chosen]
    return result
