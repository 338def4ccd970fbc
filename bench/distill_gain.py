#!/usr/bin/env python3
"""Distillation benchmark: does PVD make the slim student better, and which term helps?

On synthetic data from `pvd synth` (training sequences 00-03, a held-out validation
sequence 08 from a different town seed), with identical steps, seeds and settings for
every student:

1. teacher (config/synthetic_teacher.yaml, init_size 8) trained with L_seg, for
   --teacher-steps (longer than the students: at equal short budgets the wider net is no
   better, and a teacher no better than the student has nothing to distil);
2. student baseline (config/synthetic_student.yaml, init_size 4), L_seg only;
3. student with full PVD (config/synthetic_distill.yaml);
4. ablations: PVD without each of the four terms, and with each of the other samplers.

Every model is evaluated on the validation sequence with `pvd eval` (the Segmenter path)
from its final checkpoint (validation is not used to pick checkpoints, so the held-out
figure is unbiased). Results go to bench/results/distill_gain.json and .md, rewritten
after every finished variant, so an interrupted run leaves its partial results in place.
Resumable: a variant whose result JSON exists in OUT/results is skipped, and a variant
whose run directory holds last.pt continues with --resume.

    python bench/distill_gain.py --out /tmp/distill_gain [--steps 240] [--jobs 2]

Another student seed against the same teacher: copy OUT/runs/teacher and OUT/results/teacher.json
into a new work folder (or reuse OUT's data with a symlink) and add ``--seed N``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
TRAIN_SEQUENCES = ["00", "01", "02", "03"]
VAL_SEQUENCE = "08"

# name -> (base config, overrides of the distill section); None = supervised `pvd train`.
ABLATIONS: dict[str, dict[str, Any]] = {
    "no_out_p": {"alpha_p": 0.0},
    "no_out_v": {"alpha_v": 0.0},
    "no_aff_p": {"beta_p": 0.0},
    "no_aff_v": {"beta_v": 0.0},
    "sampler_random": {"sampler": "random"},
    "sampler_class": {"sampler": "class"},
    "sampler_distance": {"sampler": "distance"},
}

_print_lock = threading.Lock()


def say(msg: str) -> None:
    with _print_lock:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: list[str], log: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with log.open("a") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}), see {log}: {shlex.join(cmd)}")


def make_data(data: Path, scans: int, val_scans: int, columns: int, log: Path) -> dict[str, Any]:
    seqs = [(s, scans, 1) for s in TRAIN_SEQUENCES] + [(VAL_SEQUENCE, val_scans, 2)]
    for seq, n, seed in seqs:
        if (data / "sequences" / seq / "synth.json").is_file():
            continue
        run(["pvd", "synth", "--out", str(data), "--sequence", seq, "--scans", str(n), "--sensor", "vlp16",
             "--columns", str(columns), "--seed", str(seed), "--quiet"], log)
    return {"root": str(data), "train_sequences": TRAIN_SEQUENCES, "train_scans_per_sequence": scans,
            "val_sequence": VAL_SEQUENCE, "val_scans": val_scans, "sensor": "vlp16", "columns": columns,
            "train_seed": 1, "val_seed": 2}


def variant_config(out: Path, name: str, base: Path, distill: Optional[dict[str, Any]],
                   seed: Optional[int] = None) -> Path:
    data = yaml.safe_load(base.read_text())
    if distill:
        data["distill"].update(distill)
    if seed is not None:
        data["train"]["seed"] = seed
    path = out / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def train_variant(out: Path, data: Path, name: str, cfg: Path, steps: int, teacher: Optional[Path]) -> dict:
    """Train (or resume) one variant and evaluate its final checkpoint; cached in OUT/results."""
    result_path = out / "results" / f"{name}.json"
    if result_path.is_file():
        say(f"{name}: cached result {result_path}")
        return json.loads(result_path.read_text())
    run_dir = out / "runs" / name
    log = out / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    done = False
    if (run_dir / "last.pt").is_file():
        import torch

        state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)
        done = int(state["meta"].get("step", 0)) >= steps
    if not done:
        cmd = ["pvd", "distill" if teacher else "train", "--config", str(cfg), "--data-root", str(data),
               "--out", str(run_dir), "--max-steps", str(steps), "--threads", "1", "--no-progress"]
        if teacher:
            cmd[4:4] = ["--teacher", str(teacher)]
        if (run_dir / "last.pt").is_file():
            cmd.append("--resume")
        say(f"{name}: training ({'distill' if teacher else 'train'}, {steps} steps)")
        run(cmd, log)
    eval_json = out / "eval" / f"{name}.json"
    run(["pvd", "eval", "--checkpoint", str(run_dir / "last.pt"), "--data-root", str(data), "--sequences",
         VAL_SEQUENCE, "--json", str(eval_json), "--threads", "1", "--no-progress"], log)
    report = json.loads(eval_json.read_text())
    meta_wall = None
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last_train = [r for r in metrics if r.get("kind") == "train"]
    if last_train:
        meta_wall = last_train[-1].get("elapsed_s")
    result = {"miou": report["miou"], "iou": report["iou"], "points": report["points"],
              "absent_classes": report["absent_classes"], "train_wall_s": meta_wall,
              "final_losses": {k: v for k, v in (last_train[-1] if last_train else {}).items()
                               if k not in ("kind", "epoch", "lr", "scans_per_s", "elapsed_s")},
              "config": str(cfg.relative_to(out)), "session_wall_s": round(time.time() - t0, 1)}
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result, indent=2) + "\n")
    say(f"{name}: mIoU {report['miou']}")
    return result


def summarise(results: dict[str, dict], args, data_info, commands: list[str], started: float,
              variants: list[str]) -> dict[str, Any]:
    """The results document; ``commands`` are every invocation that produced a part of it."""
    doc: dict[str, Any] = {"command": commands[0], "commands": commands, "steps": args.steps, "teacher_steps": args.teacher_steps,
                           "student_seed": 0 if args.seed is None else args.seed,
                           "data": data_info,
                           # summed over variants (they ran --jobs at a time, one torch thread each)
                           "wall_s": round(sum(r.get("session_wall_s") or 0 for r in results.values()), 1),
                           "complete": all(v in results for v in variants)}
    for key in ("teacher", "student_baseline", "student_pvd"):
        if key in results:
            doc[key] = {"miou": results[key]["miou"], "iou": results[key]["iou"]}
    doc["ablations"] = {name: results[name]["miou"] for name in variants
                        if name in results and name not in ("teacher", "student_baseline", "student_pvd")}
    t, b, p = (results.get(k, {}).get("miou") for k in ("teacher", "student_baseline", "student_pvd"))
    if None not in (t, b, p):
        gap = t - b
        doc["goals"] = {
            "gain_over_baseline": round(p - b, 3),
            "gain_goal_1p5": (p - b) >= 1.5,
            "teacher_student_gap": round(gap, 3),
            "gap_closed_fraction": round((p - b) / gap, 3) if gap > 0 else None,
            "gap_goal_half": (gap > 0 and (p - b) / gap >= 0.5),
        }
    doc["variants"] = results
    return doc


def write_markdown(doc: dict[str, Any], path: Path) -> None:
    lines = ["# Distillation benchmark (synthetic data, CPU)", "",
             "Commands: " + "; then ".join(f"`{c}`" for c in doc["commands"]), "",
             f"{doc['steps']} steps per student ({doc['teacher_steps']} for the teacher), batch 2, student seed "
             f"{doc.get('student_seed', 0)} (teacher seed 0); data: `pvd synth` vlp16 "
             f"({doc['data']['columns']} columns), train sequences {', '.join(doc['data']['train_sequences'])} "
             f"({doc['data']['train_scans_per_sequence']} scans each, seed 1), validation sequence "
             f"{doc['data']['val_sequence']} ({doc['data']['val_scans']} scans, seed 2, another town). "
             f"Evaluated with `pvd eval` on the final checkpoint. Summed wall time of all trainings and evaluations {doc['wall_s'] / 60:.1f} min (2 at a time on 2 shared CPU cores)"
             f"{'' if doc['complete'] else ' (INCOMPLETE: some variants missing)'}.", "",
             "| model | mIoU (%) | vs baseline |", "|---|---|---|"]
    base = doc.get("student_baseline", {}).get("miou")
    for name, res in doc["variants"].items():
        m = res["miou"]
        delta = f"{m - base:+.2f}" if (base is not None and m is not None) else ""
        lines.append(f"| {name} | {m:.2f} | {delta} |" if m is not None else f"| {name} | n/a | |")
    if "goals" in doc:
        g = doc["goals"]
        lines += ["", f"PVD gain over the baseline: {g['gain_over_baseline']:+.2f} mIoU (goal >= 1.5: "
                      f"{'met' if g['gain_goal_1p5'] else 'missed'}); teacher-student gap "
                      f"{g['teacher_student_gap']:.2f}, closed fraction {g['gap_closed_fraction']} "
                      f"(goal >= 0.5: {'met' if g['gap_goal_half'] else 'missed'})."]
    names = [n for n in doc["variants"]]
    if names:
        classes = list(doc["variants"][names[0]]["iou"])
        lines += ["", "Per-class IoU (%):", "", "| class | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        for c in classes:
            vals = [doc["variants"][n]["iou"].get(c) for n in names]
            lines.append(f"| {c} | " + " | ".join("absent" if v is None else f"{v:.1f}" for v in vals) + " |")
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/distill_gain"), help="work folder (data, runs, cache)")
    ap.add_argument("--steps", type=int, default=120, help="optimiser steps of every student")
    ap.add_argument("--teacher-steps", type=int, default=360,
                    help="optimiser steps of the teacher (a converged teacher; students share --steps)")
    ap.add_argument("--scans", type=int, default=16, help="scans per training sequence")
    ap.add_argument("--val-scans", type=int, default=8)
    ap.add_argument("--columns", type=int, default=600, help="vlp16 azimuth columns (points per scan)")
    ap.add_argument("--jobs", type=int, default=2, help="trainings run at once (one torch thread each)")
    ap.add_argument("--only", nargs="*", help="restrict to these variant names")
    ap.add_argument("--extra", nargs="*", default=[],
                    help="extra distill variants NAME:key=value[,key=value] (e.g. T2:temperature=2.0)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where distill_gain.json/.md go")
    ap.add_argument("--seed", type=int, default=None,
                    help="train.seed of every student (init, data order, augmentation; default: the configs' 0). "
                         "The teacher keeps its config's seed, so one teacher serves every student seed")
    args = ap.parse_args()
    command = "python " + shlex.join(["bench/distill_gain.py"] + sys.argv[1:])
    started = time.time()
    out = args.out.resolve()
    data = out / "data"
    (out / "logs").mkdir(parents=True, exist_ok=True)
    data_info = make_data(data, args.scans, args.val_scans, args.columns, out / "logs" / "synth.log")

    cfg_dir = REPO / "config"
    variants: dict[str, tuple[Path, Optional[dict], bool]] = {
        "teacher": (cfg_dir / "synthetic_teacher.yaml", None, False),
        "student_baseline": (cfg_dir / "synthetic_student.yaml", None, False),
        "student_pvd": (cfg_dir / "synthetic_distill.yaml", {}, True),
    }
    for name, over in ABLATIONS.items():
        variants[name] = (cfg_dir / "synthetic_distill.yaml", over, True)
    for spec in args.extra:
        name, _, body = spec.partition(":")
        over: dict[str, Any] = {}
        for item in filter(None, body.split(",")):
            key, _, value = item.partition("=")
            over[key] = yaml.safe_load(value)
        variants[name] = (cfg_dir / "synthetic_distill.yaml", over, True)
    names = list(variants)
    to_run = [n for n in names if not args.only or n in args.only or n == "teacher"]

    results: dict[str, dict] = {}
    for name in names:  # variants not run now still appear with their cached results
        cached = out / "results" / f"{name}.json"
        if name not in to_run and cached.is_file():
            results[name] = json.loads(cached.read_text())
    names = [n for n in names if n in to_run or n in results]
    previous = args.results / "distill_gain.json"
    commands = [command]
    if previous.is_file():
        old = json.loads(previous.read_text())
        commands = [c for c in old.get("commands", [old.get("command")]) if c and c != command] + [command]
    lock = threading.Lock()

    def record(name: str, res: dict) -> None:
        with lock:
            results[name] = res
            ordered = {n: results[n] for n in names if n in results}
            doc = summarise(ordered, args, data_info, commands, started, names)
            args.results.mkdir(parents=True, exist_ok=True)
            tmp = args.results / "distill_gain.json.tmp"
            tmp.write_text(json.dumps(doc, indent=2) + "\n")
            tmp.replace(args.results / "distill_gain.json")
            write_markdown(doc, args.results / "distill_gain.md")

    def job(name: str, teacher_future=None) -> None:
        base, over, distill = variants[name]
        cfg = variant_config(out, name, base, over if distill else None, None if name == "teacher" else args.seed)
        teacher = None
        if distill:
            teacher_future.result()
            teacher = out / "runs" / "teacher" / "last.pt"
        steps = args.teacher_steps if name == "teacher" else args.steps
        record(name, train_variant(out, data, name, cfg, steps, teacher))

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        teacher_future = pool.submit(job, "teacher")
        futures = [pool.submit(job, n, teacher_future) for n in to_run if n != "teacher" and not variants[n][2]]
        futures += [pool.submit(job, n, teacher_future) for n in to_run if variants[n][2]]
        errors = []
        for f in [teacher_future] + futures:
            try:
                f.result()
            except Exception as exc:  # keep the other variants going; report at the end
                errors.append(str(exc))
                say(f"ERROR: {exc}")
    say(f"done in {(time.time() - started) / 60:.1f} min; results in {args.results / 'distill_gain.json'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
