"""One-call check of the CUDA paths on a GPU machine (run by bench/gpu_check.sh).

On the real scan (SemanticKITTI 08/000000, 123 389 points): the Segmenter end to end with each
given checkpoint (or the kitti_cpu teacher/student configs at random weights, and the committed
synthetic teacher, whose BN statistics float16 cannot hold) in fp32 and fp16,
median latency and fp16-vs-fp32 label agreement; then a few training steps of the student
config on the GPU. Prints one JSON document; exits non-zero when CUDA is missing or a check
fails, so a CI job or a person sees at once whether the GPU student works.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def time_segment(seg, points: np.ndarray, repeat: int) -> tuple[float, np.ndarray]:
    for _ in range(2):
        result = seg.segment(points)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = seg.segment(points)
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times), result.labels


def segmenter_for(spec: str, fp16: bool):
    from pvd_core.config import load_config
    from pvd_core.labels import label_map_for
    from pvd_core.models.cylinder3d import build_model
    from pvd_core.segmenter import Segmenter

    if spec.endswith(".pt"):
        return Segmenter.from_checkpoint(spec, device="cuda", fp16=fp16)
    cfg = load_config(spec)
    torch.manual_seed(0)
    return Segmenter(build_model(cfg), cfg, label_map_for(cfg.dataset.kind), device="cuda", fp16=fp16)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scan", type=Path, required=True,
                   help="SemanticKITTI .bin scan (e.g. sequences/08/velodyne/000000.bin)")
    p.add_argument("--data-root", type=Path, required=True, help="SemanticKITTI root for the training steps")
    p.add_argument("--models", nargs="+", default=[str(REPO / "config" / "kitti_cpu_teacher.yaml"),
                                                     str(REPO / "config" / "kitti_cpu_student.yaml"),
                                                     str(REPO / "models" / "bench" / "synthetic_teacher4000.pt")],
                   help="checkpoints (.pt) or configs (.yaml, random weights) to run; the default synthetic "
                        "teacher's BN running variances (up to 1e7) are beyond float16's range, which fp16 "
                        "inference must survive")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--train-steps", type=int, default=5)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"ok": False, "error": f"no CUDA device (torch {torch.__version__}, CUDA build "
                                               f"{torch.version.cuda})"}))
        return 2
    from pvd_core.data.semantickitti import read_points
    from pvd_core.training.trainer import TrainOptions, train
    from pvd_core.config import load_config

    points = read_points(args.scan)
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
              "models": {}, "ok": True}
    for spec in args.models:
        fp32_ms, fp32_labels = time_segment(segmenter_for(spec, False), points, args.repeat)
        fp16_ms, fp16_labels = time_segment(segmenter_for(spec, True), points, args.repeat)
        agree = float((fp32_labels == fp16_labels).mean())
        report["models"][Path(spec).name] = {"fp32_ms": round(fp32_ms, 1), "fp16_ms": round(fp16_ms, 1),
                                             "fp16_label_agreement": round(agree, 4)}
        report["ok"] &= agree > 0.95
    cfg = load_config(REPO / "config" / "kitti_cpu_student.yaml", data_root=str(args.data_root))
    cfg.train.max_steps = args.train_steps
    cfg.train.val_every = args.train_steps
    cfg.train.max_val_scans = 1
    cfg.train.device = "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = train(TrainOptions(config=cfg, out_dir=Path(tmp) / "run", progress=False))
        report["train"] = {"steps": result.step, "seconds": round(time.perf_counter() - t0, 1),
                           "val_miou_after": result.last_val_miou}
    report["ok"] &= result.step == args.train_steps
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
