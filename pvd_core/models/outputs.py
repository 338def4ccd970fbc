"""What a forward pass returns: everything distillation reads, and what inference reads."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SegOutput:
    """Network outputs for one Batch; voxel rows follow ``Batch.voxel_coords`` order."""

    point_logits: torch.Tensor  # (P, C)
    voxel_logits: torch.Tensor  # (V, C) occupied voxels only
    point_features: torch.Tensor  # (P, 64) penultimate point-head activation
    voxel_features: torch.Tensor  # (V, 2s) last decoder features
    point_to_voxel: torch.Tensor  # (P,) row of each point's voxel
    voxel_coords: torch.Tensor  # (V, 4) int32 [batch, rho, phi, z]
