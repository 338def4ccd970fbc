"""Teacher / student / 0.25x cost on the real SemanticKITTI scan at the paper's grid, in one run.

Goals (the paper's claim, docs/method.md section 7: about 75 % fewer MACs and 2x speed for the 0.5x student):
student MACs <= 0.27 x teacher, student parameters <= 0.27 x teacher,
student forward latency <= 0.5 x teacher on the same machine in the same run.

Usage (from the repository root; the result records the exact command):
    python bench/model_cost.py [--scan PATH] [--repeat 5] [--device auto] [--out bench/results/model_cost.json]
Latency is only meaningful on a quiet machine: the JSON records the load average before
and after the run so a noisy measurement can be recognised.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pvd_core.config import load_config  # noqa: E402
from pvd_core.data.semantickitti import read_points  # noqa: E402
from pvd_core.device import DEVICE_SYNTAX, device_argument, resolve_device  # noqa: E402
from pvd_core.profiling import build_for_profile, format_report, profile_model  # noqa: E402

DEFAULT_SCAN = REPO.parent / "shared" / "data" / "semantickitti" / "sequences" / "08" / "velodyne" / "000000.bin"
CONFIGS = REPO / "config"
# name -> (config file, init_size override, model field overrides). The student is the shipped
# config (UNet at init_size 16, point MLPs halved); `student_full_point_mlps` keeps upstream's
# full-width point MLPs to show what they cost; `quarter` is the 0.25x width of the student.
VARIANTS = {
    "teacher": ("cylinder3d_teacher.yaml", 32, {}),
    "student": ("cylinder3d_student.yaml", 16, {}),
    "quarter": ("cylinder3d_student.yaml", 8, {"point_generator_dims": [16, 32, 64, 64],
                                               "point_head_dims": [64, 64, 64]}),
    "student_full_point_mlps": ("cylinder3d_teacher.yaml", 16, {}),
}
GOALS = {"student_macs_ratio": 0.27, "student_params_ratio": 0.27, "student_latency_ratio": 0.5}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", default=str(DEFAULT_SCAN), help="SemanticKITTI .bin scan")
    parser.add_argument("--repeat", type=int, default=5, help="timed forward passes per width")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forward passes per width")
    parser.add_argument("--device", default="auto", type=device_argument, help=f"{DEVICE_SYNTAX} (default auto)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "model_cost.json"))
    args = parser.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    points = read_points(args.scan)
    load_before = os.getloadavg()
    results: dict[str, dict] = {}
    for name, (config_name, width, overrides) in VARIANTS.items():
        base = load_config(CONFIGS / config_name)
        base.model.init_size = width
        for key, value in overrides.items():
            setattr(base.model, key, value)
        model = build_for_profile(base, None, device)
        results[name] = profile_model(model, base, points, repeat=args.repeat, warmup=args.warmup)
        print(f"== {name}\n{format_report(results[name])}", flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    load_after = os.getloadavg()

    t, s = results["teacher"], results["student"]
    ratios = {
        "student_macs_ratio": s["macs"] / t["macs"],
        "student_sparse_conv_macs_ratio": s["macs_sparse_conv"] / t["macs_sparse_conv"],
        "student_params_ratio": s["params"] / t["params"],
        "student_latency_ratio": (s["latency_ms"]["median"] / t["latency_ms"]["median"]
                                  if args.repeat > 0 else None),
        "quarter_macs_ratio": results["quarter"]["macs"] / t["macs"],
        "quarter_params_ratio": results["quarter"]["params"] / t["params"],
        "student_full_point_mlps_macs_ratio": results["student_full_point_mlps"]["macs"] / t["macs"],
    }
    goals_met = {k: (ratios[k] is not None and ratios[k] <= v) for k, v in GOALS.items()}
    script = Path(sys.argv[0]).resolve()
    rel = script.relative_to(REPO) if script.is_relative_to(REPO) else script
    record = {
        "command": shlex.join(["python", str(rel), *(argv if argv is not None else sys.argv[1:])]),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "scan": str(args.scan),
        "device": str(device),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "host": platform.node(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        **results,
        "ratios": ratios,
        "goals": GOALS,
        "goals_met": goals_met,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({"ratios": ratios, "goals_met": goals_met}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
