"""Seconds per scan of the synthetic generator per sensor, points per scan, and the class
coverage of a 20-scan hdl64 sequence (the check too slow for the unit tests).

    python bench/synth_speed.py [--scans 5] [--out bench/results/synth_speed.json]

Timings are ray casting + noise per scan (the town is built once per sequence and timed
apart); the coverage run goes through write_sequence, files and all.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pvd_core.labels import SEMANTIC_KITTI
from pvd_core.synth.raycast import RayFan
from pvd_core.synth.scene import generate_town
from pvd_core.synth.sensors import SENSORS, sensor_for
from pvd_core.synth.writer import generate_scan, write_sequence


def time_sensor(name: str, scans: int, seed: int, sequence: str) -> dict:
    sensor = sensor_for(name)
    t0 = time.perf_counter()
    town = generate_town(seed, sequence, scans + 1)
    town_s = time.perf_counter() - t0
    fan = RayFan(sensor)
    generate_scan(town, fan, seed, sequence, 0)  # warm-up
    secs, pts = [], []
    for i in range(1, scans + 1):
        t0 = time.perf_counter()
        hits = generate_scan(town, fan, seed, sequence, i)
        secs.append(time.perf_counter() - t0)
        pts.append(len(hits.points))
    return {
        "sensor": name, "beams": sensor.beams, "columns": sensor.columns, "rays": sensor.num_rays,
        "scans_timed": scans, "town_build_s": round(town_s, 4),
        "seconds_per_scan_median": round(float(np.median(secs)), 4),
        "seconds_per_scan_mean": round(float(np.mean(secs)), 4),
        "seconds_per_scan_max": round(float(np.max(secs)), 4),
        "points_per_scan_mean": int(np.mean(pts)), "points_per_scan_min": int(np.min(pts)),
        "points_per_scan_max": int(np.max(pts)),
        "expected_points": list(sensor.expected_points),
        "under_1s_per_scan": bool(np.median(secs) < 1.0),
    }


def coverage(seed: int, sequence: str, scans: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        s = write_sequence(tmp, sequence, scans, sensor_for("hdl64"), seed, progress=False)
    total = int(s.class_counts.sum())
    present = [SEMANTIC_KITTI.class_names[c] for c in range(1, SEMANTIC_KITTI.num_classes) if s.class_counts[c] > 0]
    return {
        "sensor": "hdl64", "seed": seed, "sequence": sequence, "scans": scans,
        "seconds_total_with_io": round(s.seconds, 2), "points": s.points,
        "dropped_fraction": round(s.dropped_fraction, 4),
        "classes_present": len(present), "classes_present_names": present,
        "meets_14_of_19": len(present) >= 14,
        "class_percent": {SEMANTIC_KITTI.class_names[c]: round(100.0 * int(n) / total, 3)
                          for c, n in enumerate(s.class_counts)},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scans", type=int, default=5, help="timed scans per sensor (after one warm-up)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sequence", default="00")
    ap.add_argument("--coverage-sequences", nargs="*", default=["00", "01", "02"],
                    help="sequences whose 20-scan hdl64 class coverage is recorded")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "synth_speed.json"))
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    result = {
        "command": "python " + " ".join(shlex.quote(a)
                                        for a in [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "numpy": np.__version__, "loadavg_before": [round(v, 2) for v in load_before]},
        "sensors": [time_sensor(name, args.scans, args.seed, args.sequence) for name in sorted(SENSORS)],
        "coverage_20_scans": [coverage(args.seed, seq, 20) for seq in args.coverage_sequences],
    }
    load_after = os.getloadavg()
    result["machine"]["loadavg_after"] = [round(v, 2) for v in load_after]
    busy = max(load_before[0], load_after[0]) > 0.5 * (os.cpu_count() or 1)
    result["machine"]["busy"] = busy
    result["machine"]["note"] = (
        "other processes shared the CPU cores during the run (1-min load average above half the cores): "
        "timings are pessimistic" if busy else "machine was mostly idle during the run")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for s in result["sensors"]:
        print(f"{s['sensor']}: {s['seconds_per_scan_median']:.3f} s/scan (median of {s['scans_timed']}), "
              f"{s['points_per_scan_mean']} points/scan")
    for c in result["coverage_20_scans"]:
        print(f"coverage seq {c['sequence']}: {c['classes_present']} of 19 classes over {c['scans']} hdl64 scans")
    print(f"load average before/after: {load_before[0]:.2f}/{load_after[0]:.2f}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
