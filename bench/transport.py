"""What rclpy transport alone costs for the node's clouds, with and without retain_freed_memory.

An echo node answers each 2 MB input cloud (the real 123 389-point scan) with a prebuilt
3.5 MB labelled cloud, so no inference runs: what is left is the publish calls, DDS delivery
and the conversions to and from Python, at a LiDAR's 10 Hz with the CPU idle in between
(as on a robot whose GPU does the forward). Each mode runs in its own process because the
malloc tuning is process-wide:

- ``default``: glibc's allocator as it comes;
- ``retain``: ``pvd_core.memory.retain_freed_memory()`` first, as segment_node does by default.

    python bench/transport.py --frames 30
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCAN = REPO.parent / "shared" / "data" / "semantickitti" / "sequences" / "08" / "velodyne" / "000000.bin"
PARTS = ("publish_in", "to_callback", "publish_out", "to_answer", "round_trip")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scan", type=Path, default=DEFAULT_SCAN, help="SemanticKITTI .bin scan")
    parser.add_argument("--frames", type=int, default=30, help="measured frames per mode (after 3 warm ones)")
    parser.add_argument("--period", type=float, default=0.1, help="seconds between frames (0.1 = 10 Hz)")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "transport.json")
    parser.add_argument("--mode", choices=("default", "retain"), help=argparse.SUPPRESS)  # child process
    return parser.parse_args(argv)


def echo_round_trips(scan: Path, frames: int, period: float, retain: bool) -> dict[str, list[float]]:
    """Run the echo in this process; per-frame milliseconds of each part."""
    if retain:
        from pvd_core.memory import retain_freed_memory

        retain_freed_memory()
    import threading

    import rclpy
    from rclpy.context import Context
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

    from pvd_ros.cloud_codec import encode_labelled, make_cloud, packed_rgb_lut
    from rclpy_harness import spin_in_background, wait_until

    points = np.fromfile(scan, dtype=np.float32).reshape(-1, 4)
    n = len(points)
    answer = encode_labelled(Header(), points, np.ones(n, np.uint16), np.ones(n, np.float32),
                             packed_rgb_lut(np.zeros((20, 3), np.uint8)))
    context = Context()
    rclpy.init(context=context)
    echo = rclpy.create_node("pvd_transport_echo", context=context)
    tester = rclpy.create_node("pvd_transport_tester", context=context)
    reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
    out_pub = echo.create_publisher(PointCloud2, "echo_out", reliable)
    marks: dict[str, float] = {}
    done = threading.Event()

    def on_input(msg: PointCloud2) -> None:
        marks["callback"] = time.perf_counter()
        answer.header = msg.header
        out_pub.publish(answer)
        marks["published"] = time.perf_counter()

    def on_answer(_msg: PointCloud2) -> None:
        marks["answer"] = time.perf_counter()
        done.set()

    echo.create_subscription(PointCloud2, "echo_in", on_input, qos_profile_sensor_data)
    tester.create_subscription(PointCloud2, "echo_out", on_answer, reliable)
    pub = tester.create_publisher(PointCloud2, "echo_in", qos_profile_sensor_data)
    spinner = spin_in_background(context, echo, tester)
    wait_until(lambda: pub.get_subscription_count() > 0 and out_pub.get_subscription_count() > 0)
    parts: dict[str, list[float]] = {k: [] for k in PARTS}
    try:
        for i in range(frames + 3):
            msg = make_cloud(Header(frame_id="velodyne"), points)
            done.clear()
            t0 = time.perf_counter()
            pub.publish(msg)
            t1 = time.perf_counter()
            if not done.wait(10):
                raise SystemExit(f"no echo for frame {i}")
            if i >= 3:
                for key, value in zip(PARTS, (t1 - t0, marks["callback"] - t1, marks["published"] - marks["callback"],
                                              marks["answer"] - marks["published"], marks["answer"] - t0)):
                    parts[key].append(round(value * 1e3, 3))
            time.sleep(period)
    finally:
        spinner.close()
        echo.destroy_node()
        tester.destroy_node()
        rclpy.try_shutdown(context=context)
    return parts


def run_mode(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    from pvd_ros.dds_settings import private_domain_id

    cmd = [sys.executable, __file__, "--mode", mode, "--scan", str(args.scan), "--frames", str(args.frames),
           "--period", str(args.period)]
    with private_domain_id() as domain:
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=REPO)
    parts = json.loads(out.stdout.strip().splitlines()[-1])
    return {"median_ms": {k: round(float(np.median(v)), 3) for k, v in parts.items()},
            "p95_ms": {k: round(float(np.percentile(v, 95)), 3) for k, v in parts.items()},
            "frames_ms": parts}


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if not args.scan.is_file():
        raise SystemExit(f"--scan: no such file {args.scan}")
    if args.mode:  # child: one mode, JSON on stdout
        parts = echo_round_trips(args.scan, args.frames, args.period, retain=args.mode == "retain")
        sys.stdout.flush()
        print(json.dumps(parts), flush=True)
        os._exit(0)  # skip DDS teardown at interpreter exit (see segment_node's console script)
    result = {
        "benchmark": "transport",
        "command": "python " + shlex.join(["bench/transport.py"] + (sys.argv[1:] if argv is None else argv)),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
        "scan": {"path": str(args.scan), "input_bytes": int(args.scan.stat().st_size)},
        "frames": args.frames, "period_s": args.period,
        "modes": {mode: run_mode(args, mode) for mode in ("default", "retain")},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    for mode, res in result["modes"].items():
        print(f"{mode:8s} " + " ".join(f"{k}={v:.2f}" for k, v in res["median_ms"].items()) + " ms (medians)")
    print(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
