"""The point-wise parts of Cylinder3D: the point feature generator and the point head.

The generator is upstream's ``cylinder_fea_generator`` (an MLP per point, a per-voxel max,
a compression to ``num_input_features``). The point head is PVD's point-wise refinement,
which neither public repository contains: each point's generator feature concatenated
with the last decoder feature of its voxel, through an MLP whose last hidden activation
(64-d by default) is what inter-point affinity distillation compares.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from pvd_core.voxelizer import POINT_FEATURE_DIM


def _mlp(dims: Sequence[int]) -> nn.Sequential:
    """Linear -> BatchNorm -> ReLU for each consecutive pair of ``dims``."""
    layers: list[nn.Module] = []
    for cin, cout in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(cin, cout), nn.BatchNorm1d(cout), nn.ReLU()]
    return nn.Sequential(*layers)


class PointFeatureGenerator(nn.Module):
    """9-d point features -> MLP (upstream: 64, 128, 256 -> 256) -> per-voxel max -> ``num_input_features``."""

    def __init__(self, num_input_features: int, dims: Sequence[int] = (64, 128, 256, 256),
                 in_dim: int = POINT_FEATURE_DIM):
        super().__init__()
        *hidden, out_dim = [int(d) for d in dims]
        self.out_dim = out_dim
        # Same layer sequence (and indices) as upstream's PPmodel for the default dims.
        self.PPmodel = nn.Sequential(nn.BatchNorm1d(in_dim), *_mlp([in_dim, *hidden]),
                                     nn.Linear(hidden[-1] if hidden else in_dim, out_dim))
        self.fea_compression = nn.Sequential(nn.Linear(out_dim, num_input_features), nn.ReLU())

    def forward(self, point_features: torch.Tensor, point_to_voxel: torch.Tensor,
                num_voxels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (per-point 256-d features, per-voxel compressed features)."""
        point = self.PPmodel(point_features)
        index = point_to_voxel.unsqueeze(1).expand(-1, point.shape[1])
        # Every voxel holds at least one point, so include_self=False gives the exact max.
        pooled = point.new_zeros(num_voxels, point.shape[1]).scatter_reduce(
            0, index, point, reduce="amax", include_self=False)
        return point, self.fea_compression(pooled)


class PointHead(nn.Module):
    """MLP over [point feature, voxel feature] -> hidden (exposed) -> class logits."""

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], num_classes: int):
        super().__init__()
        self.hidden = _mlp([in_dim, *hidden_dims])
        self.classifier = nn.Linear(hidden_dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (logits, penultimate features)."""
        features = self.hidden(x)
        if self.training:
            return self.classifier(features), features
        # Inference computes the logits class-major, (C, N), and returns their (N, C) transpose
        # view: the per-point reductions over classes that follow (Segmenter) then run along
        # contiguous rows, several times faster on the CPU than across the classes of a row.
        logits = torch.addmm(self.classifier.bias[:, None], self.classifier.weight, features.t())
        return logits.t(), features
