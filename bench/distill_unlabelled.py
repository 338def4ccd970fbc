#!/usr/bin/env python3
"""What unlabelled scans buy PVD: paired seeds, labelled-only PVD vs the same plus unlabelled scans.

Synthetic part (``--gain-out``, the work folder of bench/distill_gain.py, whose data and PVD runs it
reuses, with its teacher or ``--teacher``; ``--gain-pairs``, its pair files, whose scores of those PVD runs
and baselines it reads, after checking they were scored against the same teacher):

- labelled arm: distill_gain's PVD student ``pvd_s<seed>`` (4 labelled towns);
- unlabelled arm: the same config, seed and steps plus ``--unlabelled`` 4x as many towns
  (``--unlabelled-towns`` 16 sequences 20, 21, ... of town seed 1, written by ``pvd synth``
  with their labels deleted), ``distill.unlabelled_ratio`` ``--unlabelled-ratio``;
- both scored by their EMA weights on distill_gain's validation towns (mIoU over the classes
  present in the validation ground truth), paired-t CI over seeds.

Real part (``--real-out``): the real-data teacher; a student initialised from ``--init-from``
(the synthetic pre-trained student) distilled for ``--real-steps`` on the 25 labelled scans of
sequences 00-04, against the same plus the 25 scans of sequences 05, 06, 07, 09, 10 *without
labels*, which go the way a robot's data would: ``pvd_bag from-kitti`` writes each sequence as a
rosbag2 and ``pvd_bag export`` turns the bag back into scans (labels not exported). Scored by the
last checkpoint on sequence 08, every point. Caveat written to the results: the real teacher was
trained on all 50 labelled scans, so it has seen the labels of the "unlabelled" half.

One result file per pair, in the repository beside the results (``--pairs-dir``, default
``RESULTS_pairs/``: ``synthetic/pair_<seed>.{json,npz}``, ``synthetic_r<ratio>/`` at a ratio other than 1,
``real/pair_<seed>.json``), committed with them, so the benchmark continues across sessions and machines
even when the work folders are lost; runs that exist are reused (and resumed from last.pt).
Results: bench/results/distill_unlabelled.{json,md} (students as long as the teacher: ``--gain-out`` a
distill_gain folder made with ``--steps 1000 --teacher-steps 1000``, here ``--steps 1000``), and
bench/results/distill_unlabelled_300steps.{json,md} / _ratio2 (300-step students). Command of each: in its JSON.
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import distill_gain as dg  # noqa: E402

RESULTS = REPO / "bench" / "results" / "distill_unlabelled.json"
UNLABELLED_FIRST_SEQUENCE = 20
REAL_LABELLED = ["00", "01", "02", "03", "04"]
REAL_UNLABELLED = ["05", "06", "07", "09", "10"]


# ------------------------------------------------------------------------------------ synthetic
def make_unlabelled_towns(root: Path, args: argparse.Namespace, log: Path) -> list[str]:
    """``--unlabelled-towns`` synthetic towns, labels deleted (what a robot records)."""
    seqs = [f"{UNLABELLED_FIRST_SEQUENCE + i:02d}" for i in range(args.unlabelled_towns)]
    for seq in seqs:
        folder = root / "sequences" / seq
        if not (folder / "synth.json").is_file():
            dg.run(["pvd", "synth", "--out", str(root), "--sequence", seq, "--scans", str(args.scans), "--sensor",
                    dg.SENSOR, "--columns", str(args.columns), "--seed", str(dg.TRAIN_TOWN_SEED), "--quiet",
                    "--overwrite"], log)
        shutil.rmtree(folder / "labels", ignore_errors=True)
    return seqs


def ratio_tag(args: argparse.Namespace) -> str:
    """Run and pair-folder suffix of the unlabelled arm: none at the default ratio 1 (the committed runs'
    names), ``_r<ratio>`` otherwise, so arms at different ratios never share a run folder."""
    return "" if args.unlabelled_ratio == 1.0 else f"_r{args.unlabelled_ratio:g}"


def pairs_dirs(args: argparse.Namespace) -> tuple[Path, Path]:
    """(synthetic, real) pair folders: under ``--pairs-dir``, default ``<results stem>_pairs/`` beside --results."""
    root = (args.pairs_dir or args.results.with_name(args.results.stem + "_pairs")).resolve()
    return root / f"synthetic{ratio_tag(args)}", root / "real"


def scored_pvd_run(gain_pairs: Path, seed: int, teacher_iou: dict[str, float]) -> tuple[dict, np.ndarray] | None:
    """distill_gain's score of its PVD run of ``seed`` (doc, per-scan matrices), if it scored one in full;
    refused if scored against another teacher, whose PVD run is not this design's labelled arm."""
    path = gain_pairs / f"pair_{seed}.json"
    if not (path.is_file() and path.with_suffix(".npz").is_file()):
        return None
    dg.check_pairs_teacher(gain_pairs, teacher_iou)
    return json.loads(path.read_text())["pvd"], np.load(path.with_suffix(".npz"))["pvd"]


def synthetic_pair(gain_out: Path, unl_root: Path, args: argparse.Namespace, scorer: "dg.Scorer", teacher: Path,
                   seed: int) -> dict[str, Any]:
    path = pairs_dirs(args)[0] / f"pair_{seed}.json"
    if path.is_file():
        return json.loads(path.read_text())
    data = gain_out / "data"
    cfg = dg.write_config(gain_out, f"pvd_s{seed}", "synthetic_distill.yaml", args, seed, {})
    labelled = dg.train(gain_out, data, f"pvd_s{seed}", cfg, args.steps, teacher)
    unlabelled = dg.train(gain_out, data, f"unl{ratio_tag(args)}_s{seed}", cfg, args.steps, teacher,
                          ("--unlabelled", str(unl_root), "--unlabelled-ratio", str(args.unlabelled_ratio)))
    doc: dict[str, Any] = {"seed": seed, "teacher_iou": scorer.iou(scorer.teacher_matrices)}
    mats = {}
    scored = scored_pvd_run(args.gain_pairs, seed, doc["teacher_iou"])  # distill_gain scored the same PVD run
    if scored is not None:
        doc["labelled"], mats["labelled"] = scored
    else:
        doc["labelled"], mats["labelled"] = scorer.score(labelled)
    doc["unlabelled"], mats["unlabelled"] = scorer.score(unlabelled)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path.with_suffix(".npz"), **mats)
    dg.write_json(path, doc)
    dg.say(f"synthetic seed {seed}: labelled {doc['labelled']['miou']:.2f}, "
           f"+unlabelled {doc['unlabelled']['miou']:.2f}")
    return doc


def synthetic_part(args: argparse.Namespace) -> dict[str, Any]:
    from pvd_core.paired_stats import bootstrap_gain_ci

    gain_out = args.gain_out.resolve()
    teacher = (args.teacher or gain_out / "runs" / "teacher" / "ema.pt").resolve()
    if not teacher.is_file():
        raise SystemExit(f"{teacher} not found: run bench/distill_gain.py --out {gain_out} first (its teacher, "
                         "data and PVD runs are the labelled arm here), or give its --teacher")
    unl_root = gain_out / "data_unl"
    seqs = make_unlabelled_towns(unl_root, args, gain_out / "logs" / "synth_unlabelled.log")
    scorer = dg.Scorer(teacher, gain_out / "data", args)
    synthetic_dir = pairs_dirs(args)[0]
    dg.check_pairs_teacher(synthetic_dir, scorer.iou(scorer.teacher_matrices))
    seeds = range(args.first_seed, args.first_seed + args.pairs)
    pairs = [synthetic_pair(gain_out, unl_root, args, scorer, teacher, s) for s in seeds]
    npz = [np.load(synthetic_dir / f"pair_{p['seed']}.npz") for p in pairs]
    names = scorer.teacher.label_map.class_names
    return {
        "pairs": [{"seed": p["seed"], "labelled": p["labelled"]["miou"], "unlabelled": p["unlabelled"]["miou"]}
                  for p in pairs],
        "vs_baseline": vs_supervised_baseline(args.gain_pairs, pairs),
        "vs_ratio_1": vs_ratio_1(synthetic_dir.with_name("synthetic"), pairs) if ratio_tag(args) else {},
        **dg.paired_gain([p["labelled"]["miou"] for p in pairs], [p["unlabelled"]["miou"] for p in pairs]),
        "gain_bootstrap_ci95_over_scans": [round(x, 4) for x in bootstrap_gain_ci(
            [z["labelled"] for z in npz], [z["unlabelled"] for z in npz], scorer.classes, seed=0)],
        "teacher": scorer.miou(scorer.teacher_matrices),
        "teacher_checkpoint": dg.repo_relative(teacher),
        "pairs_dir": dg.repo_relative(synthetic_dir),
        "classes": [names[c] for c in scorer.classes],
        "fidelity": {arm: {k: round(float(np.mean([p[arm]["fidelity"][k] for p in pairs])), 6)
                           for k in ("agreement", "kl")} for arm in ("labelled", "unlabelled")},
        "per_class": {names[c]: {arm: round(float(np.mean([p[arm]["iou"][names[c]] for p in pairs])), 3)
                                 for arm in ("labelled", "unlabelled")} for c in scorer.classes},
        "design": {"labelled": f"{len(dg.TRAIN_SEQUENCES)} towns x {args.scans} scans (sequences "
                               f"{', '.join(dg.TRAIN_SEQUENCES)})",
                   "unlabelled": f"{len(seqs)} towns x {args.scans} scans, labels deleted (sequences "
                                 f"{seqs[0]}-{seqs[-1]})",
                   "unlabelled_ratio": args.unlabelled_ratio, "steps": args.steps,
                   "seeds": [p["seed"] for p in pairs],
                   "scoring": f"EMA of weights (train.ema_decay {args.ema_decay}) on "
                              f"{len(scorer.files)} scans of {args.val_towns} unseen towns"},
    }


def vs_ratio_1(ratio_1_dir: Path, pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """This ratio's unlabelled arm against the ratio-1 arm of the same seeds (paired-t), where every seed
    has a ratio-1 pair file in ``ratio_1_dir``; empty otherwise."""
    files = [ratio_1_dir / f"pair_{p['seed']}.json" for p in pairs]
    if len(pairs) < 2 or not all(f.is_file() for f in files):
        return {}
    ratio_1 = [json.loads(f.read_text())["unlabelled"]["miou"] for f in files]
    return {"ratio_1_mean": round(float(np.mean(ratio_1)), 4),
            **dg.paired_gain(ratio_1, [p["unlabelled"]["miou"] for p in pairs])}


def vs_supervised_baseline(gain_pairs: Path, pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """PVD + unlabelled against distill_gain's supervised baseline of the same seeds (paired-t), over the
    seeds distill_gain has scored (named in ``seeds``); empty when there are fewer than two."""

    scored = [(p, gain_pairs / f"pair_{p['seed']}.json") for p in pairs]
    scored = [(p, f) for p, f in scored if f.is_file()]
    if len(scored) < 2:
        return {}
    base = [json.loads(f.read_text())["baseline"]["miou"] for _, f in scored]
    unl = [p["unlabelled"]["miou"] for p, _ in scored]
    return {"seeds": [p["seed"] for p, _ in scored], "baseline_mean": round(float(np.mean(base)), 4),
            "unlabelled_mean": round(float(np.mean(unl)), 4), **dg.paired_gain(base, unl)}


# ------------------------------------------------------------------------------------ real
def real_unlabelled_scans(out: Path, kitti: Path, log: Path) -> Path:
    """Sequences 05-10 -> rosbag2 (pvd_bag from-kitti) -> scans without labels (pvd_bag export)."""
    unl = out / "unl"
    for seq in REAL_UNLABELLED:
        if (unl / "sequences" / seq / "export.json").is_file():
            continue
        bag = out / "bags" / f"seq{seq}"
        if not bag.exists():
            dg.run(["pvd_bag", "from-kitti", "--data-root", str(kitti), "--sequence", seq, "--out", str(bag)], log)
        dg.run(["pvd_bag", "export", "--bag", str(bag), "--out", str(unl), "--sequence", seq, "--no-progress",
                "--force"], log)
    return unl


def real_config(out: Path, steps: int) -> Path:
    data = yaml.safe_load((REPO / "config" / "kitti_cpu_distill.yaml").read_text())
    data["dataset"]["train_sequences"] = list(REAL_LABELLED)
    data["dataset"]["val_sequences"] = []  # scored afterwards on 08, never used to pick
    data["train"].update({"max_steps": steps, "checkpoint_every": max(1, steps // 2)})
    path = out / "configs" / "real_25.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def real_run(out: Path, name: str, cfg: Path, args: argparse.Namespace, seed: int, extra: tuple[str, ...]) -> Path:
    from pvd_core.checkpoint import load_checkpoint

    run_dir = out / "runs" / name
    last = run_dir / "last.pt"
    if last.is_file() and int(load_checkpoint(last).meta.get("step", 0)) >= args.real_steps:
        return last
    cmd = ["pvd", "distill", "--config", str(cfg), "--teacher", str(args.real_teacher), *extra, "--data-root",
           str(args.kitti), "--init-from", str(args.init_from), "--seed", str(seed), "--out", str(run_dir),
           "--max-steps", str(args.real_steps), "--threads", "1", "--no-progress"]
    if last.is_file():
        cmd.append("--resume")
    dg.say(f"real {name}: distill {args.real_steps} steps")
    dg.run(cmd, out / "logs" / f"{name}.log")
    return last


def real_part(args: argparse.Namespace) -> dict[str, Any]:
    import kitti_real

    out = args.real_out.resolve()
    unl = real_unlabelled_scans(out, args.kitti, out / "logs" / "bags.log")
    cfg = real_config(out, args.real_steps)
    pairs = []
    for seed in range(args.real_pairs):
        path = pairs_dirs(args)[1] / f"pair_{seed}.json"
        if not path.is_file():
            doc: dict[str, Any] = {"seed": seed}
            for arm, extra in (("labelled", ()), ("unlabelled", ("--unlabelled", str(unl)))):
                ckpt = real_run(out, f"{arm[:3]}_s{seed}", cfg, args, seed, extra)
                doc[arm] = kitti_real.score(ckpt, args.kitti)
            dg.write_json(path, doc)
        pairs.append(json.loads(path.read_text()))
        dg.say(f"real seed {seed}: labelled {pairs[-1]['labelled']['miou']:.2f}, "
               f"+unlabelled {pairs[-1]['unlabelled']['miou']:.2f}")
    return {
        "pairs": [{"seed": p["seed"], "labelled": p["labelled"]["miou"], "unlabelled": p["unlabelled"]["miou"]}
                  for p in pairs],
        **dg.paired_gain([p["labelled"]["miou"] for p in pairs], [p["unlabelled"]["miou"] for p in pairs]),
        "classes": pairs[0]["labelled"]["classes"] if pairs else [],
        "per_class": {c: {arm: round(float(np.mean([p[arm]["per_class"][c] for p in pairs])), 3)
                          for arm in ("labelled", "unlabelled")} for c in (pairs[0]["labelled"]["classes"]
                                                                          if pairs else [])},
        "design": {"labelled": f"25 scans of sequences {', '.join(REAL_LABELLED)}",
                   "unlabelled": f"25 scans of sequences {', '.join(REAL_UNLABELLED)}, through pvd_bag from-kitti "
                                 "+ pvd_bag export (no labels)",
                   "teacher": str(args.real_teacher), "init_from": str(args.init_from), "steps": args.real_steps,
                   "scoring": "last.pt on sequence 08 (10 scans, every point)",
                   "caveat": "the teacher was trained on all 50 labelled scans, including the labels of the 25 "
                             "used here without labels"},
    }


# ------------------------------------------------------------------------------------ main
def _num(x: Any, spec: str = ".2f") -> str:
    """A figure for the table; n/a where the statistic is undefined (one pair has no CI)."""
    return "n/a" if x is None else format(x, spec)


def write_markdown(doc: dict[str, Any], path: Path) -> None:
    lines = ["# Distillation from unlabelled scans: paired seeds", "", f"Command: `{doc['command']}`", ""]
    for part in ("synthetic", "real"):
        res = doc.get(part)
        if not res:
            continue
        lo, hi = res["gain_ci95"]
        lines += [f"## {part}", ""]
        if res.get("command", doc["command"]) != doc["command"]:
            lines += [f"Command of this part: `{res['command']}`", ""]
        lines += [f"Labelled: {res['design']['labelled']}. Unlabelled: "
                  f"{res['design']['unlabelled']}. Scoring: {res['design']['scoring']}; mIoU over "
                  f"{len(res['classes'])} classes present in the ground truth.", "",
                  "| seed | PVD, labelled only | PVD + unlabelled | gain |", "|---|---|---|---|"]
        lines += [f"| {p['seed']} | {p['labelled']:.2f} | {p['unlabelled']:.2f} | "
                  f"{p['unlabelled'] - p['labelled']:+.2f} |" for p in res["pairs"]]
        lines += ["", f"Mean gain **{_num(res['gain_mean'], '+.2f')} mIoU**, paired-t 95 % CI "
                  f"[{_num(lo)}, {_num(hi)}], p = {_num(res['p_value'], '.3g')} ({len(res['pairs'])} pairs).", ""]
        vb = res.get("vs_baseline")
        if vb:
            lines += [f"Against the supervised baseline of the same seeds ({len(vb['seeds'])} pairs, seeds "
                      f"{', '.join(map(str, vb['seeds']))}): {vb['unlabelled_mean']:.2f} vs "
                      f"{vb['baseline_mean']:.2f}, gain {_num(vb['gain_mean'], '+.2f')}, 95 % CI "
                      f"[{_num(vb['gain_ci95'][0])}, {_num(vb['gain_ci95'][1])}].", ""]
        vr = res.get("vs_ratio_1")
        if vr:
            lines += [f"Against unlabelled ratio 1 on the same seeds: gain {_num(vr['gain_mean'], '+.2f')}, 95 % CI "
                      f"[{_num(vr['gain_ci95'][0])}, {_num(vr['gain_ci95'][1])}], p = {_num(vr['p_value'], '.3g')}.",
                      ""]
        if "caveat" in res["design"]:
            lines += [f"Caveat: {res['design']['caveat']}.", ""]
    path.write_text("\n".join(lines) + "\n")


def kept_part(results: Path, skip: str | None) -> dict[str, Any]:
    """The part that ``--skip`` leaves out, as ``results`` already holds it (with the command that made it),
    so re-measuring one part never drops the other's committed figures."""
    if skip is None or not results.is_file():
        return {}
    old = json.loads(results.read_text())
    if skip not in old:
        return {}
    return {skip: dict(old[skip], command=old[skip].get("command", old.get("command")))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gain-out", type=Path, default=Path("/tmp/distill_gain"),
                    help="bench/distill_gain.py's work folder (teacher, data, PVD runs)")
    ap.add_argument("--gain-pairs", type=Path, default=REPO / "bench" / "results" / "distill_gain_pairs",
                    help="bench/distill_gain.py's pair files (its --pairs-dir: RESULTS_pairs/ beside its --results)")
    ap.add_argument("--steps", type=int, default=300, help="student steps (as the distill_gain run)")
    ap.add_argument("--scans", type=int, default=40, help="scans per town (as the distill_gain run)")
    ap.add_argument("--val-towns", type=int, default=3)
    ap.add_argument("--val-scans", type=int, default=40)
    ap.add_argument("--columns", type=int, default=600)
    ap.add_argument("--ema-decay", type=float, default=0.99)
    ap.add_argument("--unlabelled-towns", type=int, default=16,
                    help="unlabelled synthetic towns (4x the 4 labelled)")
    ap.add_argument("--unlabelled-ratio", type=float, default=1.0,
                    help="distill.unlabelled_ratio of the unlabelled arm")
    ap.add_argument("--pairs", type=int, default=5, help="synthetic seed pairs")
    ap.add_argument("--first-seed", type=int, default=0,
                    help="seed of the first synthetic pair (fresh seeds confirm a setting chosen on others)")
    ap.add_argument("--real-out", type=Path, default=Path("/tmp/distill_unlabelled_real"))
    ap.add_argument("--kitti", type=Path, default=REPO.parent / "shared" / "data" / "semantickitti",
                    help="SemanticKITTI root with sequences 00-10 (the 60-scan sample of docs/data.md)")
    ap.add_argument("--real-teacher", type=Path, help="real-data teacher checkpoint (models/README.md)")
    ap.add_argument("--init-from", type=Path, help="student start (the synthetic pre-trained student)")
    ap.add_argument("--real-steps", type=int, default=100)
    ap.add_argument("--real-pairs", type=int, default=3)
    ap.add_argument("--skip", choices=("synthetic", "real"),
                    help="leave one part out (its figures already in --results are kept, with their command)")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--pairs-dir", type=Path, default=None,
                    help="one file per pair (default: RESULTS_pairs/ beside --results, committed with it)")
    ap.add_argument("--teacher", type=Path, default=None,
                    help="the synthetic teacher, when distill_gain ran with --teacher (default: "
                         "GAIN_OUT/runs/teacher/ema.pt)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    command = "python " + shlex.join(["bench/distill_unlabelled.py"] + sys.argv[1:])
    doc = kept_part(args.results, args.skip)
    if args.skip != "synthetic":
        doc["synthetic"] = dict(synthetic_part(args), command=command)
    if args.skip != "real":
        if args.real_teacher is None or args.init_from is None:
            ap.error("the real part needs --real-teacher and --init-from (or --skip real)")
        doc["real"] = dict(real_part(args), command=command)
    doc["command"] = command
    doc = json.loads(json.dumps(doc, default=float).replace("NaN", "null"))
    dg.write_json(args.results, doc)
    write_markdown(doc, args.results.with_suffix(".md"))
    dg.say(f"results in {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
