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
    from pvd_core.metrics import ConfusionMatrix, compute_iou, format_iou_table, metrics_dict, save_confusion_png
    from pvd_core.segmenter import Segmenter
    from pvd_core.visualize import save_bev_png

    bag = Path(bag)
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise MissingFileError(f"{checkpoint}: checkpoint not found")
    segmenter = Segmenter.from_checkpoint(str(checkpoint), device=device)
    label_map = segmenter.label_map
    confusion = ConfusionMatrix(label_map.num_classes)
    segmenter.warmup()  # the first call pays for allocation and spconv's tuning: keep it out of the latency

    latencies: list[float] = []
    stage_sums: dict[str, float] = {}
    frames = labelled = unlabelled = points_total = 0
    bev: Optional[tuple[int, np.ndarray, np.ndarray, Optional[np.ndarray]]] = None
    with bag_io.CloudBagReader(bag, topic) as reader:
        total = len(reader) if max_frames is None else min(len(reader), max_frames)
        want_bev = total // 2 if bev_frame is None else bev_frame
        if not 0 <= want_bev < max(total, 1):
            raise bag_io.BagError(f"--bev-frame {bev_frame} is outside the {total} frames of {bag} {topic}")
        bar = tqdm(total=total, desc=f"eval {bag.name}", unit="frame", disable=not progress)
        for cloud in reader:
            if max_frames is not None and frames >= max_frames:
                break
            t0 = time.perf_counter()
            points = decode_points(cloud.msg).points
            result = segmenter.segment(points)  # applies the point rule
            latencies.append((time.perf_counter() - t0) * 1e3)
            for key, value in result.timings.items():
                stage_sums[key] = stage_sums.get(key, 0.0) + float(value)
            pred = result.labels.astype(np.int64)
            gt: Optional[np.ndarray] = None
            if bag_io.has_label_field(cloud.msg):
                gt = bag_io.ground_truth(cloud.msg, label_map, source=f"{bag} {topic} message {cloud.index}")
                # points the network never sees are not scored
                confusion.update(pred, np.where(segmenter.point_rule.mask(points), gt, 0))
                labelled += 1
            else:
                unlabelled += 1
            if frames == want_bev:
                bev = (cloud.index, points, pred, gt)
            frames += 1
            points_total += points.shape[0]
            bar.update(1)
            bar.set_postfix(ms=f"{latencies[-1]:.0f}")
        bar.close()
    if frames == 0:
        raise bag_io.BagError(f"{bag}: topic {topic!r} has no messages")

    report: dict[str, Any] = {
        "bag": str(bag),
        "topic": topic,
        "checkpoint": str(checkpoint),
        "device": str(segmenter.device),
        "label_map": label_map.name,
        "frames": frames,
        "labelled_frames": labelled,
        "points": points_total,
        "latency_ms": latency_summary(latencies),
        "stage_mean_ms": {k: round(v / frames, 3) for k, v in stage_sums.items()},
        "latency_only": labelled == 0,
    }
    if labelled:
        iou = compute_iou(confusion.matrix)
        scores = metrics_dict(iou, label_map.class_names)
        report.update(miou=scores["miou"], iou=scores["iou"], absent_classes=scores["absent_classes"],
                      scored_points=scores["points"])
        report["table"] = format_iou_table(iou, label_map.class_names)
        if unlabelled:
            report["note"] = f"{unlabelled} of {frames} frames have no label field and were timed only"
    else:
        report.update({"miou": None, "iou": None,
                       "note": f"no cloud on {topic} has a '{bag_io.LABEL_FIELD}' field: latency only, no mIoU"})

    if plot_dir is not None:
        plot_dir = Path(plot_dir)
        stem = bag.name or "bag"
        plots: dict[str, str] = {}
        if labelled:
            plots["confusion"] = str(save_confusion_png(
                confusion.matrix, label_map.class_names, plot_dir / f"{stem}_confusion.png",
                title=f"{stem}: {checkpoint.name}, {labelled} frames"))
        if bev is not None:
            index, points, pred, gt = bev
            plots["bev"] = str(save_bev_png(points, pred, label_map, plot_dir / f"{stem}_bev.png", gt=gt,
                                            title=f"{stem} frame {index}: {checkpoint.name}"))
            report["bev_frame"] = index
        report["plots"] = plots
    return report


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

