"""Supervoxel partition and the supervoxel samplers of PVD (docs/method.md sections 4.3 and 4.4).

Affinity distillation cannot afford an N x N similarity over a whole scan, so it is
computed inside K supervoxels (blocks of S = (S_rho, S_phi, S_z) voxels of the
cylindrical grid). Which supervoxels are drawn matters: the paper draws those holding
rare classes and far-away points more often, because that is where the student lags
the teacher. This module turns a batch into one weight per supervoxel and draws K of
them; the affinity losses themselves live in ``distillation.py``.

Decisions the paper leaves open, fixed here (also in docs/method.md section 4.4):

- a_k (class difficulty) is computed from the *ground-truth* point labels of the
  batch during training, as the paper intends (rare classes are a property of the
  labels). ``PVDLoss`` falls back to the teacher's predictions only for the points of
  unlabelled scans (``pvd distill --unlabelled``). Label 0 never contributes (its class weight is 0).
- A non-empty supervoxel in which no labelled class reaches ``min_points`` has
  a_k = 0, so the 'difficulty' and 'class' samplers never draw it (it holds too few
  labelled points to say anything about rare classes). If fewer than K supervoxels
  have a positive weight, fewer than K are drawn.
- b_k = mean rho of the supervoxel's points / rho_max, clamped to [0, 1] (points
  beyond rho_max are clipped into the outer voxels and would otherwise exceed 1).
- 'distance' is 1 + gamma * b_k: the difficulty formula with the class factor
  removed, so the ablation changes exactly one thing, and every non-empty supervoxel
  stays drawable. (With gamma = 0 it is the 'random' sampler.)
- 'random' is uniform over the non-empty supervoxels.
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import numpy as np
import torch

SAMPLERS = ("difficulty", "random", "class", "distance")


def supervoxel_grid(spatial_shape: Sequence[int], supervoxel: Sequence[int]) -> tuple[int, int, int]:
    """Supervoxels per axis: ceil(grid / S), so a grid not divisible by S gets partial border blocks."""
    if len(spatial_shape) != 3 or len(supervoxel) != 3:
        raise ValueError(
            f"supervoxel_grid: spatial_shape {list(spatial_shape)} and supervoxel {list(supervoxel)} "
            "must both have three entries (rho, phi, z)")
    if any(int(s) < 1 for s in supervoxel):
        raise ValueError(f"supervoxel_grid: supervoxel sizes must be >= 1, got {list(supervoxel)}")
    return tuple(int(math.ceil(int(g) / int(s))) for g, s in zip(spatial_shape, supervoxel))  # type: ignore[return-value]


def num_supervoxels(batch_size: int, spatial_shape: Sequence[int], supervoxel: Sequence[int]) -> int:
    """How many supervoxel ids a batch can use (ids run over all scans of the batch)."""
    n_rho, n_phi, n_z = supervoxel_grid(spatial_shape, supervoxel)
    return int(batch_size) * n_rho * n_phi * n_z


def supervoxel_ids(voxel_coords: torch.Tensor, spatial_shape: Sequence[int],
                   supervoxel: Sequence[int]) -> torch.Tensor:
    """One id per voxel: ((b * n_rho + rho // S_rho) * n_phi + phi // S_phi) * n_z + z // S_z.

    Ids are distinct across the scans of a batch (the batch index is the leading
    digit), so a supervoxel never mixes points of two scans.
    """
    if voxel_coords.dim() != 2 or voxel_coords.shape[1] != 4:
        raise ValueError(
            f"supervoxel_ids: voxel_coords must be (V, 4) [batch, rho, phi, z], got {tuple(voxel_coords.shape)}")
    n_rho, n_phi, n_z = supervoxel_grid(spatial_shape, supervoxel)
    c = voxel_coords.long()
    s_rho, s_phi, s_z = (int(s) for s in supervoxel)
    return ((c[:, 0] * n_rho + c[:, 1] // s_rho) * n_phi + c[:, 2] // s_phi) * n_z + c[:, 3] // s_z


def class_weights_from_counts(counts: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
    """w_c = 1 / sqrt(f_c) over the labelled classes 1..C-1, scaled so that max w_c = 1; w_0 = 0.

    f_c is the share of labelled training points of class c (class 0 excluded). A class
    with zero count gets weight 1, the largest possible: a class never seen in the
    statistics is treated as the rarest (it can only appear in a batch if the statistics
    came from another split, and then it is exactly what the sampler should favour).
    If no class has a count, every labelled class gets weight 1.
    """
    counts_t = torch.as_tensor(np.asarray(counts) if not torch.is_tensor(counts) else counts)
    if counts_t.dim() != 1 or counts_t.numel() < 2:
        raise ValueError(f"class_weights_from_counts: counts must be a (C,) vector with C >= 2, got shape "
                         f"{tuple(counts_t.shape)}")
    counts_t = counts_t.to(torch.float64)
    if (counts_t < 0).any():
        raise ValueError("class_weights_from_counts: counts must be >= 0")
    weights = torch.ones_like(counts_t)
    labelled = counts_t[1:]
    seen = labelled > 0
    if seen.any():
        share = labelled[seen] / labelled.sum()
        w_seen = 1.0 / share.sqrt()
        weights[1:][seen] = w_seen / w_seen.max()
    weights[0] = 0.0
    return weights.to(torch.float32)


def supervoxel_weights(point_supervoxel: torch.Tensor, point_labels: torch.Tensor, point_rho: torch.Tensor,
                       num_supervoxels: int, class_weights: torch.Tensor, sampler: str = "difficulty",
                       gamma: float = 1.0, min_points: int = 5, rho_max: float = 50.0) -> torch.Tensor:
    """weight_k of every supervoxel (docs/method.md section 4.4); exactly 0 for empty supervoxels.

    point_supervoxel (P,) is each point's supervoxel id (``supervoxel_ids`` gathered
    through point_to_voxel), point_labels (P,) its class, point_rho (P,) its range in
    metres. 'difficulty': a_k * (1 + gamma * b_k); 'class': a_k; 'distance':
    1 + gamma * b_k; 'random': 1. All four are multiplied by "has at least one point".
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"supervoxel_weights: sampler must be one of {SAMPLERS}, got {sampler!r}")
    if not (point_supervoxel.shape == point_labels.shape == point_rho.shape):
        raise ValueError(
            "supervoxel_weights: point_supervoxel, point_labels and point_rho must have the same (P,) shape, got "
            f"{tuple(point_supervoxel.shape)}, {tuple(point_labels.shape)}, {tuple(point_rho.shape)}")
    if rho_max <= 0:
        raise ValueError(f"supervoxel_weights: rho_max must be > 0, got {rho_max}")
    device = point_supervoxel.device
    sv = point_supervoxel.long()
    n = int(num_supervoxels)
    counts = torch.bincount(sv, minlength=n)[:n]
    nonempty = (counts > 0).to(torch.float32)
    if sampler == "random":
        return nonempty

    rho_sum = torch.zeros(n, dtype=torch.float32, device=device).index_add_(0, sv, point_rho.float())
    b = (rho_sum / counts.clamp(min=1).float() / float(rho_max)).clamp(0.0, 1.0)
    if sampler == "distance":
        return (1.0 + float(gamma) * b) * nonempty

    class_weights = class_weights.to(device=device, dtype=torch.float32)
    num_classes = class_weights.shape[0]
    labels = point_labels.long().to(device)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"supervoxel_weights: point_labels must lie in [0, {num_classes - 1}] (class_weights has "
            f"{num_classes} entries), got [{int(labels.min())}, {int(labels.max())}]")
    per_class = torch.bincount(sv * num_classes + labels, minlength=n * num_classes)[: n * num_classes]
    present = (per_class.view(n, num_classes) >= int(min_points)).to(torch.float32)
    a = (present * class_weights.view(1, -1)).max(dim=1).values  # 0 where no class reaches min_points
    if sampler == "class":
        return a * nonempty
    return a * (1.0 + float(gamma) * b) * nonempty


def sample_supervoxels(weights: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Draw up to k distinct supervoxel ids, probability proportional to weight, never a weight-0 one.

    Successive sampling without replacement (torch.multinomial): the first id is drawn
    with probability w_i / sum(w), the next from the remaining ones, and so on. Fewer
    than k ids come back when fewer than k weights are positive. Sampling runs on the
    generator's device, the ids are returned on the weights' device.
    """
    if weights.dim() != 1:
        raise ValueError(f"sample_supervoxels: weights must be a 1-D tensor, got shape {tuple(weights.shape)}")
    if k < 0:
        raise ValueError(f"sample_supervoxels: k must be >= 0, got {k}")
    if (weights < 0).any() or not torch.isfinite(weights).all():
        raise ValueError("sample_supervoxels: weights must be finite and >= 0")
    w = weights.detach().to(device=generator.device, dtype=torch.float64)
    n_positive = int((w > 0).sum())
    take = min(int(k), n_positive)
    if take == 0:
        return torch.zeros(0, dtype=torch.int64, device=weights.device)
    drawn = torch.multinomial(w, take, replacement=False, generator=generator)
    return drawn.to(weights.device)
