"""`pvd profile`: parameters, exact sparse MACs, voxels and forward latency of a model on one scan.

The counting and timing live in pvd_core.profiling; this module is the command around them.
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
from pathlib import Path

from pvd_core.config import load_config
from pvd_core.errors import UsageError
from pvd_core.device import DEVICE_SYNTAX, device_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="model config YAML (init_size and grid are read from it)")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint whose weights to time (checked against --config)")
    parser.add_argument("--scan", required=True, help="SemanticKITTI .bin scan to profile on")
    parser.add_argument("--repeat", type=int, default=5, help="timed forward passes after one warm-up (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forward passes first (default 1)")
    parser.add_argument("--device", default="auto", type=device_argument, help=f"{DEVICE_SYNTAX} (default auto)")
    parser.add_argument("--json", default=None, help="also write the result as JSON here")


def run(args: argparse.Namespace) -> int:
    from pvd_core.data.semantickitti import read_points
    from pvd_core.device import resolve_device
    from pvd_core.profiling import build_for_profile, format_report, profile_model

    if args.repeat < 0 or args.warmup < 0:
        raise UsageError(f"--repeat and --warmup must be >= 0, got {args.repeat} and {args.warmup}")
    config = load_config(args.config)
    device = resolve_device(args.device)
    points = read_points(args.scan)
    model = build_for_profile(config, args.checkpoint, device)
    result = profile_model(model, config, points, repeat=args.repeat, warmup=args.warmup)
    command = ["pvd", "profile", "--config", str(args.config), "--scan", str(args.scan),
               "--repeat", str(args.repeat), "--warmup", str(args.warmup), "--device", str(args.device)]
    if args.checkpoint:
        command += ["--checkpoint", str(args.checkpoint)]
    if args.json:
        command += ["--json", str(args.json)]
    result.update({"config": str(args.config), "checkpoint": args.checkpoint, "scan": str(args.scan),
                   "command": shlex.join(command), "host": platform.node()})
    print(format_report(result))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return 0
