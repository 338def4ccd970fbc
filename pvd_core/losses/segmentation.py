"""The supervised loss of docs/method.md section 3, shared by teacher, baseline and student.

Cross-entropy and Lovasz-softmax on the occupied voxels and on the points, label 0
(unlabeled) ignored everywhere. Every term is a well-defined zero when a batch holds
no labelled point, so a rare all-unlabeled crop never poisons training with NaN.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pvd_core.config import TrainConfig
from pvd_core.data.batch import Batch
from pvd_core.losses.lovasz import lovasz_softmax
from pvd_core.models.outputs import SegOutput

IGNORE_INDEX = 0


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean CE over rows whose label is not ``ignore_index``; 0 (not NaN) when there is none.

    Dividing the summed loss by the clamped count, rather than using reduction='mean',
    is what avoids the 0/0 and also avoids a host sync to test for emptiness.
    """
    total = F.cross_entropy(logits, labels.long(), ignore_index=ignore_index, reduction="sum")
    count = (labels != ignore_index).sum().clamp(min=1).to(total.dtype)
    return total / count


def _check_rows(name: str, logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    if labels is None:
        raise ValueError(f"segmentation_loss: Batch.{name} is None; the supervised loss needs labelled scans")
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"segmentation_loss: {logits.shape[0]} rows of logits but Batch.{name} has {labels.shape[0]} entries")
    return labels.to(logits.device)


def segmentation_loss(out: SegOutput, batch: Batch, train_cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """CE + Lovasz on voxels and points; 'seg' is the weighted total the optimiser sees.

    seg = voxel_ce + lovasz_weight * voxel_lovasz
          + point_loss_weight * (point_ce + lovasz_weight * point_lovasz)
    """
    voxel_labels = _check_rows("voxel_labels", out.voxel_logits, batch.voxel_labels)
    point_labels = _check_rows("point_labels", out.point_logits, batch.point_labels)
    voxel_ce = masked_cross_entropy(out.voxel_logits, voxel_labels)
    point_ce = masked_cross_entropy(out.point_logits, point_labels)
    # Lovasz in float32 even under autocast: the cumulative sums lose precision in half.
    voxel_lovasz = lovasz_softmax(F.softmax(out.voxel_logits.float(), dim=1), voxel_labels, IGNORE_INDEX)
    point_lovasz = lovasz_softmax(F.softmax(out.point_logits.float(), dim=1), point_labels, IGNORE_INDEX)
    lw = float(train_cfg.lovasz_weight)
    seg = voxel_ce + lw * voxel_lovasz + float(train_cfg.point_loss_weight) * (point_ce + lw * point_lovasz)
    return {
        "voxel_ce": voxel_ce,
        "voxel_lovasz": voxel_lovasz,
        "point_ce": point_ce,
        "point_lovasz": point_lovasz,
        "seg": seg,
    }
