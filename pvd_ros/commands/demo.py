"""`pvd_demo`: the main job, end to end on a machine with no data and no GPU.

1. The scans: a synthetic 64-beam street the shipped model never saw (``pvd synth``, its own town
   seed), or, with ``--semantickitti DIR``, real SemanticKITTI scans (sequence 08 by default);
2. `pvd_bag from-kitti` turns them into a rosbag2 whose clouds carry their ground truth;
3. `pvd_bag replay` plays the bag at the sensor's rate into the real `segment_node` (a child
   process over DDS, as on a robot), scores the answers and records the labelled output;
4. `pvd_bag eval` scores every frame offline and draws the confusion matrix and a bird's-eye
   view of prediction beside ground truth.
It ends with one report: the model and data used, live mIoU, dropped frames, latency, offline
mIoU, and where the pictures are.

The default model is the shipped SemanticKITTI student (real HDL-64 street scenes; non-commercial
terms, see models/README.md); ``--checkpoint models/synthetic_student_pvd.pt --sensor vlp16
--columns 600`` runs the unencumbered synthetic model on the data it was trained for.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from pvd_core.device import DEVICE_SYNTAX, device_argument

DEMO_SEED = 7  # a town that no shipped model's training or benchmark validation used


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="work folder (default ./demo_output)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="model to run (default: the shipped SemanticKITTI student)")
    p.add_argument("--semantickitti", type=Path, metavar="DIR", default=None,
                   help="replay real SemanticKITTI scans from this root instead of a synthetic street")
    p.add_argument("--sequence", default="08", help="with --semantickitti: the sequence to replay (default 08)")
    p.add_argument("--scans", type=int, default=30,
                   help="scans to replay (default 30, 3 s at 10 Hz; with --semantickitti at most those present)")
    p.add_argument("--sensor", default="hdl64", choices=("hdl64", "hdl32", "vlp16"),
                   help="sensor of the synthetic street (default hdl64, the shipped model's sensor)")
    p.add_argument("--columns", type=int, default=None, help="azimuth columns of the synthetic sensor")
    p.add_argument("--rate", type=float, default=1.0, help="replay speed factor (default 1.0 = the sensor's 10 Hz)")
    p.add_argument("--device", default="auto", type=device_argument, help=f"{DEVICE_SYNTAX} (default auto)")


def _fresh(*paths: Path) -> None:
    """rosbags refuses to overwrite a bag: the demo always starts afresh."""
    for path in paths:
        if path.exists():
            shutil.rmtree(path)


def run(args: argparse.Namespace) -> int:
    from pvd_core.checkpoint import load_checkpoint
    from pvd_core.shipped_models import shipped_model, model_card
    from pvd_core.synth.sensors import sensor_for
    from pvd_core.synth.writer import write_sequence
    from pvd_ros.bag_eval import evaluate_bag
    from pvd_ros.bag_io import kitti_to_bag
    from pvd_ros.bag_replay import replay_bag

    start = time.perf_counter()
    model = args.checkpoint if args.checkpoint is not None else shipped_model()
    card = model_card(load_checkpoint(model).meta)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    bag, labelled_bag = out / "street_bag", out / "labelled_bag"
    _fresh(bag, labelled_bag)
    if args.semantickitti is not None:
        data_text = f"real SemanticKITTI scans, sequence {args.sequence} of {args.semantickitti}"
        print(f"[1/4] {data_text}")
        print(f"[2/4] rosbag2 with ground truth -> {bag}")
        kitti_to_bag(args.semantickitti, args.sequence, bag, storage="mcap", rate_hz=10.0, max_scans=args.scans)
    else:
        data_text = f"synthetic {args.sensor} street, {args.scans} scans (town seed {DEMO_SEED}, unseen in training)"
        print(f"[1/4] {data_text} -> {out / 'data'}")
        write_sequence(out / "data", "00", args.scans, sensor_for(args.sensor, args.columns), DEMO_SEED,
                       overwrite=True)
        print(f"[2/4] rosbag2 with ground truth -> {bag}")
        kitti_to_bag(out / "data", "00", bag, storage="mcap", rate_hz=10.0)
    print(f"[3/4] live replay at x{args.rate:g} through segment_node ({model.name}) -> recording {labelled_bag}")
    replay = replay_bag(bag, model, rate=args.rate, record=labelled_bag, node="process", device=args.device)
    (out / "replay.json").write_text(json.dumps({k: v for k, v in replay.items() if k != "table"}, indent=2) + "\n")
    print(f"[4/4] offline evaluation and pictures -> {out}")
    offline = evaluate_bag(bag, model, device=args.device, plot_dir=out)
    (out / "eval.json").write_text(json.dumps({k: v for k, v in offline.items() if k != "table"}, indent=2) + "\n")
    print_report(replay, offline, model, card, data_text, time.perf_counter() - start, out, labelled_bag)
    return 0


def print_report(replay: dict, offline: dict, model: Path, card: str, data_text: str, seconds: float,
                 out: Path, labelled_bag: Path) -> None:
    lat = replay["latency_ms"]
    print("\n" + "=" * 72)
    print(f"pvd_ros demo report ({seconds:.0f} s, device {replay['device']})")
    print(f"model: {model}\n       {card}")
    print(f"data:  {data_text}")
    print("=" * 72)
    if offline.get("table"):
        print(offline["table"])
    live = f"{replay['miou']:.1f} %" if replay.get("miou") is not None else "n/a"
    print(f"live replay at {replay['input_hz']} Hz: {replay['answered']} of {replay['frames']} frames answered, "
          f"{replay['dropped']} dropped ({100 * replay['drop_rate']:.0f} %: the node keeps only the newest scan)")
    print(f"latency (answer received - scan published): p50 {lat['p50']} ms, p95 {lat['p95']} ms, max {lat['max']} ms")
    offline_miou = f"{offline['miou']:.1f} %" if offline.get("miou") is not None else "n/a"
    print(f"mIoU over the answered frames: {live}; offline over all {offline['frames']} frames: {offline_miou} "
          "(over the classes present in the ground truth; table above)")
    for name, path in offline.get("plots", {}).items():
        print(f"picture ({name}): {path}")
    print(f"reports: {out / 'replay.json'}, {out / 'eval.json'}; labelled bag: {labelled_bag}")

