"""The one cylindrical voxelizer (docs/method.md section 1), used by training, inference and tools.

Index assignment follows upstream Cylinder3D (interval = range / (grid - 1), clipping to
the border voxels) so that imported weights see the inputs they were trained on.
Everything is vectorised (numpy and torch): this runs on the per-scan hot path of the ROS node,
where bench/node_pipeline.py holds it to a few milliseconds for a 123 k-point scan.
"""
from __future__ import annotations

from dataclasses import dataclass
import threading
from typing import Optional

import numpy as np
import torch

from pvd_core.config import GridConfig

POINT_FEATURE_DIM = 9


class PointVoxelCounts:
    """``num_points`` / ``num_voxels`` of anything with ``point_features`` and ``voxel_coords`` rows
    (a scan's numpy arrays or a batch's tensors)."""

    point_features: "np.ndarray | torch.Tensor"
    voxel_coords: "np.ndarray | torch.Tensor"

    @property
    def num_points(self) -> int:
        return int(self.point_features.shape[0])

    @property
    def num_voxels(self) -> int:
        return int(self.voxel_coords.shape[0])


@dataclass
class VoxelizedScan(PointVoxelCounts):
    """One scan on the cylindrical grid.

    ``kept`` selects the input rows that reach the network (finite, and inside the volume
    when ``out_of_volume`` is 'drop'); every other per-point array here is over kept rows.
    """

    kept: np.ndarray  # (N,) bool over the input points
    point_features: np.ndarray  # (M, 9) float32 [drho, dphi, dz, rho, phi, z, x, y, intensity]
    voxel_coords: np.ndarray  # (V, 3) int32 occupied cells, sorted by linear index
    point_to_voxel: np.ndarray  # (M,) int64 row of voxel_coords holding each kept point
    point_labels: Optional[np.ndarray] = None  # (M,) int64 training classes
    voxel_labels: Optional[np.ndarray] = None  # (V,) int64 majority labels

    @property
    def grid_index(self) -> np.ndarray:
        """(M, 3) int32 (rho, phi, z) cell of each kept point (derived: the hot path never needs it)."""
        return self.voxel_coords[self.point_to_voxel]


class CylindricalVoxelizer:
    """Maps (N, >=4) x, y, z, intensity points to cylindrical voxels and 9-d point features.

    The element-wise maths runs through torch on channel-major (3, N) columns (multi-threaded,
    vectorised, and with in-place steps so a scan allocates few large buffers); cells are
    computed in float64 like upstream's numpy code, so border cases land in the same voxel as
    there. Occupied voxels are found with a sort plus a per-thread dense lookup table (about
    3x faster than ``np.unique`` with inverse).
    """

    def __init__(self, grid: GridConfig):
        self.grid = grid
        self.size = np.asarray(grid.size, dtype=np.int64)
        self.min_bound = np.asarray(grid.min_bound, dtype=np.float64)
        self.max_bound = np.asarray(grid.max_bound, dtype=np.float64)
        self.interval = (self.max_bound - self.min_bound) / (self.size - 1)
        # Bounds as (3, 1) columns for the channel-major (3, N) maths of __call__.
        self._lo_col = torch.from_numpy(self.min_bound)[:, None]
        self._hi_col = torch.from_numpy(self.max_bound)[:, None]
        self._lo32, self._hi32 = self._lo_col.float(), self._hi_col.float()
        self._interval_col = torch.from_numpy(self.interval)[:, None]
        self._top_col = torch.from_numpy((self.size - 1).astype(np.float64))[:, None]
        self._strides = torch.tensor([[float(self.size[1] * self.size[2]), float(self.size[2]), 1.0]],
                                     dtype=torch.float64)
        self._linear_dtype = torch.int32 if int(np.prod(self.size)) < 2**31 else torch.int64
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

    def __call__(self, points: np.ndarray, labels: Optional[np.ndarray] = None) -> VoxelizedScan:
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] < 3:
            raise ValueError(f"points must be an (N, >=3) array, got shape {points.shape}")
        if labels is not None and len(labels) != len(points):
            raise ValueError(f"{len(labels)} labels for {len(points)} points")
        n = len(points)
        # Columns x, y, z, intensity de-interleaved once: torch's element-wise kernels run
        # about 5x slower on the strided columns of an (N, 4) array than on contiguous rows.
        cols = np.empty((4, n), dtype=np.float32)
        cols[:3] = points[:, :3].T
        cols[3] = points[:, 3] if points.shape[1] > 3 else 0.0
        kept = torch.from_numpy(np.isfinite(cols).all(axis=0))
        xyzi = torch.from_numpy(cols)
        pol = torch.empty((3, n), dtype=torch.float32)
        torch.hypot(xyzi[0], xyzi[1], out=pol[0])
        torch.atan2(xyzi[1], xyzi[0], out=pol[1])
        pol[2] = xyzi[2]
        if self.grid.out_of_volume == "drop":
            # Compare in float32: atan2 returns float32(pi) > math.pi for points straight
            # behind the sensor, which must count as inside [-pi, pi].
            kept &= ((pol >= self._lo32) & (pol <= self._hi32)).all(dim=0)
        if not bool(kept.all()):
            xyzi, pol = xyzi[:, kept], pol[:, kept]
        # Cells in float64 like upstream's numpy code, so border points land where they do there.
        pol64 = pol.double()
        cells = torch.clamp(pol64, self._lo_col, self._hi_col).sub_(self._lo_col).div_(self._interval_col).floor_()
        torch.minimum(cells, self._top_col, out=cells)
        linear = (self._strides @ cells)[0].to(self._linear_dtype)  # exact: integers far below 2**53
        features = torch.empty((pol.shape[1], POINT_FEATURE_DIM), dtype=torch.float32)
        centres = cells.add_(0.5).mul_(self._interval_col).add_(self._lo_col)
        features[:, 0:3] = pol64.sub_(centres).t()
        features[:, 3:6] = pol.t()
        features[:, 6:8] = xyzi[0:2].t()
        features[:, 8] = xyzi[3]
        voxel_linear, point_to_voxel = self._occupied(linear.numpy())
        kept_np = kept.numpy()
        point_labels = voxel_labels = None
        if labels is not None:
            point_labels = np.asarray(labels, dtype=np.int64)[kept_np]
            voxel_labels = majority_labels(point_to_voxel, point_labels, len(voxel_linear))
        return VoxelizedScan(
            kept=kept_np,
            point_features=features.numpy(),
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
        # Consecutive points of a LiDAR scan mostly share a voxel: dropping repeats first halves
        # what the sort has to order (123 k points -> 59 k runs on the real scan).
        run_start = _first_of_runs(linear)
        ordered = np.sort(linear[run_start])
        uniq = ordered[_first_of_runs(ordered)]
        lut[uniq] = np.arange(len(uniq), dtype=np.int32)
        return uniq, lut[linear]

    def _cells_from_linear(self, linear: np.ndarray) -> np.ndarray:
        # Division in float64 is exact here (integers far below 2**53) and vectorises, unlike
        # numpy's integer division.
        rest = torch.from_numpy(linear).double()
        cells = torch.empty((len(linear), 3), dtype=torch.float64)
        for axis in (2, 1):
            quotient = torch.floor(rest / float(self.size[axis]))
            cells[:, axis] = rest - quotient * float(self.size[axis])
            rest = quotient
        cells[:, 0] = rest
        return cells.to(torch.int32).numpy()


def _first_of_runs(values: np.ndarray) -> np.ndarray:
    """Mask of the elements that differ from their predecessor (the first element always does)."""
    first = np.empty(len(values), dtype=bool)
    first[:1] = True
    np.not_equal(values[1:], values[:-1], out=first[1:])
    return first


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
