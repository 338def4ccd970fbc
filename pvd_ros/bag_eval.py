"""`pvd_bag eval`: offline scoring of a checkpoint on every cloud of a bag.

Offline means no ROS graph and no dropped frames: each cloud goes straight through the
Segmenter (the project's one inference path), so the mIoU here is the model's quality on
that recording and the latency is the per-frame processing time (decode + segment),
the figure that `pvd_bag replay` then has to live with at the sensor's rate.

Ground truth comes from the bag itself (the ``label`` field: raw SemanticKITTI words
mapped with the checkpoint's label map, or the class indices of a bag recorded from the
node's output; ``bag_io.label_kind`` tells them apart and refuses an ambiguous field).
Points that fail the point rule (``pvd_core.point_rule``: non-finite x, y, z or intensity,
the origin (0, 0, 0), closer than its default minimum range) are neither segmented nor
scored: the Segmenter labels them 0, as the node does, and 0 is never scored.
A bag without a label field is timed only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from tqdm import tqdm

from pvd_core.errors import MissingFileError
from pvd_ros import bag_io
from pvd_ros.cloud_codec import decode_points

PathLike = Union[str, Path]


def latency_summary(values_ms: list[float]) -> dict[str, Optional[float]]:
    """p50 / p95 / max (and mean) of per-frame times in ms; None when there are no frames."""
    if not values_ms:
        return {"p50": None, "p95": None, "max": None, "mean": None}
    a = np.asarray(values_ms, dtype=np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p95": round(float(np.percentile(a, 95)), 3),
            "max": round(float(a.max()), 3), "mean": round(float(a.mean()), 3)}


def evaluate_bag(
    bag: PathLike,
    checkpoint: PathLike,
    topic: str = bag_io.DEFAULT_TOPIC,
    device: str = "auto",
    plot_dir: Optional[PathLike] = None,
    bev_frame: Optional[int] = None,
    max_frames: Optional[int] = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Segment and score every cloud of ``topic``; returns the JSON report (also see plots).

    ``plot_dir``: where the confusion-matrix and bird's-eye PNGs go (None: no plots).
    ``bev_frame``: index of the frame drawn bird's-eye (None: the middle frame).
    """
    from pvd_core.metrics import iou_report
    from pvd_core.segmenter import Segmenter

    bag = Path(bag)
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise MissingFileError(f"{checkpoint}: checkpoint not found")
    segmenter = Segmenter.from_checkpoint(str(checkpoint), device=device)
    label_map = segmenter.label_map
    segmenter.warmup()  # the first call pays for allocation and spconv's tuning: keep it out of the latency
    run = _segment_bag(segmenter, bag, topic, bev_frame, max_frames, progress)

    report: dict[str, Any] = {
        "bag": str(bag),
        "topic": topic,
        "checkpoint": str(checkpoint),
        "device": str(segmenter.device),
        "label_map": label_map.name,
        "frames": run.frames,
        "labelled_frames": run.labelled,
        "points": run.points,
        "latency_ms": latency_summary(run.latencies),
        "stage_mean_ms": {k: round(v / run.frames, 3) for k, v in run.stage_sums.items()},
        "latency_only": run.labelled == 0,
    }
    if run.labelled:
        report.update(iou_report(run.confusion.matrix, label_map.class_names))
        if run.unlabelled:
            report["note"] = f"{run.unlabelled} of {run.frames} frames have no label field and were timed only"
    else:
        report.update({"miou": None, "iou": None,
                       "note": f"no cloud on {topic} has a '{bag_io.LABEL_FIELD}' field: latency only, no mIoU"})
    if plot_dir is not None:
        report.update(_plots(run, label_map, bag, checkpoint, Path(plot_dir)))
    return report


@dataclass
class _BagRun:
    """What segmenting a bag's clouds gathered: one confusion matrix, per-frame times, counts, the bird's-eye frame."""

    confusion: Any  # pvd_core.metrics.ConfusionMatrix over the labelled frames
    latencies: list[float] = field(default_factory=list)  # ms per frame, decode + segment
    stage_sums: dict[str, float] = field(default_factory=dict)  # the Segmenter's stage times, summed over frames
    frames: int = 0
    labelled: int = 0
    unlabelled: int = 0
    points: int = 0
    bev: Optional[tuple[int, np.ndarray, np.ndarray, Optional[np.ndarray]]] = None  # (index, points, pred, gt)


def _segment_bag(segmenter: Any, bag: Path, topic: str, bev_frame: Optional[int], max_frames: Optional[int],
                 progress: bool) -> _BagRun:
    """Decode, segment, time and (where labelled) score every cloud of ``topic``."""
    from pvd_core.metrics import ConfusionMatrix

    label_map = segmenter.label_map
    run = _BagRun(ConfusionMatrix(label_map.num_classes))
    with bag_io.CloudBagReader(bag, topic) as reader:
        total = len(reader) if max_frames is None else min(len(reader), max_frames)
        want_bev = total // 2 if bev_frame is None else bev_frame
        if not 0 <= want_bev < max(total, 1):
            raise bag_io.BagError(f"--bev-frame {bev_frame} is outside the {total} frames of {bag} {topic}")
        bar = tqdm(total=total, desc=f"eval {bag.name}", unit="frame", disable=not progress)
        for cloud in reader:
            if max_frames is not None and run.frames >= max_frames:
                break
            t0 = time.perf_counter()
            points = decode_points(cloud.msg).points
            result = segmenter.segment(points)  # applies the point rule
            run.latencies.append((time.perf_counter() - t0) * 1e3)
            for key, value in result.timings.items():
                run.stage_sums[key] = run.stage_sums.get(key, 0.0) + float(value)
            pred = result.labels.astype(np.int64)
            gt: Optional[np.ndarray] = None
            if bag_io.has_label_field(cloud.msg):
                gt = bag_io.ground_truth(cloud.msg, label_map, source=f"{bag} {topic} message {cloud.index}")
                # points the network never sees are not scored
                run.confusion.update(pred, np.where(segmenter.point_rule.mask(points), gt, 0))
                run.labelled += 1
            else:
                run.unlabelled += 1
            if run.frames == want_bev:
                run.bev = (cloud.index, points, pred, gt)
            run.frames += 1
            run.points += points.shape[0]
            bar.update(1)
            bar.set_postfix(ms=f"{run.latencies[-1]:.0f}")
        bar.close()
    if run.frames == 0:
        raise bag_io.BagError(f"{bag}: topic {topic!r} has no messages")
    return run


def _plots(run: _BagRun, label_map: Any, bag: Path, checkpoint: Path, plot_dir: Path) -> dict[str, Any]:
    """The confusion-matrix (labelled bags) and bird's-eye PNGs: the report's ``plots`` and ``bev_frame``."""
    from pvd_core.metrics import save_confusion_png
    from pvd_core.visualize import save_bev_png

    stem = bag.name or "bag"
    plots: dict[str, str] = {}
    fields: dict[str, Any] = {}
    if run.labelled:
        plots["confusion"] = str(save_confusion_png(
            run.confusion.matrix, label_map.class_names, plot_dir / f"{stem}_confusion.png",
            title=f"{stem}: {checkpoint.name}, {run.labelled} frames"))
    if run.bev is not None:
        index, points, pred, gt = run.bev
        plots["bev"] = str(save_bev_png(points, pred, label_map, plot_dir / f"{stem}_bev.png", gt=gt,
                                        title=f"{stem} frame {index}: {checkpoint.name}"))
        fields["bev_frame"] = index
    fields["plots"] = plots
    return fields


def print_report(report: dict[str, Any]) -> None:
    lat = report["latency_ms"]
    if report.get("table"):
        print(report["table"])
    print(f"frames: {report['frames']} ({report['labelled_frames']} labelled), points: {report['points']}, "
          f"device: {report['device']}")
    print(f"latency per frame (decode + segment) ms: p50 {lat['p50']}  p95 {lat['p95']}  max {lat['max']}")
    if report.get("note"):
        print(f"note: {report['note']}")
    for kind, path in report.get("plots", {}).items():
        print(f"{kind} plot: {path}")

