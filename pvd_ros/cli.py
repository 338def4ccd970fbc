"""The `pvd_bag` command: rosbag2 tools around the segmentation node.

- ``from-kitti``: a SemanticKITTI-layout sequence -> a rosbag2 of PointCloud2 carrying its own
  ground truth (``label`` field, raw ids); ``eval`` and ``replay`` also read ROS 1 bags;
- ``eval``: offline per-class IoU / mIoU and per-frame latency of a checkpoint on a bag;
- ``replay``: live replay into the segment node over real rclpy: answered and dropped
  frames, latency percentiles, mIoU over answered frames, optional recording;
- ``export``: a bag's PointCloud2 topic -> a SemanticKITTI-layout sequence (velodyne/*.bin,
  times.txt, export.json, optional labels/*.label), e.g. for ``pvd distill --unlabelled``.

Also the `pvd_demo` command (pvd_ros.commands.demo). Each subcommand is a module of
pvd_ros.commands; heavy imports (torch, rclpy) happen inside each, so ``--help`` is instant.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from pvd_core.commands import Command, dispatch, run_single

BAG_COMMANDS: dict[str, Command] = {
    "from-kitti": Command(
        "pvd_ros.commands.from_kitti", "write a SemanticKITTI-layout sequence as a rosbag2 of PointCloud2",
        "Write one PointCloud2 per scan (fields x, y, z, intensity float32 and, when the sequence has labels, "
        "label uint32 raw SemanticKITTI id) to a new rosbag2."),
    "eval": Command(
        "pvd_ros.commands.eval", "offline per-class IoU, mIoU and latency of a checkpoint on a bag",
        "Segment every cloud of the topic with the Segmenter and score it against the cloud's label field; "
        "a bag without labels is timed only."),
    "replay": Command(
        "pvd_ros.commands.replay", "replay a bag into the live segment node and score the answers",
        "Publish the bag's clouds through rclpy at the bag's timing x rate with sensor-data QoS into "
        "segment_node, match answers by stamp, and report answered / dropped frames, latency and mIoU over "
        "answered frames."),
    "export": Command(
        "pvd_ros.commands.export", "write a bag's PointCloud2 topic as a SemanticKITTI-layout sequence",
        "Write each cloud of the topic (every Nth, at most --max-scans) as velodyne/NNNNNN.bin (float32 x, y, z, "
        "intensity, the points the point rule keeps), with times.txt and export.json (provenance, skipped clouds) "
        "and, with --with-labels, labels/NNNNNN.label (raw ids): unlabelled data for `pvd distill --unlabelled`."),
}


def bag_main(argv: Optional[Sequence[str]] = None) -> int:
    """Console script ``pvd_bag``."""
    return dispatch("pvd_bag", "The `pvd_bag` command: rosbag2 tools around the segmentation node.", BAG_COMMANDS,
                    argv)


def demo_main(argv: Optional[Sequence[str]] = None) -> int:
    """Console script ``pvd_demo``."""
    return run_single("pvd_demo", "pvd_ros.commands.demo", argv)


if __name__ == "__main__":
    sys.exit(bag_main())
