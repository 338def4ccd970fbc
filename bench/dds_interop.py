"""Do default-configured peers exchange 2 MB clouds with segment_node? Real processes, real DDS.

Three processes per candidate, all on one ROS_DOMAIN_ID of their own:

- a *driver* (publisher) that publishes the real 123 389-point scan (2 MB) on
  /velodyne_points with sensor-data QoS at 10 Hz, as a LiDAR driver does;
- segment_node (a tiny random-weight checkpoint: the forward takes milliseconds, transport
  is what is measured) with the candidate's DDS settings in its environment;
- a *viewer* (subscriber) that subscribes to /pvd/labelled_points reliably, as RViz does,
  and to the node's small ~/debug/processing_time_ms (one per scan the node processed).

The driver and the viewer get NO DDS settings: FASTDDS_*, FASTRTPS_*, RMW_IMPLEMENTATION
and ROS_AUTOMATIC_DISCOVERY_RANGE are removed from their environment (``--peers default``),
or they get the candidate's settings too (``--peers same``: what a launch file's
SetEnvironmentVariable gives rviz2, or a driver that was given the copy-paste line).

Per candidate the result counts frames: published by the driver, processed by the node
(seen on the debug topic), and answered (full-size labelled clouds at the viewer, matched
by stamp). The CPU here is shared with training runs, so only counts are recorded.

    python bench/dds_interop.py --frames 10 --peers default \
        --candidates default large_data profile=config/fastdds_large_clouds.xml
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCAN = REPO.parent / "shared" / "data" / "semantickitti" / "sequences" / "08" / "velodyne" / "000000.bin"
INPUT_TOPIC = "/velodyne_points"
OUTPUT_TOPIC = "/pvd/labelled_points"
PROCESSED_TOPIC = "/segment_node/debug/processing_time_ms"
READY_TOPIC = "/segment_node/ready"
#: Points the node feeds to the network (the answer still holds every point, the rest with label 0):
#: the forward's cost is not what is measured, and on the shared CPU a full forward takes seconds.
NETWORK_POINTS = 1000
COUNTERS = ("received", "processed", "skipped_stale", "skipped_no_subscriber", "dropped_malformed", "errors")
#: Environment variables that configure DDS: a "default" peer has none of them.
DDS_VARIABLES = ("FASTDDS_BUILTIN_TRANSPORTS", "FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE",
                 "RMW_FASTRTPS_USE_QOS_FROM_XML", "RMW_IMPLEMENTATION", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                 "ROS_STATIC_PEERS", "ROS_LOCALHOST_ONLY")


def candidate_env(spec: str) -> dict[str, str]:
    """``default`` | ``large_data`` | ``profile=PATH`` -> the variables the node gets."""
    if spec == "default":
        return {}
    if spec == "large_data":
        return {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}
    if spec.startswith("profile="):
        path = str((REPO / spec.split("=", 1)[1]).resolve())
        return {"FASTDDS_DEFAULT_PROFILES_FILE": path}
    raise SystemExit(f"unknown candidate {spec!r} (default | large_data | profile=PATH)")


def default_peer_env(domain_id: int) -> dict[str, str]:
    """This process's environment without any DDS setting, on ``domain_id``, one torch thread."""
    env = {k: v for k, v in os.environ.items() if k not in DDS_VARIABLES}
    env.update(ROS_DOMAIN_ID=str(domain_id), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def node_command(checkpoint: Path) -> list[str]:
    return [sys.executable, "-m", "pvd_ros.segment_node", "--ros-args",
            "-p", f"checkpoint:={checkpoint}", "-p", "device:=cpu", "-p", "num_threads:=1",
            "-p", "warmup_points:=2000", "-p", f"max_points:={NETWORK_POINTS}",
            "-r", f"~/input/points:={INPUT_TOPIC}", "-r", f"~/output/points:={OUTPUT_TOPIC}"]


# ----------------------------------------------------------------------------------------------
# Child roles


def _ros_node(name: str) -> Any:
    import rclpy

    rclpy.init()
    return rclpy.create_node(name)


def run_driver(scan: Path, frames: int, period: float, ready_timeout: float,
               answer_dir: Optional[Path]) -> dict[str, Any]:
    """Publish ``frames`` copies of the scan (stamps 1..frames s) once the node and viewer are up.

    With ``answer_dir`` (lockstep) frame i+1 goes out ``period`` after frame i or, if later, once
    the viewer has written ``answer_dir/<i>`` (a file, not DDS) or 5 s have passed: the node's
    forward time then cannot turn into skipped frames, only transport losses are left.
    """
    import numpy as np
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Bool, Header

    from pvd_ros.cloud_codec import make_cloud

    node = _ros_node("pvd_bench_driver")
    ready: list[bool] = []
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(Bool, READY_TOPIC, lambda msg: ready.append(bool(msg.data)), latched)
    pub = node.create_publisher(PointCloud2, INPUT_TOPIC, qos_profile_sensor_data)
    points = np.fromfile(scan, dtype=np.float32).reshape(-1, 4)
    deadline = time.monotonic() + ready_timeout
    # Discovery (the graph) works whatever the transports; the latched ~/ready needs user data.
    while time.monotonic() < deadline and not (
            ready and pub.get_subscription_count() > 0 and node.count_subscribers(OUTPUT_TOPIC) > 0):
        rclpy.spin_once(node, timeout_sec=0.1)
    result: dict[str, Any] = {"ready_received": bool(ready), "node_subscribed": pub.get_subscription_count() > 0,
                              "viewer_seen": node.count_subscribers(OUTPUT_TOPIC) > 0}
    if not ready:  # no data path from the node to us: wait for the graph alone, then measure anyway
        while time.monotonic() < deadline + 30 and node.count_publishers(PROCESSED_TOPIC) == 0:
            rclpy.spin_once(node, timeout_sec=0.1)
    time.sleep(1.0)  # let the viewer's and the node's endpoints finish matching
    published = 0
    for i in range(frames):
        t0 = time.monotonic()
        pub.publish(make_cloud(Header(frame_id="velodyne", stamp=_stamp(i + 1)), points))
        published += 1
        time.sleep(max(0.0, period - (time.monotonic() - t0)))
        if answer_dir is not None:
            wait_until = time.monotonic() + 5.0
            while not (answer_dir / str(i + 1)).exists() and time.monotonic() < wait_until:
                time.sleep(0.01)
    result.update(published=published, points=int(len(points)), bytes=int(points.size * 4))
    time.sleep(0.5)
    node.destroy_node()
    rclpy.try_shutdown()
    return result


def _stamp(sec: int) -> Any:
    from builtin_interfaces.msg import Time

    return Time(sec=sec, nanosec=0)


def run_viewer(stop_file: Path, timeout: float) -> dict[str, Any]:
    """Count answers (by stamp) and the node's processed-frame ticks until ``stop_file`` exists;
    each answer's stamp is also written as an empty file next to ``stop_file`` (for lockstep)."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import Float64

    node = _ros_node("pvd_bench_viewer")
    answers: dict[int, int] = {}
    processed: list[float] = []
    counters: dict[str, str] = {}
    rviz_like = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)

    def on_answer(msg: PointCloud2) -> None:
        answers[msg.header.stamp.sec] = msg.width * msg.height
        (stop_file.parent / str(msg.header.stamp.sec)).touch()

    node.create_subscription(PointCloud2, OUTPUT_TOPIC, on_answer, rviz_like)
    node.create_subscription(Float64, PROCESSED_TOPIC, lambda msg: processed.append(msg.data), rviz_like)

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if "segment_node" in status.name:
                counters.update({kv.key: kv.value for kv in status.values if kv.key in COUNTERS})

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    deadline = time.monotonic() + timeout
    while not stop_file.exists() and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    rclpy.try_shutdown()
    return {"answer_points_by_stamp": {str(k): v for k, v in sorted(answers.items())},
            "processed_ticks": len(processed),
            "node_counters": counters}


def _child_main(role: str, args: argparse.Namespace) -> None:
    if role == "driver":
        answer_dir = Path(args.stop_file).parent if args.lockstep else None
        result = run_driver(args.scan, args.frames, args.period, args.ready_timeout, answer_dir)
    else:
        result = run_viewer(Path(args.stop_file), _driver_budget(args) + 30)
    print(json.dumps(result), flush=True)
    os._exit(0)  # skip DDS teardown at interpreter exit (as segment_node's console script does)


# ----------------------------------------------------------------------------------------------
# Orchestration


def _driver_budget(args: argparse.Namespace) -> float:
    """Seconds the driver may take: ready wait, graph wait, frames (lockstep: 5 s each at most)."""
    return args.ready_timeout + 60 + args.frames * (5.0 + args.period)


def measure(spec: str, peers: str, checkpoint: Path, args: argparse.Namespace, domain_id: int,
            workdir: Path) -> dict[str, Any]:
    """One candidate: start viewer, node and driver; count what arrived."""
    settings = candidate_env(spec)
    peer_env = default_peer_env(domain_id)
    if peers == "same":
        peer_env.update(settings)
    node_env = {**default_peer_env(domain_id), **settings}
    rundir = workdir / f"run_{domain_id}"
    rundir.mkdir()
    stop_file = rundir / "stop"
    me = [sys.executable, str(Path(__file__).resolve()), "--scan", str(args.scan), "--frames", str(args.frames),
          "--period", str(args.period), "--ready-timeout", str(args.ready_timeout), "--stop-file", str(stop_file)]
    me += ["--lockstep"] if args.lockstep else []
    log = open(workdir / f"node_{domain_id}.log", "w+")
    viewer = subprocess.Popen(me + ["--role", "viewer"], env=peer_env, cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    node = subprocess.Popen(node_command(checkpoint), env=node_env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    driver = subprocess.Popen(me + ["--role", "driver"], env=peer_env, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        driver_out, _ = driver.communicate(timeout=_driver_budget(args))
        time.sleep(3.0)  # answers still in flight
        stop_file.touch()
        viewer_out, _ = viewer.communicate(timeout=30)
    finally:
        for proc in (driver, viewer):
            if proc.poll() is None:
                proc.kill()
        if node.poll() is None:
            node.send_signal(signal.SIGINT)
            try:
                node.wait(timeout=20)
            except subprocess.TimeoutExpired:
                node.kill()
    log.seek(0)
    node_log = log.read().splitlines()
    log.close()
    drv = json.loads(driver_out.strip().splitlines()[-1])
    view = json.loads(viewer_out.strip().splitlines()[-1])
    full = [k for k, v in view["answer_points_by_stamp"].items() if v == drv.get("points")]
    return {"candidate": spec, "peers": peers, "lockstep": args.lockstep, "node_env": settings,
            "published": drv["published"], "ready_received_by_driver": drv["ready_received"],
            "processed_by_node": view["processed_ticks"], "node_counters": view["node_counters"],
            "answered": len(full),
            "answered_stamps": sorted(int(k) for k in full), "driver": drv,
            "node_log_tail": node_log[-6:]}


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scan", type=Path, default=DEFAULT_SCAN, help="SemanticKITTI .bin scan")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--period", type=float, default=0.1, help="seconds between frames (0.1 = 10 Hz)")
    parser.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for the node")
    parser.add_argument("--candidates", nargs="+", default=["default", "large_data",
                                                            "profile=config/fastdds_large_clouds.xml"])
    parser.add_argument("--lockstep", action="store_true",
                        help="next frame only after the previous answer (or 5 s): no frames skipped for compute")
    parser.add_argument("--peers", nargs="+", choices=("default", "same"), default=["default"])
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "dds_interop.json")
    parser.add_argument("--role", choices=("driver", "viewer"), help=argparse.SUPPRESS)
    parser.add_argument("--stop-file", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.role:
        _child_main(args.role, args)
    if not args.scan.is_file():
        raise SystemExit(f"--scan: no such file {args.scan}")
    sys.path.insert(0, str(REPO / "test"))
    from conftest import save_tiny_checkpoint

    from pvd_ros.dds_settings import private_domain_id

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        checkpoint = save_tiny_checkpoint(workdir / "tiny.pt")
        for spec in args.candidates:
            for peers in args.peers:
                with private_domain_id() as domain_id:
                    run = measure(spec, peers, checkpoint, args, domain_id, workdir)
                runs.append(run)
                print(f"{spec:45s} peers={peers:7s} published {run['published']} processed {run['processed_by_node']} "
                      f"answered {run['answered']} node {run['node_counters']} "
                      f"(driver got ~/ready: {run['ready_received_by_driver']})", flush=True)
    result = {
        "benchmark": "dds_interop",
        "command": "python " + shlex.join(["bench/dds_interop.py"] + (sys.argv[1:] if argv is None else argv)),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                    "net.core.rmem_max": _sysctl("net/core/rmem_max"),
                    "net.core.wmem_max": _sysctl("net/core/wmem_max")},
        "scan": str(args.scan), "frames": args.frames, "period_s": args.period,
        "note": "CPU shared with training runs: success counts only, no timings",
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.output}")
    return 0


def _sysctl(name: str) -> Optional[int]:
    try:
        return int(Path("/proc/sys", name).read_text())
    except OSError:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
