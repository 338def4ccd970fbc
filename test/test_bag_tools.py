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
from pvd_ros.bag_cli import main as bag_main
from pvd_ros.cloud_codec import CloudError, decode_points

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_SCANS = 3


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
