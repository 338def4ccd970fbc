"""Speed/accuracy table of the real-data models: SemanticKITTI sequence 08, every point, this CPU.

For each model: sequence-08 mIoU and per-class IoU (over the classes present in the ground
truth, through the Segmenter like ``pvd eval``), parameters, MACs on the real scan
``08/000000`` (123 389 points) and the Segmenter's end-to-end latency on that full scan
(voxelize, forward, postprocess; median of ``--repeat`` runs after a warm-up, ``--threads``
torch threads). PVD pairs (baseline and PVD student trained with the same seed) are scored
the same way and summarised by their mean paired gain.

Each model's figures are cached in ``<out>_runs/<name>.json`` with the checkpoint's size and
modification time, so a table can be extended across sessions (a changed checkpoint is scored
again). The checkpoints are the runs' ``last.pt`` (not ``best.pt``: best.pt is chosen by the
same sequence-08 validation this table reports, which would flatter it).

Command that made bench/results/kitti_real.{json,md} (run directories from the commands in
models/README.md, on a quiet 2-core machine; SEMANTICKITTI is the 60-scan sample described in
docs/data.md, or any SemanticKITTI root):

    python bench/kitti_real.py --data-root SEMANTICKITTI --threads 2 --repeat 7 \
        --model teacher=runs/kitti_teacher/last.pt \
        --model student_baseline=runs/kitti_base_s0/last.pt \
        --model student_pvd=runs/kitti_pvd_s0/last.pt \
        --model student_pretrained=runs/kitti_ft_s0/last.pt \
        --model student_pretrained_500=runs/kitti_base_ft_long/last.pt \
        --model student_pretrained_pvd_500=models/semantickitti_student_pvd.pt \
        --model student_small=runs/kitti_small_s0/last.pt \
        --pair 0=runs/kitti_base_s0/last.pt,runs/kitti_pvd_s0/last.pt \
        --pair 1=runs/kitti_base_s1/last.pt,runs/kitti_pvd_s1/last.pt \
        --pair 2=runs/kitti_base_s2/last.pt,runs/kitti_pvd_s2/last.pt \
        --pretrain-pair 0=runs/kitti_base_s0/last.pt,runs/kitti_ft_s0/last.pt \
        --pretrain-pair 1=runs/kitti_base_s1/last.pt,runs/kitti_ft_s1/last.pt \
        --pretrain-pair 2=runs/kitti_base_s2/last.pt,runs/kitti_ft_s2/last.pt \
        --default student_pretrained_pvd_500 --out bench/results/kitti_real

(how each run directory was made: models/README.md)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pvd_core.checkpoint import load_checkpoint  # noqa: E402
from pvd_core.data.semantickitti import read_points  # noqa: E402
from pvd_core.evaluation import evaluate_files, split_subset  # noqa: E402
from pvd_core.paired_stats import paired_t  # noqa: E402
from pvd_core.profiling import count_macs, count_params, scan_batch  # noqa: E402
from pvd_core.segmenter import Segmenter  # noqa: E402

LATENCY_SCAN = Path("sequences/08/velodyne/000000.bin")


def named_path(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=CHECKPOINT, got {text!r}")
    return name, Path(path)


def pair_arg(text: str) -> tuple[int, Path, Path]:
    seed, sep, rest = text.partition("=")
    base, comma, pvd = rest.partition(",")
    if not sep or not comma or not seed.isdigit():
        raise argparse.ArgumentTypeError(f"expected SEED=BASELINE.pt,PVD.pt, got {text!r}")
    return int(seed), Path(base), Path(pvd)


def score(path: Path, data_root: Path) -> dict[str, Any]:
    """Sequence-08 mIoU and per-class IoU of one checkpoint, every point, no TTA."""
    seg = Segmenter.from_checkpoint(path, device="cpu")
    cfg = seg.config
    cfg.dataset.data_root = str(data_root)
    cfg.dataset.val_sequences = ["08"]
    report = evaluate_files(seg, split_subset(cfg, "val"), cfg.dataset.kind, seg.label_map, progress=False,
                            desc="eval 08")
    d = report.to_dict()
    return {"miou": d["miou"], "per_class": d["iou"], "classes": d["classes"], "points": d["points"],
            "scans": report.scans,
            "eval_command": f"pvd eval --checkpoint {path} --data-root {data_root} --sequences 08"}


def cost(path: Path, data_root: Path, repeat: int) -> dict[str, Any]:
    """Parameters, MACs and the Segmenter's end-to-end latency on the full real scan."""
    seg = Segmenter.from_checkpoint(path, device="cpu")
    points = read_points(data_root / LATENCY_SCAN)
    batch = scan_batch(seg.config, points)
    with torch.inference_mode():
        macs = count_macs(seg.model, lambda: seg.model(batch))
    for _ in range(2):
        seg.segment(points)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        seg.segment(points)
        times.append(1e3 * (time.perf_counter() - t0))
    return {"params": count_params(seg.model), "macs": int(macs.total),
            "latency_ms": round(statistics.median(times), 1),
            "latency_ms_min": round(min(times), 1), "latency_runs": repeat, "points": int(len(points)),
            "torch_threads": torch.get_num_threads(),
            "init_size": seg.config.model.init_size, "grid": list(seg.config.grid.size)}


def cached(cache_dir: Path, name: str, path: Path, compute) -> dict[str, Any]:
    """``compute()`` unless ``cache_dir/name.json`` was made from this very checkpoint file."""
    stat = path.stat()
    key = {"checkpoint": str(path), "size": stat.st_size, "mtime": stat.st_mtime}
    file = cache_dir / f"{name}.json"
    if file.is_file():
        data = json.loads(file.read_text())
        if data.get("key") == key:
            return data["value"]
    value = compute()
    cache_dir.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps({"key": key, "value": value}, indent=2) + "\n")
    return value


def meta_of(path: Path) -> dict[str, Any]:
    meta = load_checkpoint(path).meta
    return {k: meta.get(k) for k in ("trained_with", "step", "wall_s", "licence") if k in meta}


def score_pairs(cache: Path, prefix: str, pairs: list[tuple[int, Path, Path]], arms: tuple[str, str],
                data_root: Path) -> list[dict[str, Any]]:
    """Sequence-08 mIoU of both arms of each (seed, first, second) pair, as {seed, arm0, arm1, ...}."""
    rows = []
    for seed, *paths in pairs:
        row: dict[str, Any] = {"seed": seed}
        for arm, path in zip(arms, paths):
            row[arm] = cached(cache, f"{prefix}{seed}_{arm}_score", path, lambda: score(path, data_root))["miou"]
            row[f"{arm}_checkpoint"] = str(path)
        print(f"{prefix} {seed}: " + ", ".join(f"{arm} {row[arm]:.2f}" for arm in arms), flush=True)
        rows.append(row)
    return rows


def pair_summary(pairs: list[dict[str, Any]], a: str, b: str) -> dict[str, Any]:
    """Paired-t summary of ``b - a`` over the pairs (same seed = same init, data order, augmentation)."""
    t = paired_t([p[a] for p in pairs], [p[b] for p in pairs])
    return {"pairs": t.n, "gain_mean": t.mean, "gain_sd": t.stdev, "gain_ci95": list(t.ci95), "p_value": t.p_value}


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Real SemanticKITTI: speed and accuracy on this 2-core CPU", "",
             f"Sequence 08 (10 scans, every point), mIoU over the classes present in its ground truth "
             f"({len(result['classes'])}: {', '.join(result['classes'])}). Latency: Segmenter end to end on "
             f"08/000000 (123 389 points), median of {result['repeat']} runs, {result['threads']} threads.", "",
             "| model | init_size | grid | mIoU | params | GMACs | latency (ms) |", "|---|---|---|---|---|---|---|"]
    for name, m in result["models"].items():
        star = " (default)" if name == result["default_model"] else ""
        lines.append(f"| {name}{star} | {m['init_size']} | {'x'.join(map(str, m['grid']))} | {m['miou']:.2f} | "
                     f"{m['params'] / 1e6:.2f} M | {m['macs'] / 1e9:.2f} | {m['latency_ms']:.0f} |")
    lines += ["", "Per class (IoU %):", "", "| class | " + " | ".join(result["models"]) + " |",
              "|---|" + "---|" * len(result["models"])]
    for cls in result["classes"]:
        row = [f"{m['per_class'][cls]:.1f}" for m in result["models"].values()]
        lines.append(f"| {cls} | " + " | ".join(row) + " |")
    if result["pvd_pairs"]:
        s = result["pvd_summary"]
        lines += ["", "PVD pairs (same seed = same init, data order, augmentation and point sampling):", "",
                  "| seed | baseline | PVD | gain |", "|---|---|---|---|"]
        lines += [f"| {p['seed']} | {p['baseline']:.2f} | {p['pvd']:.2f} | {p['pvd'] - p['baseline']:+.2f} |"
                  for p in result["pvd_pairs"]]
        if s["pairs"] > 1:
            lines += ["", f"Mean gain {s['gain_mean']:+.2f} mIoU, paired-t 95 % CI [{s['gain_ci95'][0]:+.2f}, "
                          f"{s['gain_ci95'][1]:+.2f}], p = {s['p_value']:.3f} over {s['pairs']} pairs."]
    if result["pretrain_pairs"]:
        s = result["pretrain_summary"]
        lines += ["", "Synthetic pre-training (same student and seed, from scratch vs fine-tuned from "
                      "`config/kitti_cpu_synthetic_pretrain.yaml`):", "",
                  "| seed | scratch | pre-trained | gain |", "|---|---|---|---|"]
        lines += [f"| {p['seed']} | {p['scratch']:.2f} | {p['pretrained']:.2f} | "
                  f"{p['pretrained'] - p['scratch']:+.2f} |" for p in result["pretrain_pairs"]]
        if s["pairs"] > 1:
            lines += ["", f"Mean gain {s['gain_mean']:+.2f} mIoU, paired-t 95 % CI [{s['gain_ci95'][0]:+.2f}, "
                          f"{s['gain_ci95'][1]:+.2f}], p = {s['p_value']:.3f} over {s['pairs']} pairs."]
    lines += ["", "Command:", "", "    " + result["command"], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, required=True, help="SemanticKITTI root holding sequence 08")
    parser.add_argument("--model", type=named_path, action="append", default=[], metavar="NAME=CKPT")
    parser.add_argument("--pair", type=pair_arg, action="append", default=[], metavar="SEED=BASE.pt,PVD.pt")
    parser.add_argument("--pretrain-pair", type=pair_arg, action="append", default=[],
                        metavar="SEED=SCRATCH.pt,PRETRAINED.pt",
                        help="the same student from scratch and fine-tuned from synthetic pre-training")
    parser.add_argument("--default", required=True, help="the NAME of the shipped default model")
    parser.add_argument("--repeat", type=int, default=7, help="latency runs per model (median; >= 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the CPU has 2 cores)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "kitti_real",
                        help="writes OUT.json and OUT.md; per-model cache in OUT_runs/")
    args = parser.parse_args(argv)
    if args.repeat < 5:
        parser.error("--repeat must be at least 5")
    names = [n for n, _ in args.model]
    if args.default not in names:
        parser.error(f"--default {args.default!r} is not one of the --model names {names}")
    torch.set_num_threads(args.threads)
    cache = args.out.parent / f"{args.out.name}_runs"
    models: dict[str, Any] = {}
    for name, path in args.model:
        acc = cached(cache, f"{name}_score", path, lambda: score(path, args.data_root))
        speed = cached(cache, f"{name}_cost_t{args.threads}", path, lambda: cost(path, args.data_root, args.repeat))
        models[name] = {**acc, **speed, "checkpoint": str(path), "meta": meta_of(path)}
        print(f"{name}: mIoU {acc['miou']:.2f}, {speed['macs'] / 1e9:.2f} GMACs, {speed['latency_ms']:.0f} ms",
              flush=True)
    pairs = score_pairs(cache, "pair", args.pair, ("baseline", "pvd"), args.data_root)
    pretrain = score_pairs(cache, "pretrain", args.pretrain_pair, ("scratch", "pretrained"), args.data_root)
    classes = next(iter(models.values()))["classes"]
    result = {
        "models": models, "pvd_pairs": pairs,
        "pvd_summary": pair_summary(pairs, "baseline", "pvd") if pairs else None,
        "pretrain_pairs": pretrain,
        "pretrain_summary": pair_summary(pretrain, "scratch", "pretrained") if pretrain else None,
        "default_model": args.default, "classes": classes, "repeat": args.repeat, "threads": args.threads,
        "data": "SemanticKITTI sequence 08 frames 000000-000009 (the sample of docs/data.md; CC BY-NC-SA)",
        "command": "python bench/kitti_real.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
