"""`pvd_bag from-kitti` and `pvd_bag eval` on small real bags (synthetic vlp16 scans, the real scan).

Everything is real: `pvd synth` writes the sequence, rosbags writes and reads MCAP and
sqlite3, a tiny real checkpoint runs through the Segmenter. The eval figures are checked
against an independent path (scan files -> Segmenter -> ConfusionMatrix), so a bag codec
or label-mapping bug shows up as a different mIoU.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pvd_core.cli import main as pvd_main
from pvd_core.data.semantickitti import read_labels, read_points, read_raw_labels, scan_files
from pvd_ros import bag_io
from pvd_ros.cli import bag_main
from pvd_ros.cloud_codec import CloudError, decode_points

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_SCANS = 3


def write_ros1_bag(rosbag2: Path, out: Path, topic: str = "/points") -> None:
    """Copy the clouds of a rosbag2 into a ROS 1 bag with rosbags' rosbag1 Writer and the ROS1 typestore."""
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    ros1 = get_typestore(Stores.ROS1_NOETIC)
    T = ros1.types
    with bag_io.CloudBagReader(rosbag2, topic) as reader, Writer(out) as writer:
        connection = writer.add_connection(topic, bag_io.POINTCLOUD2, typestore=ros1)
        for cloud in reader:
            m = cloud.msg
            header = T["std_msgs/msg/Header"](seq=cloud.index, stamp=T["builtin_interfaces/msg/Time"](
                sec=m.header.stamp.sec, nanosec=m.header.stamp.nanosec), frame_id=m.header.frame_id)
            fields = [T["sensor_msgs/msg/PointField"](name=f.name, offset=f.offset, datatype=f.datatype,
                                                      count=f.count) for f in m.fields]
            msg = T[bag_io.POINTCLOUD2](header=header, height=m.height, width=m.width, fields=fields,
                                        is_bigendian=m.is_bigendian, point_step=m.point_step,
                                        row_step=m.row_step, data=m.data, is_dense=m.is_dense)
            writer.write(connection, cloud.timestamp_ns, ros1.serialize_ros1(msg, bag_io.POINTCLOUD2))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bag_tools")


@pytest.fixture(scope="module")
def synth_root(workdir: Path) -> Path:
    root = workdir / "synth"
    rc = pvd_main(["synth", "--out", str(root), "--sequence", "00", "--scans", str(N_SCANS), "--sensor", "vlp16",
                   "--seed", "3", "--columns", "512", "--quiet"])
    assert rc == 0
    return root




@pytest.fixture(scope="module")
def synth_bag(workdir: Path, synth_root: Path) -> Path:
    out = workdir / "synth_mcap"
    assert bag_main(["from-kitti", "--data-root", str(synth_root), "--sequence", "00", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_from_kitti_round_trip(workdir: Path, synth_root: Path, storage: str) -> None:
    out = workdir / f"rt_{storage}"
    rc = bag_main(["from-kitti", "--data-root", str(synth_root), "--sequence", "00", "--out", str(out),
                   "--storage", storage, "--rate", "20"])
    assert rc == 0
    assert list(out.glob("*.mcap" if storage == "mcap" else "*.db3")), sorted(p.name for p in out.iterdir())
    pairs = scan_files(synth_root, ["00"])
    with bag_io.CloudBagReader(out) as reader:
        assert len(reader) == N_SCANS
        clouds = list(reader)
    assert [c.index for c in clouds] == list(range(N_SCANS))
    stamps = np.array([c.stamp_ns for c in clouds])
    assert np.array_equal(stamps, [c.timestamp_ns for c in clouds])
    assert np.array_equal(np.diff(stamps), [50_000_000] * (N_SCANS - 1))  # 20 Hz
    assert stamps[0] == bag_io.DEFAULT_START_S * 1_000_000_000
    for cloud, (scan, label) in zip(clouds, pairs):
        assert cloud.frame_id == "lidar"
        assert [f.name for f in cloud.msg.fields] == ["x", "y", "z", "intensity", "label"]
        points = read_points(scan)
        assert np.array_equal(decode_points(cloud.msg).points, points)
        assert np.array_equal(bag_io.read_label_field(cloud.msg), read_raw_labels(label, len(points)))


def test_from_kitti_refuses_existing_output_and_missing_sequence(
        workdir: Path, synth_bag: Path, synth_root: Path, capsys: pytest.CaptureFixture) -> None:
    assert bag_main(["from-kitti", "--data-root", str(synth_root), "--sequence", "00", "--out", str(synth_bag)]) == 1
    assert str(synth_bag) in capsys.readouterr().err
    assert bag_main(["from-kitti", "--data-root", str(synth_root), "--sequence", "42",
                     "--out", str(workdir / "none")]) == 1
    err = capsys.readouterr().err
    assert "sequences/42/velodyne" in err
    assert not (workdir / "none").exists()


def test_eval_matches_direct_segmentation(workdir: Path, synth_bag: Path, synth_root: Path,
                                          tiny_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    from pvd_core.metrics import ConfusionMatrix, compute_iou
    from pvd_core.segmenter import Segmenter

    out_json = workdir / "eval" / "synth.json"
    rc = bag_main(["eval", "--bag", str(synth_bag), "--checkpoint", str(tiny_checkpoint), "--json", str(out_json)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "traffic-sign" in printed
    report = json.loads(out_json.read_text())
    assert report["command"].startswith("pvd_bag eval --bag")
    assert report["frames"] == N_SCANS and report["labelled_frames"] == N_SCANS
    assert report["latency_only"] is False
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["max"]
    assert set(report["iou"]) == set(Segmenter.from_checkpoint(tiny_checkpoint).label_map.class_names[1:])
    for kind in ("confusion", "bev"):
        png = Path(report["plots"][kind])
        assert png.parent == out_json.parent
        assert png.read_bytes()[:8] == PNG_MAGIC

    # Independent path: scan files -> Segmenter -> confusion matrix.
    segmenter = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")
    confusion = ConfusionMatrix(segmenter.label_map.num_classes)
    for scan, label in scan_files(synth_root, ["00"]):
        points = read_points(scan)
        confusion.update(segmenter.segment(points).labels.astype(np.int64), read_labels(label, len(points)))
    expected = compute_iou(confusion.matrix)
    assert report["scored_points"] == expected.points
    assert report["miou"] == pytest.approx(100.0 * expected.miou, abs=1e-3)


def test_eval_of_unlabelled_bag_is_latency_only(workdir: Path, synth_root: Path, tiny_checkpoint: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    root = workdir / "unlabelled"
    shutil.copytree(synth_root / "sequences" / "00" / "velodyne", root / "sequences" / "05" / "velodyne")
    bag = workdir / "unlabelled_bag"
    assert bag_main(["from-kitti", "--data-root", str(root), "--sequence", "05", "--out", str(bag),
                     "--storage", "sqlite3"]) == 0
    assert "WITHOUT label field" in capsys.readouterr().out
    out_json = workdir / "eval_unlabelled" / "r.json"
    assert bag_main(["eval", "--bag", str(bag), "--checkpoint", str(tiny_checkpoint), "--json", str(out_json),
                     "--max-frames", "2"]) == 0
    assert "latency only" in capsys.readouterr().out
    report = json.loads(out_json.read_text())
    assert report["latency_only"] is True and report["miou"] is None and report["frames"] == 2
    assert report["latency_ms"]["max"] > 0
    assert "confusion" not in report["plots"] and Path(report["plots"]["bev"]).is_file()


def test_eval_names_missing_topic(synth_bag: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    assert bag_main(["eval", "--bag", str(synth_bag), "--checkpoint", str(tiny_checkpoint),
                     "--topic", "/velodyne_points"]) == 1
    err = capsys.readouterr().err
    assert "/velodyne_points" in err and "/points" in err


def test_real_scan_bag(workdir: Path, shared_kitti_root: Path, real_label_path: Path, tiny_checkpoint: Path) -> None:
    bag = workdir / "real"
    assert bag_main(["from-kitti", "--data-root", str(shared_kitti_root), "--sequence", "08", "--out", str(bag),
                     "--max-scans", "1"]) == 0
    raw = read_raw_labels(real_label_path)
    with bag_io.CloudBagReader(bag) as reader:
        (cloud,) = list(reader)
    assert np.array_equal(bag_io.read_label_field(cloud.msg), raw)
    out_json = workdir / "real_eval" / "r.json"
    assert bag_main(["eval", "--bag", str(bag), "--checkpoint", str(tiny_checkpoint), "--json", str(out_json)]) == 0
    report = json.loads(out_json.read_text())
    labelled = int((read_labels(real_label_path) > 0).sum())
    assert report["scored_points"] == labelled and report["points"] == raw.size
    assert report["miou"] is not None and 0.0 <= report["miou"] <= 100.0


def test_bags_are_read_whatever_their_name(workdir: Path, synth_root: Path, synth_bag: Path, tiny_checkpoint: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    """A rosbag2 directory called drive.bag, a ROS 1 .bag file, and a ROS 1 file with another name all
    read back the same clouds, and eval scores them exactly as the plain rosbag2."""
    drive = workdir / "drive.bag"
    assert bag_main(["from-kitti", "--data-root", str(synth_root), "--sequence", "00", "--out", str(drive)]) == 0
    assert drive.is_dir() and (drive / "metadata.yaml").is_file()
    ros1 = workdir / "drive_ros1.bag"
    write_ros1_bag(synth_bag, ros1)
    assert ros1.read_bytes().startswith(b"#ROSBAG V2.0\n")
    ros1_renamed = workdir / "drive_ros1.recording"
    shutil.copyfile(ros1, ros1_renamed)
    with bag_io.CloudBagReader(synth_bag) as reader:
        reference = [(c.stamp_ns, c.timestamp_ns, decode_points(c.msg).points, bag_io.read_label_field(c.msg))
                     for c in reader]
    for path, kind in ((drive, "rosbag2"), (ros1, "rosbag1"), (ros1_renamed, "rosbag1")):
        with bag_io.CloudBagReader(path) as reader:
            assert reader.kind == kind and len(reader) == N_SCANS
            got = [(c.stamp_ns, c.timestamp_ns, decode_points(c.msg).points, bag_io.read_label_field(c.msg))
                   for c in reader]
        for (s0, t0, p0, l0), (s1, t1, p1, l1) in zip(reference, got, strict=True):
            assert (s0, t0) == (s1, t1)
            assert np.array_equal(p0, p1) and np.array_equal(l0, l1)
    reports = {}
    for path in (synth_bag, drive, ros1):
        out_json = workdir / "named" / f"{path.name}.json"
        assert bag_main(["eval", "--bag", str(path), "--checkpoint", str(tiny_checkpoint), "--json", str(out_json),
                         "--max-frames", "2"]) == 0, capsys.readouterr().err
        reports[path.name] = json.loads(out_json.read_text())
    assert reports[synth_bag.name]["miou"] is not None
    for name in (drive.name, ros1.name):
        assert reports[name]["iou"] == reports[synth_bag.name]["iou"]
        assert reports[name]["scored_points"] == reports[synth_bag.name]["scored_points"]


@pytest.mark.parametrize("what", ["text_file.bag", "empty_dir.bag", "notes.txt", "missing.bag"])
def test_unreadable_bag_path_is_one_line_naming_what_was_tried(workdir: Path, tiny_checkpoint: Path, what: str,
                                                               capsys: pytest.CaptureFixture) -> None:
    path = workdir / "unreadable" / what
    path.parent.mkdir(exist_ok=True)
    if what.startswith("empty_dir"):
        path.mkdir(exist_ok=True)
    elif what != "missing.bag":
        path.write_text("not a bag\n")
    for command in ("eval", "replay"):
        assert bag_main([command, "--bag", str(path), "--checkpoint", str(tiny_checkpoint)]) == 1
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and str(path) in err, err
        if what == "missing.bag":
            assert "not found" in err
        elif what.startswith("empty_dir"):
            assert "rosbag2 directory" in err and "metadata.yaml" in err
        else:
            assert "rosbag2 directory" in err and "ROS 1 bag" in err and ".mcap" in err


def _recorded_output_bag(path: Path, input_bag: Path, segmenter, label_datatype: int | None = None) -> None:
    """What `pvd_bag replay --record` writes: the node's encoded answers (class-index labels), rclpy-serialised."""
    from rclpy.serialization import serialize_message

    from pvd_ros import cloud_codec

    lut = cloud_codec.packed_rgb_lut(segmenter.label_map.color_array())
    with bag_io.CloudBagReader(input_bag) as reader, \
            bag_io.CloudBagWriter(path, topic="/segment_node/output/points") as writer:
        for cloud in reader:
            points = decode_points(cloud.msg).points
            result = segmenter.segment(points)
            msg = cloud_codec.encode_labelled(cloud_codec.copy_into_message(cloud.msg).header, points,
                                              result.labels.astype(np.uint16), result.confidence, lut)
            if label_datatype is not None:
                next(f for f in msg.fields if f.name == "label").datatype = label_datatype
            writer.write_serialized(serialize_message(msg), cloud.timestamp_ns)


def test_eval_of_recorded_output_bag_reads_class_indices(workdir: Path, synth_bag: Path, tiny_checkpoint: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """The node's uint16 class indices are ground truth as they are: the same model on the same points
    agrees with itself (mIoU 100). Read as raw SemanticKITTI ids (as before), class 2 or 14 is an
    unknown raw id and class 1 ("car") the raw id "outlier" (unlabelled)."""
    from pvd_core.segmenter import Segmenter

    segmenter = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")
    recorded = workdir / "recorded_output"
    _recorded_output_bag(recorded, synth_bag, segmenter)
    out_json = workdir / "recorded_eval" / "r.json"
    assert bag_main(["eval", "--bag", str(recorded), "--checkpoint", str(tiny_checkpoint), "--json", str(out_json),
                     "--topic", "/segment_node/output/points"]) == 0, capsys.readouterr().err
    report = json.loads(out_json.read_text())
    with bag_io.CloudBagReader(recorded, "/segment_node/output/points") as reader:
        labels = np.concatenate([bag_io.read_label_field(c.msg) for c in reader])
    assert report["labelled_frames"] == N_SCANS
    assert report["scored_points"] == int((labels > 0).sum()) > 0
    assert report["miou"] == pytest.approx(100.0)


@pytest.mark.parametrize("datatype, name", [(5, "int32"), (4, "uint16")])
def test_eval_refuses_an_ambiguous_label_field(workdir: Path, synth_bag: Path, tiny_checkpoint: Path, datatype: int,
                                               name: str, capsys: pytest.CaptureFixture) -> None:
    """An int32 label, or a uint16 one without the node's confidence field, could be raw ids or class indices."""
    bag = workdir / f"ambiguous_{name}"
    with bag_io.CloudBagReader(synth_bag) as reader, bag_io.CloudBagWriter(bag) as writer:
        for cloud in reader:
            next(f for f in cloud.msg.fields if f.name == "label").datatype = datatype  # the same bytes retyped
            writer.write(cloud.msg, cloud.timestamp_ns)
    assert bag_main(["eval", "--bag", str(bag), "--checkpoint", str(tiny_checkpoint)]) == 1
    err = capsys.readouterr().err
    assert str(bag) in err and "'label'" in err and f"is {name} x 1" in err and "refusing" in err, err


def test_label_field_checks() -> None:
    points = np.arange(20, dtype=np.float32).reshape(5, 4)
    msg = bag_io.make_cloud(points, np.array([1, 2, 3, 4, 0x10028], dtype=np.uint32), stamp_ns=1_500_000_000)
    assert msg.header.stamp.sec == 1 and msg.header.stamp.nanosec == 500_000_000
    assert bag_io.read_label_field(msg).tolist() == [1, 2, 3, 4, 0x10028]
    no_labels = bag_io.make_cloud(points, None, stamp_ns=0)
    assert not bag_io.has_label_field(no_labels)
    with pytest.raises(CloudError, match="'label'"):
        bag_io.read_label_field(no_labels)
    msg.fields[4].datatype = 7  # FLOAT32: a label must be an integer
    with pytest.raises(CloudError, match="integer"):
        bag_io.read_label_field(msg)
    with pytest.raises(ValueError, match="labels"):
        bag_io.make_cloud(points, np.zeros(4, dtype=np.uint32), stamp_ns=0)


def test_bev_png(tmp_path: Path) -> None:
    from pvd_core.labels import SEMANTIC_KITTI
    from pvd_core.visualize import save_bev_png

    rng = np.random.default_rng(0)
    points = rng.uniform(-30, 30, size=(500, 4)).astype(np.float32)
    pred = rng.integers(1, 20, size=500)
    both = save_bev_png(points, pred, SEMANTIC_KITTI, tmp_path / "both.png", gt=pred[::-1].copy())
    single = save_bev_png(points, pred, SEMANTIC_KITTI, tmp_path / "single.png")
    import matplotlib.image as mpimg

    h2, w2 = mpimg.imread(both).shape[:2]
    h1, w1 = mpimg.imread(single).shape[:2]
    assert w2 > 1.5 * w1 and h1 == h2  # prediction and ground truth side by side
    with pytest.raises(ValueError, match="ground-truth"):
        save_bev_png(points, pred, SEMANTIC_KITTI, tmp_path / "x.png", gt=pred[:10])
    with pytest.raises(ValueError, match=r"\[0, 19\]"):
        save_bev_png(points, pred + 5, SEMANTIC_KITTI, tmp_path / "x.png")
