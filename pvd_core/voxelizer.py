"""The one cylindrical voxelizer (METHOD.md section 1), used by training, inference and tools.

Index assignment follows upstream Cylinder3D (interval = range / (grid - 1), clipping to
the border voxels) so that imported weights see the inputs they were trained on.
Everything is vectorised numpy: this runs on the per-scan hot path of the ROS node.
"""
from __future__ import annotations

from dataclasses import dataclass
import threading
from typing import Optional

import numpy as np
import torch

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
    """Maps (N, >=4) x, y, z, intensity points to cylindrical voxels and 9-d point features.

    The element-wise maths runs through torch (multi-threaded, and about 20x faster than numpy
    on the strided columns of an (N, 4) array); cells are computed in float64 like upstream's
    numpy code, so border cases land in the same voxel as there. Occupied voxels are found with
    a sort plus a per-thread dense lookup table (about 2x faster than ``np.unique``).
    """

    def __init__(self, grid: GridConfig):
        self.grid = grid
        self.size = np.asarray(grid.size, dtype=np.int64)
        self.min_bound = np.asarray(grid.min_bound, dtype=np.float64)
        self.max_bound = np.asarray(grid.max_bound, dtype=np.float64)
        self.interval = (self.max_bound - self.min_bound) / (self.size - 1)
        self._lo = torch.from_numpy(self.min_bound)
        self._hi = torch.from_numpy(self.max_bound)
        self._interval = torch.from_numpy(self.interval)
        self._top = torch.from_numpy(self.size - 1)
        self._local = threading.local()  # the lookup table is scratch space: one per thread

    def __getstate__(self) -> dict:
        # DataLoader workers started by spawn/forkserver receive the dataset (and this
        # voxelizer) pickled; the per-thread scratch table is rebuilt on the other side.
        state = self.__dict__.copy()
        del state["_local"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def polar(self, xyz: np.ndarray) -> np.ndarray:
        """(N, 3) cartesian -> (N, 3) float32 (rho, phi, z)."""
        t = torch.from_numpy(np.ascontiguousarray(xyz, dtype=np.float32))
        return self._polar(t).numpy()

    @staticmethod
    def _polar(xyz: torch.Tensor) -> torch.Tensor:
        x, y = xyz[:, 0], xyz[:, 1]
        return torch.stack([torch.hypot(x, y), torch.atan2(y, x), xyz[:, 2]], dim=1)

    def in_volume(self, pol: np.ndarray) -> np.ndarray:
        # Bounds rounded to the points' precision: float32 atan2 returns float32(pi) > math.pi
        # for points straight behind the sensor, which must count as inside [-pi, pi].
        pol = np.asarray(pol)
        return np.all((pol >= self.min_bound.astype(pol.dtype)) & (pol <= self.max_bound.astype(pol.dtype)), axis=1)

    def cell_of(self, pol: np.ndarray) -> np.ndarray:
        """Grid cell (int64) of polar points, clipped to the volume (upstream rule)."""
        return self._cells(torch.from_numpy(np.asarray(pol)).double()).numpy()

    def _cells(self, pol64: torch.Tensor) -> torch.Tensor:
        cells = torch.floor((torch.clamp(pol64, self._lo, self._hi) - self._lo) / self._interval).long()
        return torch.minimum(cells, self._top)

    def voxel_centres(self, cells: np.ndarray) -> np.ndarray:
        """Polar centre (rho, phi, z) of integer cells, float32."""
        return ((cells.astype(np.float64) + 0.5) * self.interval + self.min_bound).astype(np.float32)

    def linear_index(self, cells: np.ndarray) -> np.ndarray:
        return (cells[:, 0] * self.size[1] + cells[:, 1]) * self.size[2] + cells[:, 2]

    def __call__(self, points: np.ndarray, labels: Optional[np.ndarray] = None) -> VoxelizedScan:
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] < 3:
            raise ValueError(f"points must be an (N, >=3) array, got shape {points.shape}")
        if labels is not None and len(labels) != len(points):
            raise ValueError(f"{len(labels)} labels for {len(points)} points")
        pts = torch.from_numpy(np.ascontiguousarray(points[:, :4], dtype=np.float32))
        if pts.shape[1] == 3:
            pts = torch.cat([pts, torch.zeros(len(pts), 1)], dim=1)
        # One reduction finds NaN/Inf in any of x, y, z, intensity (much cheaper than isfinite per column).
        kept = torch.isfinite(pts.sum(dim=1))
        pol = self._polar(pts)
        if self.grid.out_of_volume == "drop":
            # Compare in float32 (see in_volume): float32(pi) from atan2 is inside [-pi, pi].
            kept &= ((pol >= self._lo.float()) & (pol <= self._hi.float())).all(dim=1)
        if not bool(kept.all()):
            pts, pol = pts[kept], pol[kept]
        pol64 = pol.double()
        cells = self._cells(pol64)
        features = torch.empty((len(pts), POINT_FEATURE_DIM), dtype=torch.float32)
        features[:, 0:3] = pol64 - ((cells.double() + 0.5) * self._interval + self._lo)
        features[:, 3:6] = pol
        features[:, 6:8] = pts[:, :2]
        features[:, 8] = pts[:, 3]
        cells_np = cells.numpy()
        voxel_linear, point_to_voxel = self._occupied(self.linear_index(cells_np))
        kept_np = kept.numpy()
        point_labels = voxel_labels = None
        if labels is not None:
            point_labels = np.asarray(labels, dtype=np.int64)[kept_np]
            voxel_labels = majority_labels(point_to_voxel, point_labels, len(voxel_linear))
        return VoxelizedScan(
            kept=kept_np,
            point_features=features.numpy(),
            grid_index=cells_np.astype(np.int32),
            voxel_coords=self._cells_from_linear(voxel_linear),
            point_to_voxel=point_to_voxel.astype(np.int64),
            point_labels=point_labels,
            voxel_labels=voxel_labels,
        )

    def _occupied(self, linear: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sorted unique linear indices and each point's row among them (== np.unique's)."""
        lut = getattr(self._local, "lut", None)
        if lut is None:
            lut = self._local.lut = np.empty(int(np.prod(self.size)), dtype=np.int32)
        small = linear.astype(np.int32) if lut.size < 2**31 else linear
        ordered = np.sort(small)
        first = np.empty(len(ordered), dtype=bool)
        first[:1] = True
        np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
        uniq = ordered[first].astype(np.int64)
        lut[uniq] = np.arange(len(uniq), dtype=np.int32)
        return uniq, lut[small]

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
