"""`pvd_bag from-kitti`: a SemanticKITTI-layout sequence -> a rosbag2 of PointCloud2 carrying its own
ground truth (``label`` field, raw ids)."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", required=True, type=Path,
                        help="dataset root holding sequences/NN/velodyne (real SemanticKITTI or `pvd synth` output)")
    parser.add_argument("--sequence", required=True, help="sequence folder name, e.g. 08")
    parser.add_argument("--out", required=True, type=Path, help="output bag folder (must not exist)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage (default mcap)")
    parser.add_argument("--rate", type=float, default=10.0, help="scan rate in Hz for the stamps (default 10)")
    parser.add_argument("--topic", default="/points", help="topic name (default /points)")
    parser.add_argument("--frame-id", default="lidar", help="header.frame_id (default lidar)")
    parser.add_argument("--max-scans", type=int, default=None, help="write only the first N scans")
    parser.add_argument("--start-time", type=float, default=None,
                        help="stamp of the first scan in seconds since the epoch (default 1700000000, fixed so "
                             "the same sequence always gives the same bag)")


def run(args: argparse.Namespace) -> int:
    from pvd_ros.bag_io import DEFAULT_START_S, kitti_to_bag

    summary = kitti_to_bag(args.data_root, args.sequence, args.out, storage=args.storage, rate_hz=args.rate,
                           max_scans=args.max_scans, topic=args.topic, frame_id=args.frame_id,
                           start_s=DEFAULT_START_S if args.start_time is None else args.start_time)
    labels = "with" if summary["labelled"] else "WITHOUT"
    print(f"wrote {summary['scans']} clouds ({summary['points']} points, {labels} label field) on "
          f"{summary['topic']} at {summary['rate_hz']:g} Hz to {summary['bag']} ({summary['storage']})")
    return 0
