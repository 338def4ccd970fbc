"""nuScenes lidarseg reader (docs/data.md): ``.pcd.bin`` points, ``_lidarseg.bin`` labels, pairs.

Intensity: nuScenes stores it as 0-255 while SemanticKITTI reflectance is in [0, 1].
``read_points`` divides it by 255 by default (``intensity_scale``) so that one model, one
ROS node and one set of benchmarks see one scale whatever the dataset; pass
``intensity_scale=1.0`` to reproduce upstream Cylinder3D's nuScenes inputs (raw 0-255)
for its released weights. The 5th column (ring index) is dropped: nothing downstream
uses it and a (N, 4) array is the project's point format.

Pairs come from an explicit list file ("points_path label_path" per line, relative
paths resolved against the data root) or, when the devkit tables
``<root>/<version>/sample_data.json`` and ``lidarseg.json`` exist, from those tables;
scene names (``scene-0061``) select the scans of those scenes via ``scene.json`` and
``sample.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from pvd_core.data.semantickitti import DataError, read_label_array
from pvd_core.labels import NUSCENES, LabelMap

PathLike = Union[str, Path]

POINT_COLUMNS = 5  # x, y, z, intensity (0-255), ring index
INTENSITY_SCALE = 1.0 / 255.0


def read_points(path: PathLike, intensity_scale: float = INTENSITY_SCALE) -> np.ndarray:
    """(N, 4) float32 x, y, z, intensity * ``intensity_scale`` from a .pcd.bin file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: point file not found")
    size = path.stat().st_size
    row = 4 * POINT_COLUMNS
    if size % row:
        raise DataError(
            f"{path}: {size} bytes is not a multiple of {row} ({POINT_COLUMNS} float32 per point); the "
            f"file is truncated or not a nuScenes scan ({size // row} whole points, {size % row} bytes left over)")
    raw = np.fromfile(path, dtype=np.float32).reshape(-1, POINT_COLUMNS)
    points = np.ascontiguousarray(raw[:, :4])
    if intensity_scale != 1.0:
        points[:, 3] *= np.float32(intensity_scale)
    return points


def read_raw_labels(path: PathLike, num_points: Optional[int] = None) -> np.ndarray:
    """(N,) uint8 raw lidarseg ids (0-31)."""
    return read_label_array(path, np.uint8, num_points)


def read_labels(path: PathLike, num_points: Optional[int] = None,
                label_map: LabelMap = NUSCENES) -> np.ndarray:
    """(N,) uint8 training classes (16-class map); unknown raw ids raise with the file named."""
    return label_map.map_raw(read_raw_labels(path, num_points), source=str(path))


def pairs_from_list(list_path: PathLike, root: Optional[PathLike] = None) -> list[tuple[Path, Path]]:
    """Pairs from a text file of "points_path label_path" lines ('#' comments, blank lines skipped).

    Relative paths are resolved against ``root`` (default: the list file's folder) so a list
    travels with its dataset.
    """
    list_path = Path(list_path)
    if not list_path.is_file():
        raise DataError(f"{list_path}: pair list file not found")
    base = Path(root) if root is not None else list_path.parent
    pairs: list[tuple[Path, Path]] = []
    for lineno, line in enumerate(list_path.read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DataError(
                f"{list_path}:{lineno}: expected 'points_path label_path', got {len(parts)} field(s): {line!r}")
        points, labels = (p if p.is_absolute() else base / p for p in map(Path, parts))
        for p in (points, labels):
            if not p.is_file():
                raise DataError(f"{list_path}:{lineno}: {p} not found")
        pairs.append((points, labels))
    if not pairs:
        raise DataError(f"{list_path}: no pairs listed")
    return pairs


def _load_table(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path}: nuScenes table not found")
    try:
        table = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(table, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(table).__name__}")
    return table


def has_tables(root: PathLike, version: str) -> bool:
    folder = Path(root) / version
    return (folder / "sample_data.json").is_file() and (folder / "lidarseg.json").is_file()


def pairs_from_tables(root: PathLike, version: str, scenes: Optional[Sequence[str]] = None
                      ) -> list[tuple[Path, Path]]:
    """Every lidarseg-labelled scan of ``<root>/<version>``, optionally only of the named scenes.

    Sorted by point file name (the nuScenes names start with the log and the timestamp).
    """
    root = Path(root)
    folder = root / version
    sample_data = {rec["token"]: rec for rec in _load_table(folder / "sample_data.json")}
    wanted_samples: Optional[set[str]] = None
    if scenes is not None:
        scene_tokens = {}
        for rec in _load_table(folder / "scene.json"):
            scene_tokens[rec["name"]] = rec["token"]
        missing = sorted(set(scenes) - set(scene_tokens))
        if missing:
            raise DataError(f"{folder / 'scene.json'}: unknown scene name(s) {missing[:10]}")
        tokens = {scene_tokens[s] for s in scenes}
        wanted_samples = {rec["token"] for rec in _load_table(folder / "sample.json")
                          if rec["scene_token"] in tokens}
    pairs: list[tuple[Path, Path]] = []
    for rec in _load_table(folder / "lidarseg.json"):
        sd_token = rec.get("sample_data_token", rec.get("token"))
        sd = sample_data.get(sd_token)
        if sd is None:
            raise DataError(
                f"{folder / 'lidarseg.json'}: record {rec.get('token')!r} points to sample_data "
                f"{sd_token!r}, which {folder / 'sample_data.json'} does not hold")
        if wanted_samples is not None and sd.get("sample_token") not in wanted_samples:
            continue
        points, labels = root / sd["filename"], root / rec["filename"]
        for p in (points, labels):
            if not p.is_file():
                raise DataError(f"{p}: listed in {folder} tables but not found")
        pairs.append((points, labels))
    pairs.sort(key=lambda pair: pair[0].name)
    return pairs


def scan_pairs(root: PathLike, entries: Sequence[str]) -> list[tuple[Path, Path]]:
    """Resolve a config split (``dataset.train_sequences`` / ``val_sequences``) to pairs.

    Each entry is one of: a pair list file (absolute or relative to ``root``); a table
    version folder such as ``v1.0-mini`` (all its labelled scans); a scene name such as
    ``scene-0061`` (looked up in every ``<root>/v1.0-*`` folder that has tables).
    """
    root = Path(root)
    pairs: list[tuple[Path, Path]] = []
    scenes: list[str] = []
    for entry in entries:
        entry = str(entry)
        as_path = Path(entry) if Path(entry).is_absolute() else root / entry
        if as_path.is_file():
            pairs.extend(pairs_from_list(as_path, root))
        elif as_path.is_dir() and has_tables(root, entry):
            pairs.extend(pairs_from_tables(root, entry))
        elif entry.startswith("scene-"):
            scenes.append(entry)
        else:
            raise DataError(
                f"{root}: nuScenes split entry {entry!r} is neither a pair list file, a version folder "
                "with sample_data.json and lidarseg.json, nor a scene name (scene-NNNN)")
    if scenes:
        versions = sorted(p.name for p in root.glob("v1.0-*") if has_tables(root, p.name))
        if not versions:
            raise DataError(f"{root}: scene names {scenes[:5]} given but no v1.0-* folder holds the tables")
        found: list[tuple[Path, Path]] = []
        remaining = set(scenes)
        for version in versions:
            known = {rec["name"] for rec in _load_table(root / version / "scene.json")}
            here = sorted(remaining & known)
            if here:
                found.extend(pairs_from_tables(root, version, here))
                remaining -= set(here)
        if remaining:
            raise DataError(f"{root}: scene(s) {sorted(remaining)[:10]} not in any of {versions}")
        pairs.extend(found)
    if not pairs:
        raise DataError(f"{root}: split {list(entries)} holds no labelled scans")
    return pairs
