"""Fidelity of a student to its teacher: does the student predict what the teacher predicts?

mIoU says whether distillation helped; fidelity says whether the student *learned from
the teacher* at all (issue 11 found a gain that did not come from the teacher's
knowledge). Two numbers over every point the models segment on a split:

- top-1 agreement: share of points where both predict the same class, each with the
  Segmenter's rule (argmax over classes 1..C-1, ``segmenter.top_class``), so it agrees
  with what evaluation scores;
- KL(teacher || student) at T = 1, mean over points, with the training loss's own
  :func:`pvd_core.losses.distillation.kl_distillation` (one source for the KL rule).

Both models run on one voxelization of each scan (they share the grid, as PVD requires),
without test-time augmentation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
from tqdm import tqdm

from pvd_core.data.batch import collate_scans
from pvd_core.data.dataset import ScanFiles, read_scan
from pvd_core.losses.distillation import kl_distillation
from pvd_core.segmenter import top_class

if TYPE_CHECKING:
    from pvd_core.segmenter import Segmenter


@dataclass
class Fidelity:
    agreement: float  # fraction of points in [0, 1]
    kl: float  # mean KL(teacher || student) per point, nats
    points: int

    def to_dict(self) -> dict[str, float]:
        return {"agreement": round(self.agreement, 6), "kl": round(self.kl, 6), "points": self.points}


class FidelityMeter:
    """Accumulates agreement and KL over batches of (student, teacher) point logits (N, C)."""

    def __init__(self) -> None:
        self.agree = 0
        self.kl_sum = 0.0
        self.points = 0

    def update(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
        n = int(student_logits.shape[0])
        if n == 0:
            return
        s_label, _ = top_class(student_logits.float().t())
        t_label, _ = top_class(teacher_logits.float().t())
        self.agree += int((s_label == t_label).sum())
        self.kl_sum += float(kl_distillation(student_logits, teacher_logits, 1.0)) * n
        self.points += n

    def result(self) -> Fidelity:
        if self.points == 0:
            raise ValueError("FidelityMeter: no points accumulated")
        return Fidelity(agreement=self.agree / self.points, kl=self.kl_sum / self.points, points=self.points)


def fidelity_on_files(student: "Segmenter", teacher: "Segmenter", files: ScanFiles, kind: str,
                      progress: bool = False, teacher_cache: Optional[dict[str, torch.Tensor]] = None) -> Fidelity:
    """Agreement and KL of ``student`` to ``teacher`` over the scans of ``files`` (labels unused).

    ``teacher_cache`` (a dict the caller keeps) holds the teacher's point logits per scan after
    the first call, so scoring many students against one teacher runs the teacher once per scan.
    """
    if student.config.grid != teacher.config.grid:
        raise ValueError("fidelity_on_files: student and teacher must share the grid (same voxels)")
    if student.label_map.class_names != teacher.label_map.class_names:
        raise ValueError("fidelity_on_files: student and teacher have different classes")
    meter = FidelityMeter()
    for points_path, _labels in tqdm(files, desc="fidelity", unit="scan", disable=not progress, leave=False):
        points, _ = read_scan(kind, Path(points_path), None, student.label_map)
        scan = student.voxelizer(np.asarray(points, dtype=np.float32))
        if scan.num_points == 0:
            continue
        batch = collate_scans([scan], student.config.grid.size)
        with torch.inference_mode():
            s = student.model(batch.to(student.device)).point_logits.float().cpu()
            key = str(points_path)
            t = None if teacher_cache is None else teacher_cache.get(key)
            if t is None:
                t = teacher.model(batch.to(teacher.device)).point_logits.float().cpu()
                if teacher_cache is not None:
                    teacher_cache[key] = t
        meter.update(s, t)
    return meter.result()
