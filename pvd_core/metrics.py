"""Evaluation metrics: one confusion matrix per split, IoU, mIoU.

One matrix is accumulated over every labelled point of a split (not a mean of per-scan
mIoUs, which over-weights sparse scans). Label 0 (unlabeled) rows are excluded.

The mean runs over the classes *present in the evaluated ground truth* (or over a fixed
list the caller gives), never over a set the predictions can change: if a class with no
ground-truth point entered the mean as soon as a model predicted it once, one false
positive would cost mIoU / C and two models would be averaged over different classes.
Points predicted as an absent class still count, as false negatives of their true class.
Every report names the classes the mean is over.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]
IGNORE_INDEX = 0


@dataclass
class IoUResult:
    """IoU per class (fractions in [0, 1]; NaN for class 0 and absent classes) and their mean."""

    iou: np.ndarray  # (C,) float64
    present: np.ndarray  # (C,) bool; the classes the mean is over (class 0 never)
    miou: float  # mean of iou over present classes; NaN when none is present
    points: int  # labelled points accumulated
    absent: list[int] = field(default_factory=list)  # classes 1..C-1 left out of the mean

    @property
    def classes(self) -> list[int]:
        """The class indices the mean is over."""
        return [int(c) for c in np.flatnonzero(self.present)]

    @property
    def num_present(self) -> int:
        return int(self.present.sum())


class ConfusionMatrix:
    """Accumulates counts[gt, pred] (C x C, int64) over labelled points; gt 0 is skipped."""

    def __init__(self, num_classes: int) -> None:
        if num_classes < 2:
            raise ValueError(
                f"ConfusionMatrix: num_classes must be >= 2 (class 0 plus at least one), got {num_classes}")
        self.num_classes = int(num_classes)
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add one batch of predictions and ground-truth labels (same shape, any device).

        Torch tensors are counted on their own device (one bincount) and only the C x C
        result is copied back, so evaluation on the GPU does not ship every point to the host.
        """
        C = self.num_classes
        if torch.is_tensor(pred) or torch.is_tensor(target):
            p = torch.as_tensor(pred).reshape(-1).long()
            t = torch.as_tensor(target).reshape(-1).long().to(p.device)
            self._check(p.shape[0], t.shape[0], p, t)
            keep = t != IGNORE_INDEX
            counts = torch.bincount(t[keep] * C + p[keep], minlength=C * C)
            self.matrix += counts.cpu().numpy().astype(np.int64).reshape(C, C)
        else:
            p = np.asarray(pred).reshape(-1).astype(np.int64)
            t = np.asarray(target).reshape(-1).astype(np.int64)
            self._check(p.shape[0], t.shape[0], p, t)
            keep = t != IGNORE_INDEX
            self.matrix += np.bincount(t[keep] * C + p[keep], minlength=C * C).reshape(C, C)

    def _check(self, n_pred: int, n_target: int, p: ArrayLike, t: ArrayLike) -> None:
        if n_pred != n_target:
            raise ValueError(f"ConfusionMatrix.update: pred has {n_pred} entries but target has {n_target}")
        for name, values in (("pred", p), ("target", t)):
            if values.shape[0] and (int(values.min()) < 0 or int(values.max()) >= self.num_classes):
                raise ValueError(f"ConfusionMatrix.update: {name} values must lie in [0, {self.num_classes - 1}], "
                                 f"got [{int(values.min())}, {int(values.max())}]")

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another matrix's counts (e.g. from another worker); returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"ConfusionMatrix.merge: {other.num_classes} classes vs {self.num_classes}")
        self.matrix += other.matrix
        return self

    def all_reduce(self) -> None:
        """Sum the counts over all ranks when torch.distributed is initialised (no-op otherwise)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        t = torch.from_numpy(self.matrix).to(device)
        dist.all_reduce(t)
        self.matrix = t.cpu().numpy().astype(np.int64)

    def reset(self) -> None:
        self.matrix[:] = 0

    @property
    def points(self) -> int:
        return int(self.matrix.sum())

    def result(self, classes: Optional[Sequence[int]] = None) -> IoUResult:
        return compute_iou(self.matrix, classes)


def iou_per_class(matrix: np.ndarray) -> np.ndarray:
    """IoU_c = TP / (TP + FP + FN) per class; NaN for class 0 and where the union is 0."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"iou_per_class: matrix must be square (C, C), got shape {m.shape}")
    m = m.copy()
    m[IGNORE_INDEX, :] = 0  # never counted, but a hand-made matrix might hold them
    tp = np.diag(m)
    union = m.sum(axis=0) + m.sum(axis=1) - tp
    iou = np.full(m.shape[0], np.nan)
    ok = union > 0
    iou[ok] = tp[ok] / union[ok]
    iou[IGNORE_INDEX] = np.nan
    return iou


def gt_classes(matrix: np.ndarray) -> list[int]:
    """Classes 1..C-1 with at least one ground-truth point in ``matrix`` (rows are ground truth)."""
    m = np.asarray(matrix)
    return [int(c) for c in np.flatnonzero(m.sum(axis=1) > 0) if c != IGNORE_INDEX]


def compute_iou(matrix: np.ndarray, classes: Optional[Sequence[int]] = None) -> IoUResult:
    """IoU per class and mIoU over ``classes`` (default: those present in the ground truth).

    A class outside the mean gets NaN even if it was predicted: its IoU would be 0 by
    construction and says nothing a per-class report of its true classes does not.
    """
    m = np.asarray(matrix, dtype=np.int64)
    n = m.shape[0] if m.ndim == 2 else 0
    chosen = gt_classes(m) if classes is None else sorted({int(c) for c in classes})
    bad = [c for c in chosen if not 1 <= c < n]
    if bad:
        raise ValueError(f"compute_iou: classes {bad} are outside 1..{n - 1} (class 0 is never scored)")
    iou = iou_per_class(m)
    present = np.zeros(n, dtype=bool)
    present[chosen] = True
    iou[~present] = np.nan
    iou[present] = np.nan_to_num(iou[present], nan=0.0)  # a listed class nobody saw or predicted scores 0
    absent = [c for c in range(1, n) if not present[c]]
    miou = float(iou[present].mean()) if present.any() else float("nan")
    points = int(m[1:, :].sum())
    return IoUResult(iou=iou, present=present, miou=miou, points=points, absent=absent)


def _check_names(result: IoUResult, class_names: Sequence[str], where: str) -> None:
    if len(class_names) != result.iou.shape[0]:
        raise ValueError(f"{where}: {len(class_names)} class names for {result.iou.shape[0]} classes "
                         "(class_names must include 0 = unlabeled)")


def format_iou_table(result: IoUResult, class_names: Sequence[str]) -> str:
    """A per-class IoU table (percent), the mIoU, and which classes were absent from the mean."""
    _check_names(result, class_names, "format_iou_table")
    width = max([len(n) for n in class_names[1:]] + [len("mIoU")])
    lines = [f"{'class':<{width}}  IoU (%)", "-" * (width + 10)]
    for c in range(1, len(class_names)):
        value = "absent" if not result.present[c] else f"{100.0 * result.iou[c]:7.2f}"
        lines.append(f"{class_names[c]:<{width}}  {value:>7}")
    lines.append("-" * (width + 10))
    miou = "n/a" if np.isnan(result.miou) else f"{100.0 * result.miou:7.2f}"
    lines.append(f"{'mIoU':<{width}}  {miou:>7}   over {result.num_present} of {len(class_names) - 1} classes, "
                 f"{result.points} labelled points")
    if result.absent:
        names = ", ".join(class_names[c] for c in result.absent)
        lines.append(f"absent (no ground-truth point, left out of the mean): {names}")
    return "\n".join(lines)


def metrics_dict(result: IoUResult, class_names: Sequence[str]) -> dict[str, Any]:
    """The JSON form the commands write: percentages, null for absent classes (JSON has no NaN)."""
    _check_names(result, class_names, "metrics_dict")
    return {
        "miou": None if np.isnan(result.miou) else round(100.0 * result.miou, 4),
        "iou": {class_names[c]: (round(100.0 * float(result.iou[c]), 4) if result.present[c] else None)
                for c in range(1, len(class_names))},
        "points": int(result.points),
        "classes": [class_names[c] for c in result.classes],
        "absent_classes": [class_names[c] for c in result.absent],
    }


def iou_report(matrix: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """The IoU fields of a bag report (``pvd_bag eval`` and ``pvd_bag replay``) from a confusion matrix.

    ``miou``, ``iou`` (percent; null for absent classes), ``classes`` (those the mean is over),
    ``absent_classes``, ``scored_points`` (labelled points) and the printable ``table``.
    """
    result = compute_iou(matrix)
    scores = metrics_dict(result, class_names)
    return {"miou": scores["miou"], "iou": scores["iou"], "classes": scores["classes"],
            "absent_classes": scores["absent_classes"], "scored_points": scores["points"],
            "table": format_iou_table(result, class_names)}


def save_confusion_png(matrix: np.ndarray, class_names: Sequence[str], path: Union[str, Path],
                       title: Optional[str] = None) -> Path:
    """Row-normalised confusion matrix (rows = ground truth, classes 1..C-1) as a PNG.

    Rows are divided by all of a class's labelled points, predictions of class 0
    included, so a row sums to less than 1 exactly when the model predicted 0.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(class_names):
        raise ValueError(f"save_confusion_png: matrix shape {m.shape} does not match {len(class_names)} class names")
    rows = m[1:, :]
    totals = rows.sum(axis=1, keepdims=True)
    norm = np.divide(rows, totals, out=np.zeros_like(rows), where=totals > 0)[:, 1:]
    names = list(class_names[1:])
    n = len(names)
    size = max(5.0, 0.45 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels=names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title or "confusion matrix (row-normalised)")
    if n <= 25:
        for i in range(n):
            for j in range(n):
                if norm[i, j] >= 0.005:
                    ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
