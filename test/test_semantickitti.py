"""SemanticKITTI reader on the real sample (test/conftest.py; skipped when absent), and its errors on broken files."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pvd_core.data import semantickitti as sk
from pvd_core.labels import SEMANTIC_KITTI, LabelError

# docs/data.md's raw id -> training class table, written out independently of labels.py.
DATA_MD_TABLE = {
    0: 0, 1: 0, 52: 0, 99: 0,
    10: 1, 11: 2, 15: 3, 18: 4, 13: 5, 16: 5, 20: 5, 30: 6, 31: 7, 32: 8,
    40: 9, 60: 9, 44: 10, 48: 11, 49: 12, 50: 13, 51: 14, 70: 15, 71: 16, 72: 17,
    80: 18, 81: 19,
    252: 1, 253: 7, 254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}
REAL_POINTS = 123_389


def test_real_scan_point_count_and_format(real_scan_path: Path) -> None:
    points = sk.read_points(real_scan_path)
    assert points.shape == (REAL_POINTS, 4)
    assert points.dtype == np.float32
    assert np.isfinite(points).all()
    # reflectance is in [0, 1] (docs/data.md); a wrong dtype or stride would break this
    assert 0.0 <= points[:, 3].min() and points[:, 3].max() <= 1.0
    assert 5.0 < np.hypot(points[:, 0], points[:, 1]).max() < 200.0


def test_real_labels_histogram_matches_data_md(real_scan_path: Path, real_label_path: Path) -> None:
    points = sk.read_points(real_scan_path)
    raw = np.fromfile(real_label_path, dtype=np.uint32)
    semantic = raw & 0xFFFF
    expected = np.zeros(20, dtype=np.int64)
    for raw_id, count in zip(*np.unique(semantic, return_counts=True)):
        expected[DATA_MD_TABLE[int(raw_id)]] += count
    labels = sk.read_labels(real_label_path, num_points=len(points))
    assert labels.shape == (REAL_POINTS,) and labels.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels, minlength=20), expected)
    # The sample holds moving classes (docs/data.md: 252 and 254), which must fold, not vanish.
    assert {252, 254} <= set(np.unique(semantic).tolist())
    np.testing.assert_array_equal(labels[semantic == 252], 1)
    np.testing.assert_array_equal(labels[semantic == 254], 6)


def test_label_map_matches_data_md_table() -> None:
    assert SEMANTIC_KITTI.raw_to_train == DATA_MD_TABLE
    assert SEMANTIC_KITTI.num_classes == 20
    assert SEMANTIC_KITTI.class_names[0] == "unlabeled"
    assert SEMANTIC_KITTI.class_names[1] == "car" and SEMANTIC_KITTI.class_names[19] == "traffic-sign"
    colors = SEMANTIC_KITTI.color_array()
    assert colors.shape == (20, 3) and colors.dtype == np.uint8
    # semantic-kitti.yaml stores BGR: car [245, 150, 100], road [255, 0, 255], building [0, 200, 255]
    assert tuple(colors[1]) == (100, 150, 245)
    assert tuple(colors[9]) == (255, 0, 255)
    assert tuple(colors[13]) == (255, 200, 0)


def test_instance_bits_are_ignored(tmp_path: Path) -> None:
    raw = np.array([10 | (7 << 16), 40 | (1 << 16), 252 | (300 << 16), 0], dtype=np.uint32)
    path = tmp_path / "x.label"
    raw.tofile(path)
    np.testing.assert_array_equal(sk.read_labels(path, num_points=4), [1, 9, 1, 0])


def test_splits_match_data_md() -> None:
    assert sk.SPLITS["train"] == ["00", "01", "02", "03", "04", "05", "06", "07", "09", "10"]
    assert sk.SPLITS["val"] == ["08"]
    assert sk.SPLITS["test"] == [str(i) for i in range(11, 22)]


def test_bin_size_not_multiple_of_16(tmp_path: Path, real_scan_path: Path) -> None:
    data = real_scan_path.read_bytes()[: 16 * 100 + 7]
    path = tmp_path / "broken.bin"
    path.write_bytes(data)
    with pytest.raises(sk.DataError) as err:
        sk.read_points(path)
    msg = str(err.value)
    assert str(path) in msg and str(16 * 100 + 7) in msg and "16" in msg


def test_truncated_bin_is_caught_by_label_count(tmp_path: Path, real_scan_path: Path,
                                                real_label_path: Path) -> None:
    # Cut on a whole-point boundary: only the label count can reveal the truncation.
    scan = tmp_path / "sequences" / "08" / "velodyne" / "000000.bin"
    scan.parent.mkdir(parents=True)
    scan.write_bytes(real_scan_path.read_bytes()[: 16 * 1000])
    points = sk.read_points(scan)
    assert points.shape == (1000, 4)
    with pytest.raises(sk.DataError) as err:
        sk.read_labels(real_label_path, num_points=len(points))
    msg = str(err.value)
    assert str(real_label_path) in msg and str(REAL_POINTS) in msg and "1000" in msg


def test_label_count_mismatch(tmp_path: Path, real_scan_path: Path, real_label_path: Path) -> None:
    labels = tmp_path / "short.label"
    labels.write_bytes(real_label_path.read_bytes()[: 4 * 500])
    with pytest.raises(sk.DataError) as err:
        sk.read_labels(labels, num_points=REAL_POINTS)
    msg = str(err.value)
    assert str(labels) in msg and "500" in msg and str(REAL_POINTS) in msg
    odd = tmp_path / "odd.label"
    odd.write_bytes(b"\x00" * 6)
    with pytest.raises(sk.DataError, match="odd.label"):
        sk.read_raw_labels(odd)


def test_unknown_raw_id_names_file_and_id(tmp_path: Path) -> None:
    path = tmp_path / "bad.label"
    np.array([10, 40, 7, 7, 1234], dtype=np.uint32).tofile(path)
    with pytest.raises(LabelError) as err:
        sk.read_labels(path, num_points=5)
    msg = str(err.value)
    assert str(path) in msg and "[7, 1234]" in msg
    assert "3 points" in msg


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(sk.DataError, match="not found"):
        sk.read_points(tmp_path / "none.bin")
    with pytest.raises(sk.DataError, match="not found"):
        sk.read_labels(tmp_path / "none.label")


def test_scan_files_on_shared_root(shared_kitti_root: Path, real_scan_path: Path,
                                   real_label_path: Path) -> None:
    # The sample holds sequence 08 frames 000000-000009 (validation) and frames 0, 2, 4, 6, 8 of
    # the training sequences (docs/data.md); pairs come back sorted, each scan beside its own label.
    pairs = sk.scan_files(shared_kitti_root, ["08"])
    assert pairs[0] == (real_scan_path, real_label_path)
    assert [p.name for p, _ in pairs] == [f"{i:06d}.bin" for i in range(10)]
    assert all(lab == p.parent.parent / "labels" / (p.stem + ".label") for p, lab in pairs)
    assert sk.label_path_for(real_scan_path) == real_label_path
    train = sk.scan_files(shared_kitti_root, ["05", "10"])
    assert [(p.parent.parent.name, p.stem) for p, _ in train] == [
        (seq, f"{i:06d}") for seq in ("05", "10") for i in (0, 2, 4, 6, 8)]
    with pytest.raises(sk.DataError) as err:
        sk.scan_files(shared_kitti_root, ["11"])
    assert "11" in str(err.value)


def test_scan_files_missing_label(tmp_path: Path, real_scan_path: Path) -> None:
    velodyne = tmp_path / "sequences" / "11" / "velodyne"
    velodyne.mkdir(parents=True)
    shutil.copy(real_scan_path, velodyne / "000000.bin")
    with pytest.raises(sk.DataError) as err:
        sk.scan_files(tmp_path, ["11"])
    assert "000000.label" in str(err.value)
    assert sk.scan_files(tmp_path, ["11"], require_labels=False) == [(velodyne / "000000.bin", None)]
    empty = tmp_path / "sequences" / "12" / "velodyne"
    empty.mkdir(parents=True)
    with pytest.raises(sk.DataError, match="no .bin"):
        sk.scan_files(tmp_path, ["12"])
