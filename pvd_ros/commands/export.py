"""`pvd_bag export`: a bag's PointCloud2 topic -> a SemanticKITTI-layout sequence (velodyne/*.bin,
times.txt, export.json, and labels/*.label with --with-labels) that `pvd distill --unlabelled` reads."""
from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

from pvd_core.point_rule import DEFAULT_MIN_RANGE
from pvd_ros.bag_io import DEFAULT_TOPIC


def scale_argument(text: str) -> float:
    """A number or a fraction such as 1/255."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number or a fraction such as 1/255, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", required=True, type=Path,
                        help="rosbag2 folder (any name, also drive.bag), one .mcap/.db3 file, or a ROS 1 .bag file")
    parser.add_argument("--topic", default=DEFAULT_TOPIC, help=f"PointCloud2 topic (default {DEFAULT_TOPIC})")
    parser.add_argument("--out", required=True, type=Path,
                        help="dataset root: the scans go to OUT/sequences/SEQUENCE/velodyne")
    parser.add_argument("--sequence", default="00", help="sequence folder name (default 00)")
    parser.add_argument("--every", type=int, default=1, metavar="N",
                        help="keep every Nth cloud of the topic (default 1: all); consecutive 10 Hz scans are "
                             "near-duplicates, so e.g. --every 5 keeps 2 scans a second")
    parser.add_argument("--max-scans", type=int, default=None, metavar="N", help="stop after writing N scans")
    parser.add_argument("--intensity-scale", type=scale_argument, default=1.0, metavar="S",
                        help="multiply intensity by S (default 1: written as the bag has it, which is what "
                             "segment_node feeds the model, it does not rescale). SemanticKITTI reflectance is "
                             "0..1, while many drivers publish 0..255: pass 1/255 for those (as the nuScenes "
                             "reader does), and remember the node still sees the driver's raw values")
    parser.add_argument("--min-range", type=float, default=DEFAULT_MIN_RANGE, metavar="M",
                        help=f"point rule: drop points closer than this (metres; default {DEFAULT_MIN_RANGE}, as "
                             "segment_node's min_range); non-finite points and the origin are always dropped")
    parser.add_argument("--with-labels", action="store_true",
                        help="also write labels/*.label from the clouds' uint32 'label' field (raw SemanticKITTI "
                             "ids, what from-kitti writes); refused for the node's class indices")
    parser.add_argument("--force", action="store_true",
                        help="write into an existing non-empty sequence folder (scans of an earlier export are "
                             "replaced or removed)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pvd_ros.bag_export import export_bag

    s = export_bag(args.bag, args.out, topic=args.topic, sequence=args.sequence, every=args.every,
                   max_scans=args.max_scans, intensity_scale=args.intensity_scale, with_labels=args.with_labels,
                   force=args.force, min_range=args.min_range, progress=not args.no_progress)
    skipped = ", ".join(f"{n} {reason}" for reason, n in s["skipped"].items())
    labels = " with labels" if s["labels_written"] else ""
    print(f"wrote {s['exported']} scans{labels} ({s['points_written']} points, {s['points_dropped_by_point_rule']} "
          f"dropped by the point rule) from {s['frames_read']} clouds read ({s['thinned']} thinned, "
          f"{s['skipped_total']} skipped{': ' + skipped if skipped else ''}) to {s['sequence_dir']}")
    if s["intensity_max"] > 1.0:
        print(f"note: intensity reaches {s['intensity_max']:g} as written; SemanticKITTI reflectance is 0..1 "
              "(for a 0..255 driver pass --intensity-scale 1/255)")
    if s["frames_with_label_field"] and not s["labels_written"]:
        print("note: the clouds carry a 'label' field; --with-labels also writes labels/*.label")
    return 0
