"""The `pvd_bag` command: rosbag2 tools around the segmentation node.

- ``from-kitti``: a SemanticKITTI-layout sequence -> a rosbag2 of PointCloud2 carrying its own
  ground truth (``label`` field, raw ids); ``eval`` and ``replay`` also read ROS 1 bags;
- ``eval``: offline per-class IoU / mIoU and per-frame latency of a checkpoint on a bag;
- ``replay``: live replay into the segment node over real rclpy: answered and dropped
  frames, latency percentiles, mIoU over answered frames, optional recording.

Heavy imports (torch, rclpy) happen inside each subcommand, so ``--help`` is instant.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence


def _add_from_kitti(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("from-kitti", help="write a SemanticKITTI-layout sequence as a rosbag2 of PointCloud2",
                       description="Write one PointCloud2 per scan (fields x, y, z, intensity float32 and, when "
                                   "the sequence has labels, label uint32 raw SemanticKITTI id) to a new rosbag2.")
    p.add_argument("--data-root", required=True, type=Path,
                   help="dataset root holding sequences/NN/velodyne (real SemanticKITTI or `pvd synth` output)")
    p.add_argument("--sequence", required=True, help="sequence folder name, e.g. 08")
    p.add_argument("--out", required=True, type=Path, help="output bag folder (must not exist)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage (default mcap)")
    p.add_argument("--rate", type=float, default=10.0, help="scan rate in Hz for the stamps (default 10)")
    p.add_argument("--topic", default="/points", help="topic name (default /points)")
    p.add_argument("--frame-id", default="lidar", help="header.frame_id (default lidar)")
    p.add_argument("--max-scans", type=int, default=None, help="write only the first N scans")
    p.add_argument("--start-time", type=float, default=None,
                   help="stamp of the first scan in seconds since the epoch (default 1700000000, fixed so "
                        "the same sequence always gives the same bag)")


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="offline per-class IoU, mIoU and latency of a checkpoint on a bag",
                       description="Segment every cloud of the topic with the Segmenter and score it against "
                                   "the cloud's label field; a bag without labels is timed only.")
    p.add_argument("--bag", required=True, type=Path,
                   help="rosbag2 folder (any name, also drive.bag), one .mcap/.db3 file, or a ROS 1 .bag file")
    p.add_argument("--checkpoint", required=True, type=Path, help="model checkpoint (.pt)")
    p.add_argument("--topic", default="/points", help="PointCloud2 topic (default /points)")
    p.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    p.add_argument("--plot-dir", type=Path, default=None,
                   help="folder for the confusion-matrix and bird's-eye PNGs (default: the --json folder, "
                        "else the current folder)")
    p.add_argument("--bev-frame", type=int, default=None, help="frame drawn bird's-eye (default: the middle one)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--max-frames", type=int, default=None, help="evaluate only the first N frames")


def _add_replay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="replay a bag into the live segment node and score the answers",
                       description="Publish the bag's clouds through rclpy at the bag's timing x rate with "
                                   "sensor-data QoS into segment_node, match answers by stamp, and report "
                                   "answered / dropped frames, latency and mIoU over answered frames.")
    p.add_argument("--bag", required=True, type=Path,
                   help="rosbag2 folder (any name, also drive.bag), one .mcap/.db3 file, or a ROS 1 .bag file")
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint the node runs (.pt)")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0 = bag timing)")
    p.add_argument("--topic", default="/points", help="PointCloud2 topic of the bag (default /points)")
    p.add_argument("--record", type=Path, default=None, help="record the node's labelled clouds to this new bag")
    p.add_argument("--record-storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    p.add_argument("--node", choices=("process", "inprocess"), default="process",
                   help="run segment_node as a child process (default; what a robot does) or in this process")
    p.add_argument("--device", default="auto", help="node parameter device: auto | cpu | cuda")
    p.add_argument("--params-file", type=Path, default=None,
                   help="node parameter file (e.g. config/segment.yaml); checkpoint and device override it")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra node parameter, as with ros2 run -p (e.g. -p max_points:=50000); repeatable")
    p.add_argument("--domain-id", type=int, default=None, help="ROS domain id (default: $ROS_DOMAIN_ID or 0)")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="longest wait in seconds for the last answers after the bag ends (default 30)")
    p.add_argument("--max-frames", type=int, default=None, help="replay only the first N frames")
    p.add_argument("--startup-timeout", type=float, default=180.0,
                   help="longest wait in seconds for the node to be ready and answer a probe (default 180; "
                        "what is discovered meanwhile is printed every 5 s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pvd_bag", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_from_kitti(sub)
    _add_eval(sub)
    _add_replay(sub)
    return parser


def _write_json(report: dict, path: Optional[Path], command: Sequence[str]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"command": " ".join(["pvd_bag", *command]), **{k: v for k, v in report.items() if k != "table"}}
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {path}")


def _parse_params(items: Sequence[str]) -> dict:
    """NAME:=VALUE pairs -> dict, values typed as ROS parses them (YAML scalars)."""
    import yaml

    out = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise ValueError(f"--param {item!r}: expected NAME:=VALUE, e.g. max_points:=50000")
        out[name] = yaml.safe_load(value) if value else ""
    return out


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    if args.command == "from-kitti":
        from pvd_ros.bag_io import DEFAULT_START_S, kitti_to_bag

        summary = kitti_to_bag(args.data_root, args.sequence, args.out, storage=args.storage, rate_hz=args.rate,
                               max_scans=args.max_scans, topic=args.topic, frame_id=args.frame_id,
                               start_s=DEFAULT_START_S if args.start_time is None else args.start_time)
        labels = "with" if summary["labelled"] else "WITHOUT"
        print(f"wrote {summary['scans']} clouds ({summary['points']} points, {labels} label field) on "
              f"{summary['topic']} at {summary['rate_hz']:g} Hz to {summary['bag']} ({summary['storage']})")
        return 0
    if args.command == "eval":
        from pvd_ros.bag_eval import evaluate_bag, print_report

        plot_dir = args.plot_dir or (args.json.parent if args.json is not None else Path("."))
        report = evaluate_bag(args.bag, args.checkpoint, topic=args.topic, device=args.device, plot_dir=plot_dir,
                              bev_frame=args.bev_frame, max_frames=args.max_frames)
        print_report(report)
        _write_json(report, args.json, argv)
        return 0
    if args.command == "replay":
        from pvd_ros.bag_replay import print_report, replay_bag

        node_params = _parse_params(args.param)
        report = replay_bag(args.bag, args.checkpoint, rate=args.rate, topic=args.topic, record=args.record,
                            record_storage=args.record_storage, node=args.node, device=args.device,
                            domain_id=args.domain_id, params_file=args.params_file, node_params=node_params,
                            drain_timeout_s=args.drain_timeout, startup_timeout_s=args.startup_timeout,
                            max_frames=args.max_frames)
        print_report(report)
        _write_json(report, args.json, argv)
        return 0
    raise AssertionError(args.command)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return run(args, argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        # Bag, data, checkpoint and replay errors name the file or topic: show them plainly.
        print(f"pvd_bag {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
