"""Dataset statistics: labelled points per training class over a split.

The difficulty-aware supervoxel sampler (docs/method.md section 4.4) weights classes by
1 / sqrt(f_c), with f_c the share of labelled training points of class c; those
counts are computed once here and stored as JSON next to the run.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from tqdm import tqdm

from pvd_core.data import nuscenes, semantickitti
from pvd_core.data.semantickitti import DataError
from pvd_core.labels import LabelMap

PathLike = Union[str, Path]
FileItem = Union[PathLike, tuple[PathLike, Optional[PathLike]]]


def _label_path(item: FileItem) -> Path:
    path = item[1] if isinstance(item, (tuple, list)) else item
    if path is None:
        raise DataError(f"{item[0]}: scan has no label file; class counts need labelled scans")
    return Path(path)


def class_point_counts(files: Sequence[FileItem], label_map: LabelMap,
                       progress: bool = True) -> np.ndarray:
    """(C,) int64 number of points of each training class (class 0 included) over ``files``.

    ``files`` holds label files, or (points, labels) pairs as ``split_files`` returns them;
    the reader follows ``label_map.name`` (SemanticKITTI .label or nuScenes lidarseg .bin).
    """
    if label_map.name == "semantickitti":
        read = semantickitti.read_labels
    elif label_map.name == "nuscenes":
        read = nuscenes.read_labels
    else:
        raise ValueError(f"label_map.name must be 'semantickitti' or 'nuscenes', got {label_map.name!r}")
    counts = np.zeros(label_map.num_classes, dtype=np.int64)
    for item in tqdm(files, desc="class counts", unit="scan", disable=not progress):
        labels = read(_label_path(item), label_map=label_map)
        counts += np.bincount(labels, minlength=label_map.num_classes)[: label_map.num_classes]
    return counts


def save_class_counts(path: PathLike, counts: np.ndarray, label_map: LabelMap) -> None:
    path = Path(path)
    data = {"dataset": label_map.name, "class_names": list(label_map.class_names),
            "counts": [int(c) for c in counts]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def load_class_counts(path: PathLike, label_map: LabelMap) -> np.ndarray:
    """Counts saved by :func:`save_class_counts`, checked against ``label_map``'s classes."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: class count file not found")
    try:
        data = json.loads(path.read_text())
        names, counts = data["class_names"], data["counts"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a class count file ({exc})") from exc
    if list(names) != list(label_map.class_names):
        raise DataError(
            f"{path}: class names {names} differ from the {label_map.name} map {list(label_map.class_names)}")
    return np.asarray(counts, dtype=np.int64)
