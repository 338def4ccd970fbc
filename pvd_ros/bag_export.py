"""A recording's PointCloud2 topic -> a SemanticKITTI-layout sequence (``pvd_bag export``).

Why: the shipped models were trained on SemanticKITTI files, and ``pvd distill --unlabelled``
reads unlabelled scans in that layout. A robot's own drive, recorded as a bag, becomes
training data for its own sensor without a second reader of bags in ``pvd_core`` (which never
imports ROS or bags). What is written::

    OUT/sequences/SEQ/velodyne/NNNNNN.bin    float32 x, y, z, intensity per point (N x 4)
    OUT/sequences/SEQ/labels/NNNNNN.label    uint32 raw ids, only with with_labels
    OUT/sequences/SEQ/times.txt              seconds since the first exported scan, one line a scan
    OUT/sequences/SEQ/export.json            provenance: bag, topic, counts, skip reasons, stamps, options

Everything is reused, nothing is decided twice: the bag kind comes from what is on disk
(:func:`pvd_ros.bag_io.open_bag_reader` through :class:`~pvd_ros.bag_io.CloudBagReader`),
points are decoded by :mod:`pvd_ros.cloud_codec` (the project's one PointCloud2 codec), the
``label`` field is read and classified by :mod:`pvd_ros.bag_io`, and the points written are
those :class:`pvd_core.point_rule.PointRule` lets through to the network, so a file holds what
the node would segment. A cloud the codec cannot read is skipped and counted by its
``CloudError`` kind, as the node does, never aborting the export. Every file is written to a
temporary name and renamed, so a reader never sees half a scan.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from tqdm import tqdm

from pvd_core.data.semantickitti import write_label_file
from pvd_core.point_rule import DEFAULT_MIN_RANGE, PointRule
from pvd_ros import bag_io
from pvd_ros.bag_io import DEFAULT_TOPIC, BagError, CloudBagReader
from pvd_ros.cloud_codec import CloudError, decode_points

PathLike = Union[str, Path]

NO_LABEL_FIELD = "no_label_field"  # skip reason with with_labels: this cloud has no label field
NO_VALID_POINTS = "no_valid_points"  # skip reason: nothing left after the point rule
_SEQUENCE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class ExportError(BagError):
    """``pvd_bag export`` cannot do what was asked; the message names the option, folder or bag."""


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _check_options(sequence: str, every: int, max_scans: Optional[int], intensity_scale: float,
                   min_range: float) -> PointRule:
    if not _SEQUENCE_NAME.match(sequence) or sequence in (".", ".."):
        raise ExportError(f"--sequence must be a folder name (letters, digits, '_', '-', '.'), got {sequence!r}")
    if every < 1:
        raise ExportError(f"--every must be >= 1, got {every}")
    if max_scans is not None and max_scans < 1:
        raise ExportError(f"--max-scans must be >= 1, got {max_scans}")
    if not math.isfinite(intensity_scale) or intensity_scale <= 0:
        raise ExportError(f"--intensity-scale must be a finite number > 0, got {intensity_scale}")
    try:
        return PointRule(min_range=min_range)
    except ValueError as exc:
        raise ExportError(f"--min-range: {exc}") from exc


def _raw_labels(msg: Any, source: str) -> Optional[np.ndarray]:
    """(N,) uint32 raw SemanticKITTI words of a cloud, or None when it has no ``label`` field.

    A field of class indices (a recorded node output) cannot become a ``.label`` file, which
    holds raw ids; that, like an ambiguous field (bag_io.label_kind), refuses the export.
    """
    if not bag_io.has_label_field(msg):
        return None
    if bag_io.label_kind(msg, source) == bag_io.CLASS_INDEX:
        raise ExportError(
            f"{source}: field {bag_io.LABEL_FIELD!r} holds class indices (uint16/uint8 beside "
            f"{bag_io.CONFIDENCE_FIELD!r}, what segment_node publishes), not raw SemanticKITTI ids; a labels/*.label "
            "file needs raw ids, so --with-labels is refused: export without it")
    return bag_io.read_label_field(msg)


def export_bag(
    bag: PathLike,
    out: PathLike,
    topic: str = DEFAULT_TOPIC,
    sequence: str = "00",
    every: int = 1,
    max_scans: Optional[int] = None,
    intensity_scale: float = 1.0,
    with_labels: bool = False,
    force: bool = False,
    min_range: float = DEFAULT_MIN_RANGE,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the PointCloud2 messages of ``topic`` in ``bag`` as sequence ``sequence`` under ``out``.

    Message ``i`` (counted over the topic) is a candidate when ``i % every == 0``; at most
    ``max_scans`` scans are written, numbered from 000000 without gaps. Points failing the
    point rule (``min_range``) are dropped, the intensity column is multiplied by
    ``intensity_scale``. ``times.txt`` uses the header stamps, or the bag's receive times when
    a header stamp is unset (0). Without ``force`` a non-empty sequence folder is refused; with
    it, scans of an earlier export that this one did not rewrite are removed, so the folder
    holds exactly this export. Returns the summary also written to ``export.json``; raises an
    ExportError (a PvdError) when nothing could be exported.
    """
    bag, out, sequence = Path(bag), Path(out), str(sequence)
    rule = _check_options(sequence, every, max_scans, intensity_scale, min_range)
    seq_dir = out / "sequences" / sequence
    if seq_dir.exists() and not seq_dir.is_dir():
        raise ExportError(f"{seq_dir}: exists and is not a folder")
    if seq_dir.is_dir() and any(seq_dir.iterdir()) and not force:
        raise ExportError(f"{seq_dir}: sequence folder exists and is not empty; pass --force to write into it "
                          "(scans of the earlier export are replaced) or choose another --out / --sequence")
    velodyne_dir, labels_dir = seq_dir / "velodyne", seq_dir / "labels"
    scale = np.float32(intensity_scale)

    read = thinned = exported = points_written = dropped = without_intensity = label_frames = 0
    intensity_max = -math.inf
    skipped: Counter[str] = Counter()
    skip_examples: dict[str, str] = {}
    stamps: list[int] = []
    receive: list[int] = []
    written: list[str] = []
    with CloudBagReader(bag, topic) as reader, \
            tqdm(reader, total=len(reader), desc=f"{bag.name} -> sequence {sequence}", unit="cloud",
                 disable=not progress) as bar:
        kind, on_topic = reader.kind, len(reader)
        for cloud in bar:
            read += 1
            if cloud.index % every:
                thinned += 1
                continue
            source = f"{bag} topic {topic!r} message {cloud.index}"
            try:
                decoded = decode_points(cloud.msg)
                raw = _raw_labels(cloud.msg, source) if with_labels else None
            except CloudError as exc:
                skipped[exc.kind] += 1
                skip_examples.setdefault(exc.kind, f"message {cloud.index}: {exc}")
                continue
            label_frames += bag_io.has_label_field(cloud.msg)
            if with_labels and raw is None:
                skipped[NO_LABEL_FIELD] += 1
                skip_examples.setdefault(NO_LABEL_FIELD, f"message {cloud.index}: no {bag_io.LABEL_FIELD!r} field")
                continue
            keep = rule.mask(decoded.points)
            points = decoded.points[keep]
            if not points.shape[0]:
                skipped[NO_VALID_POINTS] += 1
                skip_examples.setdefault(NO_VALID_POINTS, f"message {cloud.index}: none of its "
                                         f"{decoded.points.shape[0]} points passes the point rule")
                continue
            if scale != 1:
                points[:, 3] *= scale
            name = f"{exported:06d}"
            velodyne_dir.mkdir(parents=True, exist_ok=True)
            _write_atomic(velodyne_dir / f"{name}.bin", np.ascontiguousarray(points, dtype=np.float32).tobytes())
            if raw is not None:
                write_label_file(labels_dir / f"{name}.label", raw[keep])
            without_intensity += not decoded.has_intensity
            dropped += int(keep.size - points.shape[0])
            points_written += int(points.shape[0])
            intensity_max = max(intensity_max, float(points[:, 3].max()))
            stamps.append(cloud.stamp_ns)
            receive.append(cloud.timestamp_ns)
            written.append(name)
            exported += 1
            if exported == max_scans:
                break

    if not exported:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(skipped.items())) or "none"
        hint = (f"; --with-labels needs a {bag_io.LABEL_FIELD!r} field: export without it"
                if skipped.get(NO_LABEL_FIELD) else "")
        first = f"; first: {next(iter(skip_examples.values()))}" if skip_examples else ""
        raise ExportError(f"{bag} topic {topic!r}: nothing exported ({read} clouds read, {thinned} thinned by "
                          f"--every, skipped: {reasons}){hint}{first}")

    time_source = "header" if all(stamps) else "receive"
    times_ns = np.asarray(stamps if time_source == "header" else receive, dtype=np.int64)
    seconds = (times_ns - times_ns[0]) / 1e9
    _write_atomic(seq_dir / "times.txt", "".join(f"{t:.6e}\n" for t in seconds).encode())
    removed = 0
    if force:
        removed = _remove_stale(velodyne_dir, labels_dir, set(written), set(written) if with_labels else set())
    summary: dict[str, Any] = {
        "bag": str(bag), "topic": topic, "storage": kind, "sequence": sequence, "sequence_dir": str(seq_dir),
        "clouds_on_topic": on_topic, "frames_read": read, "thinned": thinned, "exported": exported,
        "skipped": dict(sorted(skipped.items())), "skipped_total": int(sum(skipped.values())),
        "skip_examples": skip_examples, "points_written": points_written,
        "points_dropped_by_point_rule": dropped, "intensity_max": intensity_max,
        "frames_without_intensity": without_intensity,
        "frames_with_label_field": label_frames, "labels_written": bool(with_labels),
        "time_source": time_source, "stamps_ns": stamps, "receive_stamps_ns": receive,
        "removed_stale_files": removed,
        "options": {"every": every, "max_scans": max_scans, "intensity_scale": intensity_scale,
                    "with_labels": with_labels, "force": force, "min_range": rule.min_range,
                    "max_range": rule.max_range},
        "layout": {"velodyne": "float32 x, y, z, intensity x N (SemanticKITTI .bin)",
                   "labels": "uint32 raw SemanticKITTI ids, one per point" if with_labels else None,
                   "times": f"seconds since the first exported scan ({time_source} stamps)"},
    }
    _write_atomic(seq_dir / "export.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def _remove_stale(velodyne_dir: Path, labels_dir: Path, scans: set[str], labels: set[str]) -> int:
    """Remove the .bin / .label files this export did not write (an earlier export's); their count."""
    stale = [path for folder, pattern, kept in ((velodyne_dir, "*.bin", scans), (labels_dir, "*.label", labels))
             if folder.is_dir() for path in folder.glob(pattern) if path.stem not in kept]
    for path in stale:
        path.unlink()
    return len(stale)
