"""The batch format shared by the model, the losses, training and inference.

Points and voxels of all scans in a batch are concatenated; ``voxel_coords`` carries the
batch index in column 0 (spconv's layout) and ``point_to_voxel`` indexes the concatenated
voxel rows, so a point's voxel is ``voxel_coords[point_to_voxel[i]]`` whatever its scan.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Optional, Sequence

import numpy as np
import torch

from pvd_core.voxelizer import PointVoxelCounts, VoxelizedScan


@dataclass
class Batch(PointVoxelCounts):
    point_features: torch.Tensor  # (P, 9) float32
    point_batch: torch.Tensor  # (P,) int64 scan index of each point
    point_to_voxel: torch.Tensor  # (P,) int64 row in voxel_coords
    voxel_coords: torch.Tensor  # (V, 4) int32 [batch, rho, phi, z]
    batch_size: int
    spatial_shape: list[int]  # grid size (rho, phi, z)
    point_labels: Optional[torch.Tensor] = None  # (P,) int64
    voxel_labels: Optional[torch.Tensor] = None  # (V,) int64
    # (P,) bool, only in a batch mixing labelled and unlabelled scans (`pvd distill --unlabelled`):
    # True where the point's scan has labels. Points of unlabelled scans carry label 0, which
    # every supervised loss ignores; PVD's sampler uses the teacher's prediction there.
    point_labelled: Optional[torch.Tensor] = None

    def to(self, device: torch.device | str) -> "Batch":
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            moved[f.name] = value.to(device, non_blocking=True) if torch.is_tensor(value) else value
        return Batch(**moved)


def collate_scans(scans: Sequence[VoxelizedScan], spatial_shape: Sequence[int]) -> Batch:
    """Concatenate voxelized scans into one Batch.

    When only some scans have labels, the others get label 0 (ignored by the supervised loss)
    and ``point_labelled`` marks which points' labels are real.
    """
    if not scans:
        raise ValueError("collate_scans needs at least one scan")
    if len(scans) == 1:
        return _single_scan_batch(scans[0], spatial_shape)
    voxel_offsets = np.cumsum([0] + [s.num_voxels for s in scans[:-1]])
    coords = np.concatenate([
        np.concatenate([np.full((s.num_voxels, 1), b, np.int32), s.voxel_coords], axis=1)
        for b, s in enumerate(scans)
    ])
    point_to_voxel = np.concatenate([s.point_to_voxel + off for s, off in zip(scans, voxel_offsets)])
    point_batch = np.concatenate([np.full(s.num_points, b, np.int64) for b, s in enumerate(scans)])
    flags = [s.point_labels is not None for s in scans]
    labelled = any(flags)
    mixed = labelled and not all(flags)
    if mixed:
        scans = [s if s.point_labels is not None else _with_ignored_labels(s) for s in scans]
    return Batch(
        point_features=torch.from_numpy(np.concatenate([s.point_features for s in scans])),
        point_batch=torch.from_numpy(point_batch),
        point_to_voxel=torch.from_numpy(point_to_voxel.astype(np.int64)),
        voxel_coords=torch.from_numpy(coords),
        batch_size=len(scans),
        spatial_shape=[int(s) for s in spatial_shape],
        point_labels=torch.from_numpy(np.concatenate([s.point_labels for s in scans])) if labelled else None,
        voxel_labels=torch.from_numpy(np.concatenate([s.voxel_labels for s in scans])) if labelled else None,
        point_labelled=torch.from_numpy(np.concatenate([np.full(s.num_points, f, bool) for s, f in zip(scans, flags)]))
        if mixed else None,
    )


def _with_ignored_labels(scan: VoxelizedScan) -> VoxelizedScan:
    """The scan with every point and voxel labelled 0 (unlabelled), for a mixed batch."""
    return dataclasses.replace(scan, point_labels=np.zeros(scan.num_points, np.int64),
                               voxel_labels=np.zeros(scan.num_voxels, np.int64))


def _single_scan_batch(scan: VoxelizedScan, spatial_shape: Sequence[int]) -> Batch:
    """The one-scan Batch without concatenation copies (the ROS node's per-scan path).

    The tensors share memory with the scan's arrays, as ``torch.from_numpy`` does.
    """
    coords = np.empty((scan.num_voxels, 4), dtype=np.int32)
    coords[:, 0] = 0
    coords[:, 1:] = scan.voxel_coords
    labelled = scan.point_labels is not None
    return Batch(
        point_features=torch.from_numpy(scan.point_features),
        point_batch=torch.zeros(scan.num_points, dtype=torch.int64),
        point_to_voxel=torch.from_numpy(scan.point_to_voxel.astype(np.int64, copy=False)),
        voxel_coords=torch.from_numpy(coords),
        batch_size=1,
        spatial_shape=[int(s) for s in spatial_shape],
        point_labels=torch.from_numpy(scan.point_labels) if labelled else None,
        voxel_labels=torch.from_numpy(scan.voxel_labels) if labelled else None,
    )
