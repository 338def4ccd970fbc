"""Live replay of a synthetic 64-beam bag into segment_node: student vs teacher, 1x and 2x.

What a robotics team asks before deploying: at the sensor's rate, how many scans get an
answer, how many are dropped, and how old is an answer when it arrives? The node keeps
only the newest scan, so whatever the CPU cannot keep up with must be *dropped*, never
queued: the check is that the p95 latency of answered frames stays under 2 x the
single-frame processing time (measured with direct Segmenter calls) at every rate.

Steps: `pvd synth` writes an hdl64 sequence, `pvd_bag from-kitti` makes a 10 Hz bag, and
`pvd_bag replay` (the same code) plays it at each rate into the node (a child process by
default). Checkpoints: --student / --teacher, else the shipped models/*student*.pt /
models/*teacher*.pt, else random-weight checkpoints of config/synthetic_student.yaml /
synthetic_teacher.yaml (speed does not depend on the weights; the JSON says which).

    python bench/replay.py                                   # 100 scans, 1x and 2x
    python bench/replay.py --scans 20 --columns 1024 --output /tmp/replay_small.json
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
from typing import Any, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scans", type=int, default=100, help="scans in the synthetic bag (default 100)")
    parser.add_argument("--sensor", default="hdl64", choices=("hdl64", "hdl32", "vlp16"))
    parser.add_argument("--columns", type=int, default=None,
                        help="azimuth columns per scan (default: the sensor's; fewer = cheaper scans)")
    parser.add_argument("--sensor-hz", type=float, default=10.0, help="scan rate of the bag (default 10)")
    parser.add_argument("--rates", type=float, nargs="+", default=[1.0, 2.0], help="replay speed factors")
    parser.add_argument("--student", type=Path, default=None, help="student checkpoint")
    parser.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint")
    parser.add_argument("--models", nargs="+", default=["student", "teacher"], choices=("student", "teacher"))
    parser.add_argument("--node", default="process", choices=("process", "inprocess"),
                        help="segment_node as a child process (default) or in this process")
    from pvd_core.device import DEVICE_SYNTAX, device_argument

    parser.add_argument("--device", default="auto", type=device_argument, help=f"{DEVICE_SYNTAX} (default auto)")
    parser.add_argument("--single-frames", type=int, default=5,
                        help="direct Segmenter calls timed for the single-frame processing time")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS domain id (default: 150 + pid %% 50)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the sequence, bag and checkpoints here")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "replay.json")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def resolve_checkpoint(role: str, given: Optional[Path], workdir: Path) -> tuple[Path, str]:
    """(checkpoint path, where it came from) for 'student' or 'teacher'."""
    if given is not None:
        if not given.is_file():
            raise SystemExit(f"--{role} {given}: checkpoint not found")
        return given, f"given: {given}"
    shipped = sorted((REPO / "models").glob(f"*{role}*.pt"))
    if shipped:
        return shipped[0], f"shipped: {shipped[0].relative_to(REPO)}"
    import torch

    from pvd_core.checkpoint import save_checkpoint
    from pvd_core.config import load_config
    from pvd_core.labels import label_map_for
    from pvd_core.models.cylinder3d import build_model

    config_path = REPO / "config" / f"synthetic_{role}.yaml"
    cfg = load_config(config_path)
    torch.manual_seed(0)
    path = workdir / f"{role}_random.pt"
    save_checkpoint(path, build_model(cfg), cfg, label_map_for(cfg.dataset.kind),
                    {"dataset": "random weights for bench/replay.py", "step": 0, "metrics": {}})
    return path, f"random weights of {config_path.relative_to(REPO)} (no models/*{role}*.pt shipped)"


def single_frame_ms(checkpoint: Path, bag: Path, device: str, frames: int) -> dict[str, Any]:
    """Direct Segmenter calls on the bag's first frames, after warm-up calls."""
    from pvd_core.segmenter import Segmenter
    from pvd_ros import bag_io
    from pvd_ros.cloud_codec import decode_points

    segmenter = Segmenter.from_checkpoint(checkpoint, device=device)
    clouds = []
    with bag_io.CloudBagReader(bag) as reader:
        for cloud in reader:
            clouds.append(decode_points(cloud.msg).points)
            if len(clouds) >= frames:
                break
    # The first calls in a process pay one-off set-up costs (seconds on CPU, measured up to
    # 17 s): call until two consecutive times agree within 20 % (at most 10 calls).
    segmenter.warmup()
    previous = None
    for _ in range(10):
        t0 = time.perf_counter()
        segmenter.segment(clouds[0])
        elapsed = time.perf_counter() - t0
        if previous is not None and abs(elapsed - previous) < 0.2 * previous:
            break
        previous = elapsed
    times = []
    for points in clouds:
        t0 = time.perf_counter()
        segmenter.segment(points)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median": round(float(np.median(times)), 3), "max": round(float(np.max(times)), 3),
            "frames": len(times), "points_per_frame": int(np.mean([c.shape[0] for c in clouds])),
            "device": str(segmenter.device)}


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    import torch

    from pvd_core.cli import main as pvd_main
    from pvd_ros.bag_io import kitti_to_bag
    from pvd_ros.bag_replay import replay_bag

    command = "python bench/replay.py" + ("" if argv is None and len(sys.argv) == 1 else
                                          " " + shlex.join(sys.argv[1:] if argv is None else argv))
    domain_id = args.domain_id if args.domain_id is not None else 150 + os.getpid() % 50
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="pvd_bench_replay_")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)

    data_root, bag = workdir / "data", workdir / f"{args.sensor}_{args.scans}_bag"
    if not bag.exists():
        synth = ["synth", "--out", str(data_root), "--sequence", "00", "--scans", str(args.scans),
                 "--sensor", args.sensor, "--seed", str(args.seed), "--overwrite"]
        if args.columns:
            synth += ["--columns", str(args.columns)]
        if pvd_main(synth) != 0:
            raise SystemExit("pvd synth failed")
        kitti_to_bag(data_root, "00", bag, rate_hz=args.sensor_hz)

    results: dict[str, Any] = {
        "command": command,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
                    "python": platform.python_version()},
        "bag": {"scans": args.scans, "sensor": args.sensor, "columns": args.columns, "sensor_hz": args.sensor_hz,
                "seed": args.seed},
        "node": args.node,
        "models": {},
        "checks": [],
    }
    all_ok = True
    for role in args.models:
        checkpoint, source = resolve_checkpoint(role, args.student if role == "student" else args.teacher, workdir)
        print(f"[{role}] {source}", flush=True)
        single = single_frame_ms(checkpoint, bag, args.device, args.single_frames)
        print(f"[{role}] single frame: median {single['median']:.1f} ms over {single['frames']} frames "
              f"of {single['points_per_frame']} points", flush=True)
        runs = []
        for rate in args.rates:
            report = replay_bag(bag, checkpoint, rate=rate, node=args.node, device=args.device,
                                domain_id=domain_id, progress=True)
            p95 = report["latency_ms"]["p95"]
            bound = 2.0 * single["median"]
            ok = p95 is not None and p95 < bound
            all_ok &= ok
            run = {k: report[k] for k in ("rate", "input_hz", "published", "answered", "dropped", "drop_rate",
                                          "latency_ms", "publish_lateness_ms", "probe_round_trip_ms", "wall_s",
                                          "node_stats", "node_mean_ms", "miou", "device")}
            run["p95_bound_ms"] = round(bound, 3)
            run["p95_under_bound"] = ok
            # Second view of the same bound with the node's own per-frame time during this run
            # (same CPU contention as the latency it is compared with); informative, not the check.
            node_total = report["node_mean_ms"].get("total")
            run["p95_under_2x_node_mean_total"] = (None if node_total is None or p95 is None
                                                   else bool(p95 < 2.0 * node_total))
            runs.append(run)
            results["checks"].append(f"{role} x{rate:g}: p95 {p95} ms {'<' if ok else '>='} 2 x single frame "
                                     f"({bound:.1f} ms): {'ok' if ok else 'FAILED'}")
            print(f"[{role}] x{rate:g} ({report['input_hz']} Hz): answered {report['answered']}/{report['published']}"
                  f", drop rate {report['drop_rate']:.2f}, latency p50 {report['latency_ms']['p50']} "
                  f"p95 {p95} max {report['latency_ms']['max']} ms -> {'ok' if ok else 'FAILED'}", flush=True)
        results["models"][role] = {"checkpoint": str(checkpoint), "source": source, "single_frame_ms": single,
                                   "runs": runs}
    results["all_checks_ok"] = all_ok
    results["note"] = ("miou is over answered frames against the bag's synthetic labels; with random-weight "
                       "checkpoints it only shows that scoring runs. Figures depend on what else the CPU runs.")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    if tmp is not None:
        tmp.cleanup()
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
