"""Evaluating a model over a dataset split, through the Segmenter (the one inference path).

Validation during training and ``pvd eval`` both call :func:`evaluate_files`, so the
mIoU a run reports for its best checkpoint is the figure ``pvd eval`` reproduces from
that checkpoint: same voxelizer, same out-of-volume handling, same "never predict 0"
rule, same test-time augmentation code. One confusion matrix is accumulated over every
labelled point of the split (docs/method.md section 6); under torch.distributed each rank
takes every world_size-th scan and the matrices are summed.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import numpy as np
from tqdm import tqdm

from pvd_core.data.dataset import ScanFiles, read_scan, split_files, subset_indices
from pvd_core.data.semantickitti import DataError
from pvd_core.labels import LabelMap
from pvd_core.metrics import ConfusionMatrix, IoUResult, format_iou_table, metrics_dict, save_confusion_png

if TYPE_CHECKING:  # the Segmenter pulls in torch and spconv; callers import it anyway
    from pvd_core.segmenter import Segmenter

PathLike = Union[str, Path]


@dataclass
class EvalReport:
    """The confusion matrix of a split and what is derived from it."""

    matrix: np.ndarray  # (C, C) int64 counts[gt, pred]
    result: IoUResult
    class_names: list[str]
    scans: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    # (S, C, C) one matrix per scan, in file order, when asked for (``per_scan=True``): a
    # bootstrap over validation scans (pvd_core.paired_stats) resamples these.
    scan_matrices: Optional[np.ndarray] = None

    @property
    def miou_percent(self) -> Optional[float]:
        return None if np.isnan(self.result.miou) else 100.0 * float(self.result.miou)

    def table(self) -> str:
        return format_iou_table(self.result, self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``miou`` (percent), ``iou`` per class name, ``points``, ``absent_classes``."""
        data = metrics_dict(self.result, self.class_names)
        data.update({"scans": self.scans, "seconds": round(self.seconds, 3)})
        data.update(self.extra)
        return data

    def write(self, json_path: Optional[PathLike] = None, png_path: Optional[PathLike] = None,
              title: Optional[str] = None) -> None:
        if json_path is not None:
            json_path = Path(json_path)
            json_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = json_path.with_name(json_path.name + ".tmp")
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
            tmp.replace(json_path)
        if png_path is not None:
            save_confusion_png(self.matrix, self.class_names, png_path, title=title)


def evaluate_files(segmenter: "Segmenter", files: ScanFiles, kind: str, label_map: LabelMap,
                   progress: bool = True, desc: str = "eval", rank: int = 0, world_size: int = 1,
                   per_scan: bool = False) -> EvalReport:
    """Segment every (points, labels) pair in ``files`` and accumulate one confusion matrix.

    Files without labels are an error: a metric over unlabelled scans would be silently empty.
    ``per_scan`` also keeps each scan's matrix (single process only: ranks would each hold
    a strided share of the scans).
    """
    if not files:
        raise DataError(f"{desc}: no scans to evaluate")
    if per_scan and world_size > 1:
        raise ValueError(f"{desc}: per_scan matrices need a single process (world_size {world_size})")
    scan_matrices: list[np.ndarray] = []
    start = time.perf_counter()
    cm = ConfusionMatrix(label_map.num_classes)
    mine = files[rank::world_size]
    for points_path, labels_path in tqdm(mine, desc=desc, unit="scan", disable=not progress, leave=False):
        if labels_path is None:
            raise DataError(f"{points_path}: no label file; evaluation needs labelled scans")
        points, labels = read_scan(kind, Path(points_path), Path(labels_path), label_map)
        pred = segmenter.segment(points).labels
        if per_scan:
            one = ConfusionMatrix(label_map.num_classes)
            one.update(np.asarray(pred, dtype=np.int64), labels.astype(np.int64))
            scan_matrices.append(one.matrix)
            cm.merge(one)
        else:
            cm.update(np.asarray(pred, dtype=np.int64), labels.astype(np.int64))
    cm.all_reduce()
    return EvalReport(matrix=cm.matrix.copy(), result=cm.result(), class_names=list(label_map.class_names),
                      scans=len(files), seconds=time.perf_counter() - start,
                      scan_matrices=np.stack(scan_matrices) if per_scan else None)


def split_subset(cfg, split: str, max_scans: int = 0) -> ScanFiles:
    """The files of ``split`` (``max_scans`` > 0: that many, spread evenly over the split)."""
    files = split_files(cfg, split)
    return [files[i] for i in subset_indices(len(files), max_scans)]


def evaluate_split(segmenter: "Segmenter", cfg, split: str = "val", max_scans: int = 0,
                   progress: bool = True, rank: int = 0, world_size: int = 1) -> EvalReport:
    """:func:`evaluate_files` over a split of ``cfg.dataset`` (validation by default)."""
    files = split_subset(cfg, split, max_scans)
    report = evaluate_files(segmenter, files, cfg.dataset.kind, segmenter.label_map, progress=progress,
                            desc=f"eval {split}", rank=rank, world_size=world_size)
    return report


def sequences_text(sequences: Sequence[str]) -> str:
    return "+".join(str(s) for s in sequences)
