"""The four PVD losses (docs/method.md section 4): output KL on points and voxels, and
inter-point / inter-voxel affinity inside sampled supervoxels.

Output KL transfers the teacher's per-element class distribution; affinity transfers
the *structure* of its feature space (which points look alike), which a narrower
student cannot copy feature by feature but can copy as cosine similarities, so no
adapter between the two widths is needed. The teacher is detached here, whatever the
caller did, so no gradient can ever reach it.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from pvd_core.config import DistillConfig
from pvd_core.data.batch import Batch
from pvd_core.losses.supervoxel import (num_supervoxels, sample_supervoxels, supervoxel_ids,
                                        supervoxel_weights)
from pvd_core.models.outputs import SegOutput


def kl_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                    weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """T^2 * weighted mean over rows of KL(softmax(t / T) || softmax(s / T)).

    The T^2 factor keeps the gradient scale independent of T (Hinton et al.). ``weights``
    (rows,), >= 0, turn the mean into sum(w * KL) / sum(w): a 0/1 mask restricts the term
    to some rows at an unchanged scale. Zero rows or zero total weight give 0, not NaN.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"kl_distillation: student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape")
    if temperature <= 0:
        raise ValueError(f"kl_distillation: temperature must be > 0, got {temperature}")
    if weights is not None and weights.shape != student_logits.shape[:1]:
        raise ValueError(f"kl_distillation: weights {tuple(weights.shape)} must have one entry per row "
                         f"({student_logits.shape[0]})")
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / t, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
    if weights is None:
        return kl.sum() / max(kl.shape[0], 1) * (t * t)
    w = weights.detach().float().to(kl.device)
    return (w * kl).sum() / w.sum().clamp(min=1e-12) * (t * t)


def kl_row_weights(cfg: DistillConfig, teacher_logits: torch.Tensor,
                   supervoxel_weight: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Row weights of the output KL for ``cfg.kl_weighting`` (docs/method.md 4.1; None = uniform).

    'confidence': 1 where the teacher's top softmax probability (at T = 1) reaches
    ``kl_min_confidence``, else 0, so its uncertain rows (where it is most often wrong) teach
    nothing. 'supervoxel': each row's supervoxel weight from the affinity sampler (rare classes
    and far ranges count more), so the KL is not dominated by the road the student already knows.
    """
    if cfg.kl_weighting == "confidence":
        top = F.softmax(teacher_logits.detach().float(), dim=1).max(dim=1).values
        return (top >= cfg.kl_min_confidence).float()
    if cfg.kl_weighting == "supervoxel":
        return supervoxel_weight
    return None


def affinity_rows(cfg: DistillConfig, output: SegOutput, level: str, rows: torch.Tensor) -> torch.Tensor:
    """The ``rows`` whose cosine affinities a term compares (``distill.affinity_source``).

    'features': the paper's choice, the penultimate point-head activations or the last decoder
    features. 'probabilities': softmax(logits / T), so two rows are alike when the model gives
    them the same classes: structure in the output space, the one both models share.
    """
    if cfg.affinity_source == "probabilities":  # only the drawn rows, never the whole scan
        return F.softmax(getattr(output, f"{level}_logits")[rows].float() / cfg.temperature, dim=1)
    return getattr(output, f"{level}_features")[rows]


def cosine_affinity(features: torch.Tensor) -> torch.Tensor:
    """A[i, j] = cos(f_i, f_j) for the rows of ``features`` (N, D)."""
    unit = F.normalize(features.float(), dim=1, eps=1e-8)
    return unit @ unit.t()


def affinity_loss(student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor]) -> torch.Tensor:
    """1/K * sum_k ||A_s^k - A_t^k||_F^2 / N_k^2 over the K sampled supervoxels.

    N_k is the number of rows drawn in supervoxel k (N_p, or fewer if it had fewer), so
    each supervoxel contributes the mean squared affinity difference regardless of size.
    Student and teacher widths may differ; only the row counts must match.
    """
    if len(student_feats) != len(teacher_feats):
        raise ValueError(f"affinity_loss: {len(student_feats)} student groups but {len(teacher_feats)} teacher groups")
    if not student_feats:
        return torch.zeros(())
    total = None
    for k, (fs, ft) in enumerate(zip(student_feats, teacher_feats)):
        if fs.shape[0] != ft.shape[0]:
            raise ValueError(f"affinity_loss: group {k} has {fs.shape[0]} student rows but {ft.shape[0]} teacher rows")
        n = max(fs.shape[0], 1)
        term = (cosine_affinity(fs) - cosine_affinity(ft.detach())).pow(2).sum() / float(n * n)
        total = term if total is None else total + term
    return total / len(student_feats)


def draw_members(member_group: torch.Tensor, chosen: torch.Tensor, per_group: int,
                 generator: torch.Generator) -> list[torch.Tensor]:
    """For each chosen group, up to ``per_group`` member rows drawn uniformly without replacement.

    ``member_group`` (M,) is the group id of each row (a point's or a voxel's supervoxel).
    Vectorised over rows: the candidate rows are put in a random order, then stably sorted
    by the rank of their group among ``chosen``; the first ``per_group`` of each group are
    kept. A uniformly random order of a group's rows is a uniform draw without replacement.
    """
    device = member_group.device
    k = int(chosen.numel())
    if k == 0:
        return []
    num_groups = int(max(int(member_group.max()) if member_group.numel() else 0, int(chosen.max())) + 1)
    rank = torch.full((num_groups,), -1, dtype=torch.int64, device=device)
    rank[chosen.to(device)] = torch.arange(k, device=device)
    row_rank = rank[member_group.long()]
    candidates = torch.nonzero(row_rank >= 0, as_tuple=True)[0]
    cand_rank = row_rank[candidates]
    keys = torch.rand(candidates.numel(), generator=generator, device=generator.device).to(device)
    order = torch.argsort(keys)  # a random permutation of the candidates ...
    order = order[torch.argsort(cand_rank[order], stable=True)]  # ... then grouped, random within a group
    sorted_rows = candidates[order]
    sorted_rank = cand_rank[order]
    sizes = torch.bincount(cand_rank, minlength=k)
    starts = torch.cumsum(sizes, 0) - sizes
    position = torch.arange(sorted_rows.numel(), device=device) - starts[sorted_rank]
    keep = position < int(per_group)
    kept_rows, kept_rank = sorted_rows[keep], sorted_rank[keep]
    counts = torch.bincount(kept_rank, minlength=k).tolist()
    return list(torch.split(kept_rows, counts))


class PVDLoss:
    """Point-to-Voxel distillation terms for one student/teacher pair on one Batch.

    ``class_weights`` (C,) are the per-class weights w_c of docs/method.md section 4.4 (see
    ``supervoxel.class_weights_from_counts``); ``rho_max`` normalises distances (the
    grid's rho max). After a call, ``last_supervoxels`` holds the drawn supervoxel ids
    for logging and tests.
    """

    def __init__(self, cfg: DistillConfig, spatial_shape: Sequence[int], rho_max: float,
                 class_weights: torch.Tensor) -> None:
        cfg.validate("PVDLoss cfg")
        self.cfg = cfg
        self.spatial_shape = [int(s) for s in spatial_shape]
        if len(self.spatial_shape) != 3:
            raise ValueError(f"PVDLoss: spatial_shape must be (rho, phi, z), got {list(spatial_shape)}")
        if rho_max <= 0:
            raise ValueError(f"PVDLoss: rho_max must be > 0, got {rho_max}")
        self.rho_max = float(rho_max)
        self.class_weights = torch.as_tensor(class_weights, dtype=torch.float32).flatten()
        self.last_supervoxels: Optional[torch.Tensor] = None

    @staticmethod
    def _check_aligned(student: SegOutput, teacher: SegOutput, batch: Batch) -> None:
        for name in ("point_logits", "voxel_logits", "point_features", "voxel_features"):
            s, t = getattr(student, name), getattr(teacher, name)
            if s.shape[0] != t.shape[0]:
                raise ValueError(f"PVDLoss: student.{name} has {s.shape[0]} rows but teacher.{name} has "
                                 f"{t.shape[0]}; teacher and student must run on the same Batch")
        for name in ("point_logits", "voxel_logits"):
            if getattr(student, name).shape[1] != getattr(teacher, name).shape[1]:
                raise ValueError(f"PVDLoss: student.{name} and teacher.{name} have different class counts")
        if student.point_logits.shape[0] != batch.num_points or student.voxel_logits.shape[0] != batch.num_voxels:
            raise ValueError(
                f"PVDLoss: outputs have {student.point_logits.shape[0]} points / {student.voxel_logits.shape[0]} "
                f"voxels but the Batch has {batch.num_points} / {batch.num_voxels}")

    def _labels_for_sampling(self, teacher: SegOutput, batch: Batch) -> torch.Tensor:
        """Ground truth where the scan has labels, else the teacher's prediction (never class 0)."""
        if batch.point_labels is not None and batch.point_labelled is None:
            return batch.point_labels
        predicted = teacher.point_logits.detach()[:, 1:].argmax(dim=1) + 1
        if batch.point_labels is None:
            return predicted
        labelled = batch.point_labelled.to(predicted.device)
        return torch.where(labelled, batch.point_labels.to(predicted.device), predicted)

    def _affinity(self, student: SegOutput, teacher: SegOutput, level: str, groups: list[torch.Tensor]) -> torch.Tensor:
        return affinity_loss([affinity_rows(self.cfg, student, level, g) for g in groups],
                             [affinity_rows(self.cfg, teacher, level, g).detach() for g in groups])

    def __call__(self, student: SegOutput, teacher: SegOutput, batch: Batch,
                 generator: torch.Generator) -> dict[str, torch.Tensor]:
        self._check_aligned(student, teacher, batch)
        cfg = self.cfg
        device = student.point_logits.device
        zero = student.point_logits.sum() * 0.0  # a zero on the graph, so skipped terms still backprop
        aff_p, aff_v = zero, zero
        self.last_supervoxels = None
        point_w = voxel_w = None
        if (cfg.beta_p > 0 or cfg.beta_v > 0 or cfg.kl_weighting == "supervoxel") and batch.num_voxels > 0:
            voxel_coords = batch.voxel_coords.to(device)
            point_to_voxel = batch.point_to_voxel.to(device).long()
            voxel_sv = supervoxel_ids(voxel_coords, self.spatial_shape, cfg.supervoxel)
            point_sv = voxel_sv[point_to_voxel]
            n_sv = num_supervoxels(batch.batch_size, self.spatial_shape, cfg.supervoxel)
            weights = supervoxel_weights(
                point_sv, self._labels_for_sampling(teacher, batch).to(device),
                batch.point_features[:, 3].to(device), n_sv, self.class_weights,
                sampler=cfg.sampler, gamma=cfg.gamma, min_points=cfg.min_points, rho_max=self.rho_max)
            point_w, voxel_w = weights[point_sv], weights[voxel_sv]
            if cfg.beta_p > 0 or cfg.beta_v > 0:
                chosen = sample_supervoxels(weights, cfg.num_supervoxels, generator)
                self.last_supervoxels = chosen
                if chosen.numel() > 0 and cfg.beta_p > 0:
                    groups = draw_members(point_sv, chosen, cfg.points_per_supervoxel, generator)
                    aff_p = self._affinity(student, teacher, "point", groups)
                if chosen.numel() > 0 and cfg.beta_v > 0:
                    groups = draw_members(voxel_sv, chosen, cfg.voxels_per_supervoxel, generator)
                    aff_v = self._affinity(student, teacher, "voxel", groups)
        out_p, out_v = zero, zero
        if cfg.alpha_p > 0:
            out_p = kl_distillation(student.point_logits, teacher.point_logits, cfg.temperature,
                                    kl_row_weights(cfg, teacher.point_logits, point_w))
        if cfg.alpha_v > 0:
            out_v = kl_distillation(student.voxel_logits, teacher.voxel_logits, cfg.temperature,
                                    kl_row_weights(cfg, teacher.voxel_logits, voxel_w))
        pvd = cfg.alpha_p * out_p + cfg.alpha_v * out_v + cfg.beta_p * aff_p + cfg.beta_v * aff_v
        return {"out_p": out_p, "out_v": out_v, "aff_p": aff_p, "aff_v": aff_v, "pvd": pvd}
