"""`pvd_demo`: the main job, end to end on a machine with no data and no GPU.

1. `pvd synth` writes a validation street the shipped model never saw (its own town seed);
2. `pvd_bag from-kitti` turns it into a rosbag2 whose clouds carry their ground truth;
3. `pvd_bag replay` plays the bag at the sensor's rate into the real `segment_node` (a child
   process over DDS, as on a robot), scores the answers and records the labelled output;
4. `pvd_bag eval` scores every frame offline and draws the confusion matrix and a bird's-eye
   view of prediction beside ground truth.
It ends with one report: live mIoU, dropped frames, latency, and where the pictures are.

The shipped model knows synthetic streets only (models/README.md says how it was trained and
how to train on real data), so the demo's data comes from the same generator and sensor.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "models" / "synthetic_student_pvd.pt"
# The sensor and columns the shipped model was trained on (bench/distill_gain.py settings).
DEMO_SENSOR = "vlp16"
DEMO_COLUMNS = 600
DEMO_SEED = 7  # a town neither the training (seed 1) nor the benchmark validation (seed 2) used


def _find_model(path: Optional[Path]) -> Path:
    if path is not None:
        return path
    if DEFAULT_MODEL.is_file():
        return DEFAULT_MODEL
    installed = Path(sys.prefix) / "share" / "pvd_ros" / "models" / DEFAULT_MODEL.name
    if installed.is_file():
        return installed
    raise FileNotFoundError(f"shipped model not found at {DEFAULT_MODEL} (pass --checkpoint)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pvd_demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="work folder (default ./demo_output)")
    p.add_argument("--checkpoint", type=Path, default=None, help="model to run (default: the shipped student)")
    p.add_argument("--scans", type=int, default=40, help="scans in the synthetic street (default 40, 4 s at 10 Hz)")
    p.add_argument("--rate", type=float, default=1.0, help="replay speed factor (default 1.0 = the sensor's 10 Hz)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from pvd_core.synth.sensors import sensor_for
    from pvd_core.synth.writer import write_sequence
    from pvd_ros.bag_eval import evaluate_bag
    from pvd_ros.bag_io import kitti_to_bag
    from pvd_ros.bag_replay import replay_bag

    start = time.perf_counter()
    model = _find_model(args.checkpoint)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"[1/4] synthetic street: {args.scans} {DEMO_SENSOR} scans (town seed {DEMO_SEED}) -> {out / 'data'}")
    write_sequence(out / "data", "00", args.scans, sensor_for(DEMO_SENSOR, DEMO_COLUMNS), DEMO_SEED, overwrite=True)
    bag = out / "street_bag"
    labelled_bag = out / "labelled_bag"
    for old in (bag, labelled_bag):  # rosbags refuses to overwrite; the demo always starts afresh
        if old.exists():
            for f in sorted(old.rglob("*"), reverse=True):
                f.unlink() if f.is_file() else f.rmdir()
            old.rmdir()
    print(f"[2/4] rosbag2 with ground truth -> {bag}")
    kitti_to_bag(out / "data", "00", bag, storage="mcap", rate_hz=10.0)
    print(f"[3/4] live replay at x{args.rate:g} through segment_node ({model.name}) -> recording {labelled_bag}")
    replay = replay_bag(bag, model, rate=args.rate, record=labelled_bag, node="process", device=args.device)
    (out / "replay.json").write_text(json.dumps({k: v for k, v in replay.items() if k != "table"}, indent=2) + "\n")
    print(f"[4/4] offline evaluation and pictures -> {out}")
    offline = evaluate_bag(bag, model, device=args.device, plot_dir=out)
    (out / "eval.json").write_text(json.dumps({k: v for k, v in offline.items() if k != "table"}, indent=2) + "\n")

    lat = replay["latency_ms"]
    print("\n" + "=" * 72)
    print(f"pvd_ros demo report ({time.perf_counter() - start:.0f} s, model {model}, device {replay['device']})")
    print("=" * 72)
    if replay.get("table"):
        print(replay["table"])
    live = f"{replay['miou']:.1f} %" if replay.get("miou") is not None else "n/a"
    print(f"live replay at {replay['input_hz']} Hz: {replay['answered']} of {replay['frames']} frames answered, "
          f"{replay['dropped']} dropped ({100 * replay['drop_rate']:.0f} %: the node keeps only the newest scan)")
    print(f"latency (answer received - scan published): p50 {lat['p50']} ms, p95 {lat['p95']} ms, max {lat['max']} ms")
    offline_miou = f"{offline['miou']:.1f} %" if offline.get("miou") is not None else "n/a"
    print(f"mIoU over answered frames: {live}; offline over all {offline['frames']} frames: {offline_miou}")
    for name, path in offline.get("plots", {}).items():
        print(f"picture ({name}): {path}")
    print(f"reports: {out / 'replay.json'}, {out / 'eval.json'}; labelled bag: {labelled_bag}")
    print("This model knows synthetic streets only; README.md shows how to train on SemanticKITTI.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
