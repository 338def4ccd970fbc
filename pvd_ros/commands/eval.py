"""`pvd_bag eval`: offline per-class IoU / mIoU and per-frame latency of a checkpoint on a bag
(rosbag2 or ROS 1)."""
from __future__ import annotations

import argparse
from pathlib import Path

from pvd_core.device import DEVICE_SYNTAX, device_argument
from pvd_ros.commands import write_json_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", required=True, type=Path,
                        help="rosbag2 folder (any name, also drive.bag), one .mcap/.db3 file, or a ROS 1 .bag file")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="model checkpoint (.pt); default: the shipped models/semantickitti_student_pvd.pt")
    parser.add_argument("--topic", default="/points", help="PointCloud2 topic (default /points)")
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    parser.add_argument("--plot-dir", type=Path, default=None,
                        help="folder for the confusion-matrix and bird's-eye PNGs (default: the --json folder, "
                             "else the current folder)")
    parser.add_argument("--bev-frame", type=int, default=None, help="frame drawn bird's-eye (default: the middle one)")
    parser.add_argument("--device", default="auto", type=device_argument, help=f"{DEVICE_SYNTAX} (default auto)")
    parser.add_argument("--max-frames", type=int, default=None, help="evaluate only the first N frames")


def run(args: argparse.Namespace) -> int:
    from pvd_core.shipped_models import announce_model
    from pvd_ros.bag_eval import evaluate_bag, print_report

    plot_dir = args.plot_dir or (args.json.parent if args.json is not None else Path("."))
    checkpoint = announce_model(args.checkpoint, "pvd_bag eval")
    report = evaluate_bag(args.bag, checkpoint, topic=args.topic, device=args.device, plot_dir=plot_dir,
                          bev_frame=args.bev_frame, max_frames=args.max_frames)
    print_report(report)
    write_json_report(report, args.json, args.argv)
    return 0
