"""`pvd_bag export`: real bags (from-kitti of the real SemanticKITTI scans, rosbags-written ROS 1 and
hand-built clouds) back to a SemanticKITTI-layout sequence, compared with the source files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA
from test_bag_tools import write_ros1_bag

from pvd_core.data.semantickitti import read_points, read_raw_labels, scan_files
from pvd_core.point_rule import PointRule
from pvd_ros import bag_io
from pvd_ros.cli import bag_main

KITTI = SHARED_DATA / "semantickitti"
N_SCANS = 4


def export(*args: str) -> int:
    return bag_main(["export", "--no-progress", *args])


def sequence(root: Path, seq: str = "00") -> Path:
    return root / "sequences" / seq


def bins(seq_dir: Path) -> list[np.ndarray]:
    return [read_points(p) for p in sorted((seq_dir / "velodyne").glob("*.bin"))]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bag_export")


@pytest.fixture(scope="module")
def source() -> list[tuple[np.ndarray, np.ndarray]]:
    """(points, raw labels) of the first N_SCANS real scans of sequence 08."""
    if not (KITTI / "sequences" / "08" / "labels").is_dir():
        pytest.skip(f"real SemanticKITTI sequence 08 not found under {KITTI}")
    pairs = scan_files(KITTI, ["08"])[:N_SCANS]
    out = []
    for scan, label in pairs:
        points = read_points(scan)
        out.append((points, read_raw_labels(label, len(points))))
    return out


@pytest.fixture(scope="module")
def real_bag(workdir: Path, source: list) -> Path:
    bag = workdir / "real_bag"
    assert bag_main(["from-kitti", "--data-root", str(KITTI), "--sequence", "08", "--out", str(bag),
                     "--max-scans", str(N_SCANS)]) == 0
    return bag


def kept(points: np.ndarray) -> np.ndarray:
    return PointRule().mask(points)


def test_round_trip_with_labels(workdir: Path, real_bag: Path, source: list, capsys: pytest.CaptureFixture) -> None:
    out = workdir / "full"
    assert export("--bag", str(real_bag), "--out", str(out), "--with-labels") == 0
    printed = capsys.readouterr().out
    seq = sequence(out)
    assert f"wrote {N_SCANS} scans with labels" in printed and str(seq) in printed
    got = bins(seq)
    labels = sorted((seq / "labels").glob("*.label"))
    assert [p.name for p in labels] == [f"{i:06d}.label" for i in range(N_SCANS)]
    dropped = 0
    for (points, raw), written, label in zip(source, got, labels, strict=True):
        keep = kept(points)
        dropped += int((~keep).sum())
        assert np.array_equal(written, points[keep])
        assert np.array_equal(read_raw_labels(label, len(written)), raw[keep])
    times = np.loadtxt(seq / "times.txt")
    assert times.shape == (N_SCANS,) and np.allclose(times, np.arange(N_SCANS) * 0.1)
    report = json.loads((seq / "export.json").read_text())
    assert report["bag"] == str(real_bag) and report["topic"] == bag_io.DEFAULT_TOPIC
    assert report["storage"] == "rosbag2" and report["time_source"] == "header"
    assert report["frames_read"] == report["exported"] == N_SCANS and report["skipped"] == {}
    assert report["points_dropped_by_point_rule"] == dropped
    assert report["points_written"] == sum(len(p) for p in got)
    start = bag_io.DEFAULT_START_S * 1_000_000_000
    assert report["stamps_ns"] == [start + i * 100_000_000 for i in range(N_SCANS)]
    assert report["options"]["with_labels"] is True and report["options"]["every"] == 1


def test_every_and_max_scans(workdir: Path, real_bag: Path, source: list) -> None:
    out = workdir / "thinned"
    assert export("--bag", str(real_bag), "--out", str(out), "--every", "2") == 0
    seq = sequence(out)
    assert not (seq / "labels").exists()  # labels only with --with-labels
    got = bins(seq)
    assert len(got) == 2 and np.array_equal(got[1], source[2][0][kept(source[2][0])])
    assert np.allclose(np.loadtxt(seq / "times.txt"), [0.0, 0.2])
    report = json.loads((seq / "export.json").read_text())
    assert (report["frames_read"], report["thinned"], report["exported"]) == (N_SCANS, 2, 2)
    assert report["frames_with_label_field"] == 2 and report["labels_written"] is False

    assert export("--bag", str(real_bag), "--out", str(out), "--sequence", "07", "--every", "3",
                  "--max-scans", "1") == 0
    report = json.loads((sequence(out, "07") / "export.json").read_text())
    assert (report["frames_read"], report["exported"]) == (1, 1)
    assert np.loadtxt(sequence(out, "07") / "times.txt", ndmin=1).tolist() == [0.0]


def test_existing_folder_needs_force(workdir: Path, real_bag: Path, capsys: pytest.CaptureFixture) -> None:
    out = workdir / "again"
    assert export("--bag", str(real_bag), "--out", str(out), "--with-labels") == 0
    capsys.readouterr()
    seq = sequence(out)
    assert export("--bag", str(real_bag), "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert str(seq) in err and "--force" in err and "\n" not in err.strip()
    assert export("--bag", str(real_bag), "--out", str(out), "--force", "--max-scans", "2") == 0
    # The earlier, longer export's scans are gone, and so are its labels (not asked for this time).
    assert sorted(p.name for p in (seq / "velodyne").iterdir()) == ["000000.bin", "000001.bin"]
    assert not list((seq / "labels").glob("*.label"))
    assert len((seq / "times.txt").read_text().splitlines()) == 2
    assert json.loads((seq / "export.json").read_text())["removed_stale_files"] == 2 + N_SCANS


def test_wrong_topic_names_the_topics(workdir: Path, real_bag: Path, capsys: pytest.CaptureFixture) -> None:
    out = workdir / "wrong_topic"
    assert export("--bag", str(real_bag), "--out", str(out), "--topic", "/velodyne_points") == 1
    err = capsys.readouterr().err
    assert "/velodyne_points" in err and "/points (sensor_msgs/msg/PointCloud2)" in err
    assert not out.exists()


@pytest.mark.parametrize("kind", ["rosbag1", "mcap_file"])
def test_ros1_bag_and_single_mcap_file(workdir: Path, real_bag: Path, source: list, kind: str) -> None:
    if kind == "rosbag1":
        bag = workdir / "real_ros1.bag"
        write_ros1_bag(real_bag, bag)
    else:
        (bag,) = real_bag.glob("*.mcap")
    out = workdir / f"from_{kind}"
    assert export("--bag", str(bag), "--out", str(out), "--with-labels", "--max-scans", "2") == 0
    seq = sequence(out)
    for (points, raw), written, label in zip(source, bins(seq), sorted((seq / "labels").glob("*")), strict=False):
        keep = kept(points)
        assert np.array_equal(written, points[keep])
        assert np.array_equal(read_raw_labels(label), raw[keep])
    report = json.loads((seq / "export.json").read_text())
    assert report["storage"] == ("rosbag1" if kind == "rosbag1" else "rosbag2") and report["exported"] == 2
    assert np.allclose(np.loadtxt(seq / "times.txt"), [0.0, 0.1])


def cloud_without_z(points: np.ndarray, stamp_ns: int):
    msg = bag_io.make_cloud(points, None, stamp_ns)
    msg.fields = [f for f in msg.fields if f.name != "z"]
    return msg


def test_malformed_and_empty_clouds_are_skipped(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(0)
    good = rng.uniform(-20, 20, size=(200, 4)).astype(np.float32)
    good[:, 3] = rng.integers(0, 256, size=200)
    bad_points = good.copy()
    bad_points[:5, 0] = np.nan  # non-finite
    bad_points[5:8, :3] = 0.0  # no-return pixels at the origin
    bad_points[8:10, :3] = 0.01  # closer than min_range
    invalid = np.full((50, 4), np.nan, dtype=np.float32)
    clouds = [bag_io.make_cloud(good, None, 10**9), cloud_without_z(good, 2 * 10**9),
              bag_io.make_cloud(bad_points, None, 3 * 10**9), bag_io.make_cloud(invalid, None, 4 * 10**9)]
    bag = workdir / "malformed"
    with bag_io.CloudBagWriter(bag, storage="sqlite3") as writer:
        for msg in clouds:
            writer.write(msg, bag_io.stamp_ns_of(msg.header))
    out = workdir / "malformed_out"
    assert export("--bag", str(bag), "--out", str(out), "--intensity-scale", "1/255") == 0
    printed = capsys.readouterr().out
    assert "wrote 2 scans" in printed and "2 skipped" in printed and "missing_field" in printed
    seq = sequence(out)
    scale = np.float32(1 / 255)
    first, second = bins(seq)
    expected = good.copy()
    expected[:, 3] *= scale
    assert np.array_equal(first, expected)
    expected = bad_points[10:].copy()
    expected[:, 3] *= scale
    assert np.array_equal(second, expected)
    report = json.loads((seq / "export.json").read_text())
    assert report["skipped"] == {"missing_field": 1, "no_valid_points": 1}
    assert "'z'" in report["skip_examples"]["missing_field"]
    assert report["points_dropped_by_point_rule"] == 10  # of the exported clouds
    assert report["stamps_ns"] == [10**9, 3 * 10**9] and np.allclose(np.loadtxt(seq / "times.txt"), [0.0, 2.0])
    assert report["options"]["intensity_scale"] == pytest.approx(1 / 255)
    assert report["intensity_max"] == max(float(first[:, 3].max()), float(second[:, 3].max())) <= 1.0
    assert "--intensity-scale" not in printed  # scaled to 0..1: no note

    only_bad = workdir / "only_bad"
    with bag_io.CloudBagWriter(only_bad) as writer:
        writer.write(cloud_without_z(good, 10**9), 10**9)
    assert export("--bag", str(only_bad), "--out", str(workdir / "only_bad_out")) == 1
    err = capsys.readouterr().err
    assert "nothing exported" in err and "1 missing_field" in err and "'z'" in err
    assert not (workdir / "only_bad_out").exists()


def test_with_labels_needs_raw_ids(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Header

    from pvd_ros import cloud_codec

    points = np.random.default_rng(1).uniform(1, 10, size=(30, 4)).astype(np.float32)
    unlabelled = workdir / "unlabelled_bag"
    with bag_io.CloudBagWriter(unlabelled) as writer:
        writer.write(bag_io.make_cloud(points, None, 10**9), 10**9)
    assert export("--bag", str(unlabelled), "--out", str(workdir / "u_out"), "--with-labels") == 1
    err = capsys.readouterr().err
    assert "no_label_field" in err and "export without it" in err

    node_output = workdir / "node_output_bag"
    msg = cloud_codec.encode_labelled(Header(), points, np.ones(30, np.uint16), np.ones(30, np.float32),
                                      cloud_codec.packed_rgb_lut(np.zeros((20, 3), np.uint8)))
    with bag_io.CloudBagWriter(node_output) as writer:
        writer.write_serialized(serialize_message(msg), 10**9)
    assert export("--bag", str(node_output), "--out", str(workdir / "n_out"), "--with-labels") == 1
    err = capsys.readouterr().err
    assert "class indices" in err and "--with-labels is refused" in err
    assert export("--bag", str(node_output), "--out", str(workdir / "n_out")) == 0  # points only: fine
    printed = capsys.readouterr().out
    assert "'label' field" in printed and "--intensity-scale 1/255" in printed  # uniform(1, 10) intensities


@pytest.mark.parametrize("flag, value, message", [("--every", "0", "--every must be >= 1"),
                                                  ("--max-scans", "0", "--max-scans must be >= 1"),
                                                  ("--sequence", "../x", "--sequence must be a folder name"),
                                                  ("--min-range", "-1", "--min-range")])
def test_bad_options(workdir: Path, flag: str, value: str, message: str, capsys: pytest.CaptureFixture) -> None:
    assert export("--bag", str(workdir / "nowhere"), "--out", str(workdir / "x"), flag, value) == 1
    assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export("--bag", "b", "--out", "o", "--intensity-scale", "loud")
