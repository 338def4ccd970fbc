"""`pvd synth`: write a synthetic labelled LiDAR sequence in SemanticKITTI layout."""
from __future__ import annotations

import argparse

from pvd_core.labels import SEMANTIC_KITTI
from pvd_core.synth.sensors import SENSORS, sensor_for
from pvd_core.synth.writer import SequenceSummary, SynthError, write_sequence


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="dataset root; scans go to OUT/sequences/SEQUENCE/")
    parser.add_argument("--sequence", default="00",
                        help="sequence folder name; with the seed it picks the town (default 00)")
    parser.add_argument("--scans", type=int, default=20, help="number of consecutive scans (default 20)")
    parser.add_argument("--sensor", default="hdl64", choices=sorted(SENSORS),
                        help="sensor model from docs/data.md's table (default hdl64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed, >= 0 (default 0)")
    parser.add_argument("--columns", type=int, default=None,
                        help="azimuth columns per revolution, to make cheaper scans (default: the sensor's)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the scans of an existing non-empty sequence folder")
    parser.add_argument("--preview", default=None, metavar="PNG",
                        help="also write a bird's-eye PNG of the first scan coloured by class")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def format_summary(s: SequenceSummary) -> str:
    lines = [
        f"wrote {s.scans} scans, {s.points} points ({s.points / s.scans:.0f} per scan, "
        f"min {min(s.points_per_scan)}, max {max(s.points_per_scan)}) from sensor {s.sensor} "
        f"to {s.sequence_dir} in {s.seconds:.1f} s; {100 * s.dropped_fraction:.1f}% of returns dropped",
        f"  + poses.txt, times.txt, calib.txt, synth.json in {s.sequence_dir}",
        "class histogram (training classes):",
    ]
    total = max(int(s.class_counts.sum()), 1)
    for c, n in enumerate(s.class_counts):
        lines.append(f"  {c:2d} {SEMANTIC_KITTI.class_names[c]:14s} {int(n):10d} {100 * n / total:6.2f}%")
    present = int((s.class_counts[1:] > 0).sum())
    lines.append(f"  {present} of {SEMANTIC_KITTI.num_classes - 1} classes present")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.scans < 1:
        raise SynthError(f"--scans must be >= 1, got {args.scans}")
    if args.columns is not None and args.columns < 8:
        raise SynthError(f"--columns must be >= 8, got {args.columns}")
    sensor = sensor_for(args.sensor, args.columns)
    summary = write_sequence(args.out, args.sequence, args.scans, sensor, args.seed, overwrite=args.overwrite,
                             progress=not args.quiet, preview=args.preview)
    print(format_summary(summary))
    if args.preview:
        print(f"preview: {args.preview}")
    return 0
