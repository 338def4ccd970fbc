"""SemanticKITTI reader (docs/data.md): velodyne/*.bin points, labels/*.label ids, splits.

Every malformed file is an error naming the file and the counts involved: a wrong scan
silently mapped to garbage would poison a training run without a trace.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from pvd_core.errors import PvdError
from pvd_core.labels import SEMANTIC_KITTI, LabelMap

PathLike = Union[str, Path]

SPLITS: dict[str, list[str]] = {
    "train": ["00", "01", "02", "03", "04", "05", "06", "07", "09", "10"],
    "val": ["08"],
    "test": [f"{i:02d}" for i in range(11, 22)],
}


class DataError(PvdError, ValueError):
    """A data file is missing or malformed; the message names it."""


def read_points(path: PathLike) -> np.ndarray:
    """(N, 4) float32 x, y, z, reflectance from a .bin file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: point file not found")
    size = path.stat().st_size
    if size % 16:
        raise DataError(
            f"{path}: {size} bytes is not a multiple of 16 (4 float32 per point); the file is "
            f"truncated or not a SemanticKITTI scan ({size // 16} whole points, {size % 16} bytes left over)")
    return np.fromfile(path, dtype=np.float32).reshape(-1, 4)


def read_label_array(path: PathLike, dtype: type, num_points: Optional[int] = None) -> np.ndarray:
    """One label per point from a flat binary file, checked against the scan's point count."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    itemsize = np.dtype(dtype).itemsize
    size = path.stat().st_size
    if size % itemsize:
        raise DataError(f"{path}: {size} bytes is not a multiple of {itemsize} (one "
                        f"{np.dtype(dtype).name} per point)")
    raw = np.fromfile(path, dtype=dtype)
    if num_points is not None and raw.size != num_points:
        raise DataError(f"{path}: {raw.size} labels but the scan has {num_points} points")
    return raw


def read_raw_labels(path: PathLike, num_points: Optional[int] = None) -> np.ndarray:
    """(N,) uint32 raw label words (semantic id in the lower 16 bits) from a .label file."""
    return read_label_array(path, np.uint32, num_points)


def read_labels(path: PathLike, num_points: Optional[int] = None,
                label_map: LabelMap = SEMANTIC_KITTI) -> np.ndarray:
    """(N,) uint8 training classes; unknown raw ids raise with the file named."""
    raw = read_raw_labels(path, num_points)
    return label_map.map_raw(raw & 0xFFFF, source=str(path))


def write_label_file(path: PathLike, raw_ids: np.ndarray) -> None:
    """Atomic write of uint32 labels (temp file + rename), so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(np.ascontiguousarray(raw_ids, dtype=np.uint32).tobytes())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def label_path_for(scan_path: PathLike) -> Path:
    scan_path = Path(scan_path)
    return scan_path.parent.parent / "labels" / (scan_path.stem + ".label")


def scan_files(root: PathLike, sequences: Sequence[str], require_labels: bool = True
               ) -> list[tuple[Path, Optional[Path]]]:
    """(points, labels) file pairs of the given sequences under ``root``/sequences, sorted."""
    root = Path(root)
    pairs: list[tuple[Path, Optional[Path]]] = []
    for seq in sequences:
        velodyne = root / "sequences" / str(seq) / "velodyne"
        if not velodyne.is_dir():
            raise DataError(f"{velodyne}: sequence folder not found under data root {root}")
        scans = sorted(velodyne.glob("*.bin"))
        if not scans:
            raise DataError(f"{velodyne}: no .bin scans")
        for scan in scans:
            label = label_path_for(scan)
            if not label.is_file():
                if require_labels:
                    raise DataError(f"{label}: label file missing for scan {scan}")
                label = None
            pairs.append((scan, label))
    return pairs
