"""`pvd_bag replay`: a real bag into the real segment node over real rclpy / Fast DDS.

No timing assertions: these tests check the bookkeeping against counts observed
independently of the report's own arithmetic (the node's received/processed counters,
the recorded bag's messages and their stamps), that answers match inputs by stamp, that
the recorded bag holds the node's labels, that overload drops instead of queueing, and
that the scores equal the offline `pvd_bag eval` ones when nothing is dropped. Each test
process uses its own ROS domain.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from pvd_core.cli import main as pvd_main
from pvd_ros import bag_io
from pvd_ros.cli import bag_main
from test_bag_tools import write_ros1_bag

pytestmark = [pytest.mark.dds, pytest.mark.subprocess]  # slow tier (markers in setup.cfg)

DOMAIN_ID = 120 + os.getpid() % 100  # 120..219: away from the default 0 and from other test files
FAST_NODE = {"warmup_points": 2000}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bag_replay")




def _make_bag(workdir: Path, name: str, scans: int, rate_hz: float) -> Path:
    root = workdir / f"{name}_data"
    assert pvd_main(["synth", "--out", str(root), "--sequence", "00", "--scans", str(scans), "--sensor", "vlp16",
                     "--seed", "5", "--columns", "512", "--quiet"]) == 0
    bag = workdir / name
    assert bag_main(["from-kitti", "--data-root", str(root), "--sequence", "00", "--out", str(bag),
                     "--rate", str(rate_hz)]) == 0
    return bag


@pytest.fixture(scope="module")
def slow_bag(workdir: Path) -> Path:
    """3 scans, 1 s apart: even a loaded 2-core machine answers every one."""
    return _make_bag(workdir, "slow", scans=3, rate_hz=1.0)


def test_inprocess_replay_scores_like_eval_and_records(workdir: Path, slow_bag: Path, tiny_checkpoint: Path) -> None:
    from pvd_core.segmenter import Segmenter
    from pvd_ros.bag_eval import evaluate_bag
    from pvd_ros.bag_replay import replay_bag

    record = workdir / "recorded"
    report = replay_bag(slow_bag, tiny_checkpoint, rate=1.0, record=record, node="inprocess", device="cpu",
                        domain_id=DOMAIN_ID, node_params=FAST_NODE, progress=False)
    assert report["answered"] == 3, report  # 1 s between scans of 7k points
    assert report["unmatched_answers"] == 0 and report["bad_answers"] == []
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["max"]
    # Counted by the node itself: every bag frame and every probe arrived, and each was answered.
    stats = report["node_stats"]
    assert report["probes_sent"] >= 1
    assert stats["received"] == 3 + report["probes_sent"], (stats, report["probes_sent"])
    assert stats["processed"] == report["answered"] + report["probe_answers"], stats
    assert report["input_hz"] == pytest.approx(1.0)

    offline = evaluate_bag(slow_bag, tiny_checkpoint, device="cpu", progress=False)
    assert report["scored_points"] == offline["scored_points"]
    assert report["miou"] == offline["miou"] and report["iou"] == offline["iou"]  # same points, same model

    # The recorded bag holds the node's answers: same stamps, the Segmenter's labels.
    segmenter = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")
    with bag_io.CloudBagReader(slow_bag) as reader:
        inputs = {c.stamp_ns: c.msg for c in reader}
    with bag_io.CloudBagReader(record, topic="/segment_node/output/points") as reader:
        outputs = list(reader)
    assert len(outputs) == report["record"]["messages"] == 3
    assert sorted(o.stamp_ns for o in outputs) == sorted(inputs)  # one answer per input frame

    # The recorded output bag scores with its uint16 class indices as ground truth: the same model on
    # the same points agrees with itself.
    agreement = evaluate_bag(record, tiny_checkpoint, topic="/segment_node/output/points", device="cpu",
                             progress=False)
    assert agreement["labelled_frames"] == 3 and agreement["miou"] == pytest.approx(100.0)
    from pvd_ros.cloud_codec import decode_points

    for out in outputs:
        assert out.stamp_ns in inputs and out.timestamp_ns > out.stamp_ns  # logged at stamp + latency
        assert {f.name for f in out.msg.fields} >= {"x", "y", "z", "intensity", "label", "confidence", "rgb"}
        points = decode_points(inputs[out.stamp_ns]).points
        assert np.array_equal(decode_points(out.msg).points, points)
        assert np.array_equal(bag_io.read_label_field(out.msg), segmenter.segment(points).labels)


def test_overload_drops_instead_of_queueing(workdir: Path, tiny_checkpoint: Path) -> None:
    """12 scans at 50x their 10 Hz timing (one every 2 ms): the node keeps only the newest."""
    from pvd_ros.bag_replay import replay_bag

    bag = _make_bag(workdir, "burst", scans=12, rate_hz=10.0)
    record = workdir / "burst_recorded"
    report = replay_bag(bag, tiny_checkpoint, rate=50.0, node="inprocess", device="cpu", domain_id=DOMAIN_ID,
                        node_params=FAST_NODE, record=record, progress=False)
    assert report["answered"] >= 1 and report["answered"] < 12 and report["dropped"] > 0, report
    # Observed independently: the node received no more than was sent, and the recorded bag holds
    # exactly the answered frames, each a distinct bag frame.
    stats = report["node_stats"]
    assert report["answered"] <= stats["received"] <= 12 + report["probes_sent"], (stats, report)
    with bag_io.CloudBagReader(bag) as reader:
        input_stamps = {c.stamp_ns for c in reader}
    with bag_io.CloudBagReader(record, topic="/segment_node/output/points") as reader:
        output_stamps = [c.stamp_ns for c in reader]
    assert len(output_stamps) == len(set(output_stamps)) == report["answered"]
    assert set(output_stamps) <= input_stamps
    # Everything the node processed reached us: the drops happened at its input (newest scan
    # only), not in a queue of answers nor in transport.
    assert report["node_stats"]["processed"] == report["answered"] + report["probe_answers"]
    assert report["unmatched_answers"] == 0 and report["bad_answers"] == []


def test_replay_cli_with_child_process_node(workdir: Path, slow_bag: Path, tiny_checkpoint: Path,
                                            capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS"):
        monkeypatch.delenv(name, raising=False)  # a developer's own DDS settings would be kept
    out_json = workdir / "replay_cli.json"
    record = workdir / "replay_cli_recorded.bag"  # a rosbag2 directory named like a ROS 1 file
    ros1_bag = workdir / "slow_ros1.bag"
    write_ros1_bag(slow_bag, ros1_bag)
    rc = bag_main(["replay", "--bag", str(ros1_bag), "--checkpoint", str(tiny_checkpoint), "--rate", "2",
                   "--node", "process", "--device", "cpu", "--domain-id", str(DOMAIN_ID),
                   "-p", "warmup_points:=2000", "--json", str(out_json), "--record", str(record)])
    assert rc == 0, capsys.readouterr().err[-3000:]
    printed = capsys.readouterr().out
    assert "answered" in printed and "latency ms" in printed
    report = json.loads(out_json.read_text())
    assert report["command"].startswith("pvd_bag replay --bag")
    assert report["node"] == "process" and report["rate"] == 2.0 and report["input_hz"] == pytest.approx(2.0)
    assert report["answered"] >= 1, report
    with bag_io.CloudBagReader(record, topic="/segment_node/output/points") as reader:
        output_stamps = [c.stamp_ns for c in reader]
    with bag_io.CloudBagReader(ros1_bag) as reader:
        assert reader.kind == "rosbag1"
        input_stamps = {c.stamp_ns for c in reader}
    assert len(output_stamps) == len(set(output_stamps)) == report["answered"]
    assert set(output_stamps) <= input_stamps
    assert report["miou"] is not None and set(report["latency_ms"]) >= {"p50", "p95", "max"}
    # The child node got the profile launch gives it (this process keeps its own settings).
    assert Path(report["dds_env"]["FASTDDS_DEFAULT_PROFILES_FILE"]).name == "fastdds_large_clouds.xml"


def test_replay_errors_name_the_problem(workdir: Path, slow_bag: Path, tiny_checkpoint: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    assert bag_main(["replay", "--bag", str(slow_bag), "--checkpoint", str(tiny_checkpoint),
                     "--topic", "/nope", "--domain-id", str(DOMAIN_ID)]) == 1
    assert "'/nope'" in capsys.readouterr().err
    assert bag_main(["replay", "--bag", str(slow_bag), "--checkpoint", str(workdir / "missing.pt")]) == 1
    assert "missing.pt" in capsys.readouterr().err
    assert bag_main(["replay", "--bag", str(slow_bag), "--checkpoint", str(tiny_checkpoint),
                     "-p", "max_points"]) == 1
    assert "NAME:=VALUE" in capsys.readouterr().err
