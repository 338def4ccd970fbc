"""nuScenes lidarseg reader on the real 40-point fixture, pair listing and its errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pvd_core.data import nuscenes as nu
from pvd_core.data.semantickitti import DataError
from pvd_core.labels import NUSCENES, LabelError

# docs/data.md's 32 raw classes -> 16 training classes, written out independently of labels.py.
DATA_MD_TABLE = {raw: 0 for raw in (0, 1, 5, 7, 8, 10, 11, 13, 19, 20, 29, 31)}
DATA_MD_TABLE.update({2: 7, 3: 7, 4: 7, 6: 7, 9: 1, 12: 8, 14: 2, 15: 3, 16: 3, 17: 4, 18: 5,
                      21: 6, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 30: 16})


def fixture_files(root: Path) -> tuple[Path, Path]:
    (points,) = sorted((root / "samples" / "LIDAR_TOP").glob("*.pcd.bin"))
    (labels,) = sorted((root / "lidarseg" / "v1.0-trainval").glob("*_lidarseg.bin"))
    return points, labels


def test_real_points(nuscenes_root: Path) -> None:
    points_path, _ = fixture_files(nuscenes_root)
    raw = np.fromfile(points_path, dtype=np.float32).reshape(-1, 5)
    points = nu.read_points(points_path)
    assert points.shape == (40, 4) and points.dtype == np.float32
    np.testing.assert_array_equal(points[:, :3], raw[:, :3])
    # Intensity 0-255 becomes [0, 1] like SemanticKITTI reflectance; the ring column is dropped.
    np.testing.assert_allclose(points[:, 3], raw[:, 3] / 255.0, rtol=1e-6)
    assert raw[:, 3].max() > 1.0 and points[:, 3].max() <= 1.0
    np.testing.assert_array_equal(nu.read_points(points_path, intensity_scale=1.0), raw[:, :4])


def test_real_labels_match_data_md(nuscenes_root: Path) -> None:
    points_path, labels_path = fixture_files(nuscenes_root)
    raw = np.fromfile(labels_path, dtype=np.uint8)
    assert sorted(set(raw.tolist())) == [17, 24, 27, 28, 30, 31]
    labels = nu.read_labels(labels_path, num_points=len(nu.read_points(points_path)))
    assert labels.dtype == np.uint8 and labels.shape == (40,)
    np.testing.assert_array_equal(labels, [DATA_MD_TABLE[int(r)] for r in raw])
    expected = np.zeros(17, dtype=np.int64)
    for r in raw:
        expected[DATA_MD_TABLE[int(r)]] += 1
    np.testing.assert_array_equal(np.bincount(labels, minlength=17), expected)


def test_label_map_matches_data_md() -> None:
    assert NUSCENES.raw_to_train == DATA_MD_TABLE
    assert sorted(DATA_MD_TABLE) == list(range(32))
    assert NUSCENES.num_classes == 17
    assert NUSCENES.class_names[4] == "car" and NUSCENES.class_names[16] == "vegetation"


def test_points_size_not_multiple_of_20(tmp_path: Path, nuscenes_root: Path) -> None:
    points_path, _ = fixture_files(nuscenes_root)
    broken = tmp_path / "broken.pcd.bin"
    broken.write_bytes(points_path.read_bytes()[: 20 * 7 + 4])
    with pytest.raises(DataError) as err:
        nu.read_points(broken)
    msg = str(err.value)
    assert str(broken) in msg and "144 bytes" in msg and "7 whole points" in msg


def test_label_count_mismatch(tmp_path: Path, nuscenes_root: Path) -> None:
    _, labels_path = fixture_files(nuscenes_root)
    with pytest.raises(DataError) as err:
        nu.read_labels(labels_path, num_points=41)
    msg = str(err.value)
    assert str(labels_path) in msg and "40 labels" in msg and "41 points" in msg


def test_unknown_raw_id(tmp_path: Path) -> None:
    path = tmp_path / "bad_lidarseg.bin"
    np.array([17, 24, 32, 200], dtype=np.uint8).tofile(path)
    with pytest.raises(LabelError) as err:
        nu.read_labels(path, num_points=4)
    assert str(path) in str(err.value) and "[32, 200]" in str(err.value)


def test_pairs_from_list(tmp_path: Path, nuscenes_root: Path) -> None:
    points_path, labels_path = fixture_files(nuscenes_root)
    rel_points = points_path.relative_to(nuscenes_root)
    rel_labels = labels_path.relative_to(nuscenes_root)
    listing = tmp_path / "train.txt"
    listing.write_text(f"# comment\n\n{rel_points} {rel_labels}\n{points_path} {labels_path}  # abs\n")
    pairs = nu.pairs_from_list(listing, root=nuscenes_root)
    assert pairs == [(points_path, labels_path), (points_path, labels_path)]
    # scan_pairs resolves a list file named relative to the root
    assert nu.scan_pairs(nuscenes_root, [str(listing)]) == pairs


def test_pairs_from_list_errors(tmp_path: Path, nuscenes_root: Path) -> None:
    points_path, _ = fixture_files(nuscenes_root)
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{points_path}\n")
    with pytest.raises(DataError) as err:
        nu.pairs_from_list(bad)
    assert f"{bad}:1" in str(err.value)
    missing = tmp_path / "missing.txt"
    missing.write_text(f"{points_path} nowhere_lidarseg.bin\n")
    with pytest.raises(DataError) as err:
        nu.pairs_from_list(missing)
    assert "nowhere_lidarseg.bin" in str(err.value) and f"{missing}:1" in str(err.value)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(DataError, match="no pairs"):
        nu.pairs_from_list(empty)


def make_tables(root: Path, points_rel: str, labels_rel: str) -> None:
    """Minimal devkit tables for one keyframe of one scene, in the devkit's record layout."""
    version = root / "v1.0-mini"
    version.mkdir(parents=True)
    tables = {
        "scene.json": [{"token": "sc1", "name": "scene-0061", "nbr_samples": 1},
                       {"token": "sc2", "name": "scene-0103", "nbr_samples": 1}],
        "sample.json": [{"token": "s1", "scene_token": "sc1", "timestamp": 1},
                        {"token": "s2", "scene_token": "sc2", "timestamp": 2}],
        "sample_data.json": [
            {"token": "sd1", "sample_token": "s1", "filename": points_rel, "fileformat": "pcd",
             "is_key_frame": True},
            {"token": "sd2", "sample_token": "s2", "filename": "samples/CAM_FRONT/x.jpg",
             "fileformat": "jpg", "is_key_frame": True},
        ],
        "lidarseg.json": [{"token": "ls1", "sample_data_token": "sd1", "filename": labels_rel}],
    }
    for name, records in tables.items():
        (version / name).write_text(json.dumps(records))


def linked_root(tmp_path: Path, nuscenes_root: Path) -> Path:
    points_path, labels_path = fixture_files(nuscenes_root)
    root = tmp_path / "nuscenes"
    for src in (points_path, labels_path):
        dst = root / src.relative_to(nuscenes_root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(src)
    make_tables(root, str(points_path.relative_to(nuscenes_root)),
                str(labels_path.relative_to(nuscenes_root)))
    return root


def test_pairs_from_tables(tmp_path: Path, nuscenes_root: Path) -> None:
    root = linked_root(tmp_path, nuscenes_root)
    points_path, labels_path = fixture_files(nuscenes_root)
    expected = [(root / points_path.relative_to(nuscenes_root), root / labels_path.relative_to(nuscenes_root))]
    assert nu.has_tables(root, "v1.0-mini")
    assert nu.pairs_from_tables(root, "v1.0-mini") == expected
    assert nu.pairs_from_tables(root, "v1.0-mini", scenes=["scene-0061"]) == expected
    assert nu.pairs_from_tables(root, "v1.0-mini", scenes=["scene-0103"]) == []
    assert nu.scan_pairs(root, ["v1.0-mini"]) == expected
    assert nu.scan_pairs(root, ["scene-0061"]) == expected
    with pytest.raises(DataError, match="scene-9999"):
        nu.scan_pairs(root, ["scene-9999"])
    with pytest.raises(DataError, match="holds no labelled scans"):
        nu.scan_pairs(root, ["scene-0103"])
    with pytest.raises(DataError) as err:
        nu.scan_pairs(root, ["train"])
    assert "'train'" in str(err.value)


def test_tables_pointing_at_missing_records(tmp_path: Path, nuscenes_root: Path) -> None:
    root = linked_root(tmp_path, nuscenes_root)
    table = root / "v1.0-mini" / "lidarseg.json"
    table.write_text(json.dumps([{"token": "ls9", "sample_data_token": "nope", "filename": "x.bin"}]))
    with pytest.raises(DataError) as err:
        nu.pairs_from_tables(root, "v1.0-mini")
    assert "nope" in str(err.value) and "sample_data.json" in str(err.value)
    table.write_text("{not json")
    with pytest.raises(DataError, match="lidarseg.json"):
        nu.pairs_from_tables(root, "v1.0-mini")
