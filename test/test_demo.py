"""`pvd_demo` end to end on a tiny street: synth -> bag -> live replay through a child
segment_node -> offline eval; the report files and pictures it promises exist and agree."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.demo, pytest.mark.dds, pytest.mark.subprocess]  # slow tier (markers in setup.cfg)

pytest.importorskip("rclpy", reason="the demo replays through a real ROS 2 node; rclpy is not installed")


def test_demo_writes_reports_pictures_and_a_labelled_bag(tmp_path, tiny_checkpoint, private_ros_domain, capsys):
    from pvd_ros.cli import demo_main as main

    out = tmp_path / "demo"
    assert main(["--checkpoint", str(tiny_checkpoint), "--scans", "3", "--out", str(out), "--device", "cpu",
                 "--sensor", "vlp16", "--columns", "600"]) == 0
    printed = capsys.readouterr().out
    replay = json.loads((out / "replay.json").read_text())
    offline = json.loads((out / "eval.json").read_text())
    assert replay["frames"] == 3 and replay["answered"] + replay["dropped"] == 3 and replay["answered"] >= 1
    assert offline["frames"] == 3 and 0.0 <= offline["miou"] <= 100.0
    for name in ("confusion", "bev"):
        png = Path(offline["plots"][name])
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert str(png) in printed
    assert "frames answered" in printed and "latency" in printed
    assert f"model: {tiny_checkpoint}" in printed and "data:  synthetic vlp16 street, 3 scans" in printed
    assert "no data licence recorded" in printed
    assert (out / "labelled_bag").is_dir() and replay["record"]["messages"] == replay["answered"]


def test_demo_on_real_semantickitti_scans(tmp_path, tiny_checkpoint, shared_kitti_root, private_ros_domain, capsys):
    from pvd_ros.cli import demo_main as main

    out = tmp_path / "demo_real"
    assert main(["--checkpoint", str(tiny_checkpoint), "--semantickitti", str(shared_kitti_root), "--scans", "2",
                 "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    offline = json.loads((out / "eval.json").read_text())
    assert offline["frames"] == 2 and offline["scored_points"] > 200_000  # two real 120 k-point scans
    assert f"real SemanticKITTI scans, sequence 08 of {shared_kitti_root}" in printed
