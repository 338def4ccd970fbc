"""The node's per-scan compute on a robot whose CPU is not idle.

A robot's CPU is never idle: here one of the two cores is kept busy by another process (a pure
Python busy loop) while a fresh process runs what the node runs per scan (the Segmenter end to end:
point rule, voxelizer, forward, postprocess) on the real 123 389-point scan, for the thread settings a
user would try (torch threads 1 and 2, with OpenMP's default spinning wait policy and with
OMP_WAIT_POLICY=PASSIVE). Each setting is measured idle and with the busy core; the figure of merit
is loaded / idle latency (the goal: within 2x at the node's default).

    python bench/loaded_cpu.py --checkpoint models/semantickitti_student_pvd.pt --scan SCAN --repeat 7
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKER = """
import sys, time, json, numpy as np, torch
torch.set_num_threads(int(sys.argv[3]))
from pvd_core.segmenter import Segmenter
from pvd_core.data.semantickitti import read_points
seg = Segmenter.from_checkpoint(sys.argv[1], device="cpu")
pts = read_points(sys.argv[2])
for _ in range(2):
    seg.segment(pts)
times = []
for _ in range(int(sys.argv[4])):
    t0 = time.perf_counter(); seg.segment(pts); times.append(1e3 * (time.perf_counter() - t0))
print(json.dumps(times))
"""


def measure(checkpoint: Path, scan: Path, threads: int, passive: bool, repeat: int) -> list[float]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("OMP_NUM_THREADS", None)
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    out = subprocess.run([sys.executable, "-c", WORKER, str(checkpoint), str(scan), str(threads), str(repeat)],
                         env=env, capture_output=True, text=True, check=True, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, default=REPO / "models" / "semantickitti_student_pvd.pt")
    p.add_argument("--scan", type=Path, required=True, help="SemanticKITTI .bin scan (08/000000)")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "loaded_cpu.json")
    args = p.parse_args()
    rows = []
    for threads, passive in ((2, False), (2, True), (1, False), (1, True)):
        row = {"threads": threads, "omp_wait_policy": "PASSIVE" if passive else "default (spin)"}
        for load in ("idle", "one_core_busy"):
            burner = None
            if load == "one_core_busy":
                burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                time.sleep(1.0)
            try:
                times = measure(args.checkpoint, args.scan, threads, passive, args.repeat)
            finally:
                if burner is not None:
                    burner.kill()
                    burner.wait()
            row[f"{load}_ms"] = round(statistics.median(times), 1)
        row["slowdown"] = round(row["one_core_busy_ms"] / row["idle_ms"], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"rows": rows, "checkpoint": str(args.checkpoint), "cores": os.cpu_count(),
              "command": "python bench/loaded_cpu.py " + " ".join(sys.argv[1:])}
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
