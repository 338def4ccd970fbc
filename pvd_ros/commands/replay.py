"""`pvd_bag replay`: live replay into the segment node over real rclpy: answered and dropped
frames, latency percentiles, mIoU over answered frames, optional recording."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from pvd_core.device import DEVICE_SYNTAX, device_argument
from pvd_core.errors import UsageError
from pvd_ros.commands import write_json_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", required=True, type=Path,
                        help="rosbag2 folder (any name, also drive.bag), one .mcap/.db3 file, or a ROS 1 .bag file")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint the node runs (.pt); default: the shipped models/semantickitti_student_pvd.pt")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0 = bag timing)")
    parser.add_argument("--topic", default="/points", help="PointCloud2 topic of the bag (default /points)")
    parser.add_argument("--record", type=Path, default=None, help="record the node's labelled clouds to this new bag")
    parser.add_argument("--record-storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    parser.add_argument("--node", choices=("process", "inprocess"), default="process",
                        help="run segment_node as a child process (default; what a robot does) or in this process")
    parser.add_argument("--device", default="auto", type=device_argument,
                        help=f"node parameter device: {DEVICE_SYNTAX} (default auto)")
    parser.add_argument("--params-file", type=Path, default=None,
                        help="node parameter file (e.g. config/segment.yaml); checkpoint and device override it")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="extra node parameter, as with ros2 run -p (e.g. -p max_points:=50000); repeatable")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS domain id (default: $ROS_DOMAIN_ID or 0)")
    parser.add_argument("--drain-timeout", type=float, default=30.0,
                        help="longest wait in seconds for the last answers after the bag ends (default 30)")
    parser.add_argument("--max-frames", type=int, default=None, help="replay only the first N frames")
    parser.add_argument("--startup-timeout", type=float, default=180.0,
                        help="longest wait in seconds for the node to be ready and answer a probe (default 180; "
                             "what is discovered meanwhile is printed every 5 s)")


def parse_params(items: Sequence[str]) -> dict:
    """NAME:=VALUE pairs -> dict, values typed as ROS parses them (YAML scalars)."""
    import yaml

    out = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise UsageError(f"--param {item!r}: expected NAME:=VALUE, e.g. max_points:=50000")
        out[name] = yaml.safe_load(value) if value else ""
    return out


def run(args: argparse.Namespace) -> int:
    from pvd_core.shipped_models import announce_model
    from pvd_ros.bag_replay import print_report, replay_bag

    node_params = parse_params(args.param)
    checkpoint = announce_model(args.checkpoint, "pvd_bag replay")
    report = replay_bag(args.bag, checkpoint, rate=args.rate, topic=args.topic, record=args.record,
                        record_storage=args.record_storage, node=args.node, device=args.device,
                        domain_id=args.domain_id, params_file=args.params_file, node_params=node_params,
                        drain_timeout_s=args.drain_timeout, startup_timeout_s=args.startup_timeout,
                        max_frames=args.max_frames)
    print_report(report)
    write_json_report(report, args.json, args.argv)
    return 0
