"""Write a synthetic sequence in SemanticKITTI layout: velodyne/*.bin, labels/*.label,
poses.txt, times.txt, calib.txt, plus synth.json recording how it was made."""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
from tqdm import tqdm

from pvd_core.errors import PvdError
from pvd_core.labels import SEMANTIC_KITTI
from pvd_core.synth.raycast import Hits, RayFan, cast_scan
from pvd_core.synth.scene import SCAN_PERIOD, Town, generate_town, town_rng
from pvd_core.synth.sensors import SensorModel

FORMAT_VERSION = 1
_SEQUENCE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class SynthError(PvdError, ValueError):
    """Bad generator arguments or an output folder that would be clobbered; the message names it."""


@dataclass
class SequenceSummary:
    sequence_dir: Path
    sensor: str
    scans: int
    points_per_scan: list[int]
    class_counts: np.ndarray  # (num_classes,) points per training class over the sequence
    raw_counts: dict[int, int]  # points per raw semantic id
    seconds: float
    dropped_fraction: float  # returns lost to simulated dropout, over returns before dropout
    extra: dict = field(default_factory=dict)

    @property
    def points(self) -> int:
        return int(sum(self.points_per_scan))


def scan_pose(town: Town, index: int) -> np.ndarray:
    """4x4 pose of the sensor at scan `index` in the town frame."""
    x, y, yaw = town.ego_pose(index * SCAN_PERIOD)
    c, s = np.cos(yaw), np.sin(yaw)
    pose = np.eye(4)
    pose[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    pose[:3, 3] = (x, y, 0.0)
    return pose


def generate_scan(town: Town, fan: RayFan, seed: int, sequence: str, index: int) -> Hits:
    """Scan `index` of the sequence; depends only on (seed, sequence, index, sensor)."""
    x, y, yaw = town.ego_pose(index * SCAN_PERIOD)
    return cast_scan(town.prims, town.layout, fan, (x, y), yaw, index * SCAN_PERIOD,
                     town_rng(seed, sequence, 4, index), wrap_half=town.wrap_half)


def check_sequence_name(sequence: str) -> str:
    sequence = str(sequence)
    if not _SEQUENCE_NAME.match(sequence):
        raise SynthError(f"--sequence {sequence!r}: use a plain folder name such as 00 (letters, digits, _ . -)")
    return sequence


def _prepare_dir(seq_dir: Path, overwrite: bool) -> None:
    if seq_dir.exists() and not seq_dir.is_dir():
        raise SynthError(f"{seq_dir}: exists and is not a folder")
    if seq_dir.is_dir() and any(seq_dir.iterdir()):
        if not overwrite:
            raise SynthError(f"{seq_dir}: output sequence folder is not empty; pass --overwrite to replace it")
        # Only what a previous run wrote: a shorter rewrite must not leave stale scans behind.
        for pattern in ("velodyne/*.bin", "labels/*.label"):
            for f in seq_dir.glob(pattern):
                f.unlink()
        for name in ("poses.txt", "times.txt", "calib.txt", "synth.json"):
            (seq_dir / name).unlink(missing_ok=True)
    (seq_dir / "velodyne").mkdir(parents=True, exist_ok=True)
    (seq_dir / "labels").mkdir(parents=True, exist_ok=True)


def write_sequence(out: Union[str, Path], sequence: str, num_scans: int, sensor: SensorModel, seed: int,
                   overwrite: bool = False, progress: bool = True, preview: Optional[Union[str, Path]] = None
                   ) -> SequenceSummary:
    """Generate and write `num_scans` scans of the town for (seed, sequence)."""
    if isinstance(num_scans, bool) or int(num_scans) != num_scans or num_scans < 1:
        raise SynthError(f"--scans must be an integer >= 1, got {num_scans!r}")
    if int(seed) != seed or seed < 0:
        raise SynthError(f"--seed must be an integer >= 0, got {seed!r}")
    sequence = check_sequence_name(sequence)
    seq_dir = Path(out) / "sequences" / sequence
    _prepare_dir(seq_dir, overwrite)

    start = time.perf_counter()
    town = generate_town(int(seed), sequence, int(num_scans))
    fan = RayFan(sensor)
    counts = np.zeros(SEMANTIC_KITTI.num_classes, dtype=np.int64)
    raw_counts = np.zeros(1 << 16, dtype=np.int64)
    per_scan: list[int] = []
    returns = 0
    poses = []
    first_inv = np.linalg.inv(scan_pose(town, 0))
    for i in tqdm(range(num_scans), desc=f"synth {sensor.name} seq {sequence}", unit="scan", disable=not progress):
        hits = generate_scan(town, fan, int(seed), sequence, i)
        name = f"{i:06d}"
        hits.points.astype(np.float32).tofile(seq_dir / "velodyne" / f"{name}.bin")
        hits.labels.astype(np.uint32).tofile(seq_dir / "labels" / f"{name}.label")
        sem = hits.labels & 0xFFFF
        raw_counts += np.bincount(sem, minlength=1 << 16)
        counts += np.bincount(SEMANTIC_KITTI.map_raw(sem), minlength=SEMANTIC_KITTI.num_classes)
        per_scan.append(len(hits.points))
        returns += hits.returns_before_dropout
        poses.append((first_inv @ scan_pose(town, i))[:3].reshape(-1))
        if preview is not None and i == 0:
            from pvd_core.visualize import save_bev_png  # matplotlib only when asked for
            save_bev_png(hits.points, SEMANTIC_KITTI.map_raw(sem), SEMANTIC_KITTI, preview, max_points=0,
                         extent_m=60.0, title=f"pvd synth: {sensor.name}, seed {seed}, sequence {sequence}, "
                                              f"scan 0 (panel shows the generated labels)")

    np.savetxt(seq_dir / "poses.txt", np.asarray(poses), fmt="%.9e")
    np.savetxt(seq_dir / "times.txt", np.arange(num_scans) * SCAN_PERIOD, fmt="%.6e")
    # Tr (camera <- velodyne) is the identity: poses.txt holds LiDAR poses directly.
    (seq_dir / "calib.txt").write_text("".join(
        f"{k}: 1 0 0 0 0 1 0 0 0 0 1 0\n" for k in ("P0", "P1", "P2", "P3", "Tr")))
    seconds = time.perf_counter() - start
    raw_dict = {int(k): int(raw_counts[k]) for k in np.nonzero(raw_counts)[0]}
    summary = SequenceSummary(
        sequence_dir=seq_dir, sensor=sensor.name, scans=int(num_scans), points_per_scan=per_scan,
        class_counts=counts, raw_counts=raw_dict, seconds=seconds,
        dropped_fraction=1.0 - sum(per_scan) / max(returns, 1))
    layout = town.layout
    meta = {
        "format_version": FORMAT_VERSION,
        "generator": "pvd synth",
        "seed": int(seed), "sequence": sequence, "scans": int(num_scans),
        "sensor": {"name": sensor.name, "beams": sensor.beams, "columns": sensor.columns, "height": sensor.height,
                   "max_range": sensor.max_range, "range_noise": sensor.range_noise},
        "town": {"blocks": layout.num_blocks, "lane_width": layout.lane_width, "lanes_left": layout.lanes_left,
                 "lanes_right": layout.lanes_right, "median_width": layout.median_width,
                 "ego_speed_mps": town.ego_speed, "primitives": len(town.prims)},
        "points": summary.points, "dropped_fraction": summary.dropped_fraction,
        "class_counts": {SEMANTIC_KITTI.class_names[c]: int(n) for c, n in enumerate(counts)},
        "raw_counts": {str(k): v for k, v in raw_dict.items()},
        "poses": "poses.txt: 3x4 LiDAR pose of each scan in the frame of scan 0 (KITTI format; calib Tr = I)",
    }
    (seq_dir / "synth.json").write_text(json.dumps(meta, indent=2) + "\n")
    return summary
