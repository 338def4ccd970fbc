#!/usr/bin/env python3
"""Have the students converged? Baseline and PVD mIoU against student steps, from distill_gain results.

Issue 11 asks for students "trained until their loss curve flattens". Under a cosine schedule the
loss falls to the last step whatever the length, so a loss curve alone cannot say when more steps stop
paying; the validation mIoU can. This reads ``bench/distill_gain.py`` result files that share seeds
(one per student length), and reports for each length the teacher, the mean baseline and PVD mIoU with
their 95 % t-intervals over seeds, PVD's paired gain, and how much the loss still fell in the last
quarter; then, for consecutive lengths, the paired change of the baseline (same seed, longer run).
A change whose CI straddles 0 means the baseline has stopped improving with steps. Nothing is trained.

Result: bench/results/student_convergence.{json,md,png}; the command is in the JSON.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from distill_gain import complete_quarters, last_quarter_fall  # noqa: E402
from pvd_core.paired_stats import paired_t  # noqa: E402
from result_files import figure, repo_relative, save_figure, write_report  # noqa: E402

RESULTS = REPO / "bench" / "results"
DEFAULT_INPUTS = ["distill_gain.json", "distill_gain_students1000.json", "distill_gain_students2000.json",
                  "distill_gain_students4000.json"]


def mean_ci(values: list[float]) -> list[float]:
    """The t-interval of a mean: paired_t against zeros is the one-sample t test."""
    return [round(x, 4) for x in paired_t([0.0] * len(values), values).ci95]


def design(path: Path) -> dict[str, Any]:
    """One result file's student length, teacher and per-seed scores."""
    doc = json.loads(path.read_text())
    if "settings" not in doc or "pairs" not in doc:
        raise SystemExit(f"{path}: not a bench/distill_gain.py result (no 'settings' or 'pairs')")
    base = {p["seed"]: p["baseline"] for p in doc["pairs"]}
    pvd = {p["seed"]: p["pvd"] for p in doc["pairs"]}
    b, v = list(base.values()), list(pvd.values())
    falls = doc.get("seg_loss_last_quarter_fall") or {}
    if not falls:  # older files: derive it from the per-run quarter means they carry
        curves = doc.get("loss_curves_seg", {})
        falls = {arm: round(float(np.mean([last_quarter_fall(c) for k, c in curves.items()
                                           if k.startswith(arm + "_s") and complete_quarters(c)])), 4)
                 for arm in ("baseline", "pvd")}
    return {"file": repo_relative(path),
            "steps": doc["settings"]["steps"], "teacher_steps": doc["settings"]["teacher_steps"],
            "teacher": doc["teacher"], "seeds": sorted(base),
            "baseline": base, "pvd": pvd,
            "baseline_mean": round(float(np.mean(b)), 4), "baseline_ci95": mean_ci(b),
            "pvd_mean": round(float(np.mean(v)), 4), "pvd_ci95": mean_ci(v),
            "gain_mean": doc["gain_mean"], "gain_ci95": doc["gain_ci95"],
            "seg_loss_last_quarter_fall": falls}


def longer_runs(designs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paired change of each arm from one student length to the next, over the seeds both share."""
    rows = []
    for a, b in zip(designs, designs[1:]):
        seeds = [s for s in a["seeds"] if s in b["seeds"]]
        row: dict[str, Any] = {"from_steps": a["steps"], "to_steps": b["steps"], "seeds": seeds}
        for arm in ("baseline", "pvd"):
            t = paired_t([a[arm][s] for s in seeds], [b[arm][s] for s in seeds])
            row[arm] = {"change_mean": round(t.mean, 4), "ci95": [round(x, 4) for x in t.ci95],
                        "p_value": t.p_value}
        rows.append(row)
    return rows


def plot(designs: list[dict[str, Any]], path: Path) -> None:
    steps = np.array([d["steps"] for d in designs])
    fig, ax = figure((7, 4.5))
    for arm, colour, shift in (("baseline", "tab:blue", -0.02), ("pvd", "tab:orange", 0.02)):
        mean = np.array([d[f"{arm}_mean"] for d in designs])
        ci = np.array([d[f"{arm}_ci95"] for d in designs])
        ax.errorbar(steps * (1 + shift), mean, yerr=[mean - ci[:, 0], ci[:, 1] - mean], color=colour, marker="o",
                    capsize=4, label=f"{arm} student (mean of seeds, 95 % CI)")
    ax.scatter(steps, [d["teacher"] for d in designs], color="black", marker="*", s=90, zorder=3,
               label="teacher of that design")
    for d in designs:
        ax.annotate(f"{d['teacher_steps']}-step teacher", (d["steps"], d["teacher"]), textcoords="offset points",
                    xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.margins(x=0.2)
    ax.set_xlabel("student optimiser steps")
    ax.set_ylabel("validation mIoU (3 unseen towns x 40 scans)")
    ax.set_title("Do longer students still improve?")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, path)


def write_markdown(doc: dict[str, Any], path: Path) -> None:
    lines = ["# Student convergence: mIoU against student steps (synthetic, paired seeds)", "",
             f"Command: `{doc['command']}`", "",
             "| student steps | teacher (steps) | baseline | PVD | PVD gain, 95 % CI | loss fall Q3 to Q4 "
             "(baseline / PVD) | file |", "|---|---|---|---|---|---|---|"]
    for d in doc["designs"]:
        lo, hi = d["gain_ci95"]
        f = d["seg_loss_last_quarter_fall"]
        lines.append(f"| {d['steps']} | {d['teacher']:.2f} ({d['teacher_steps']}) | {d['baseline_mean']:.2f} "
                     f"[{d['baseline_ci95'][0]:.2f}, {d['baseline_ci95'][1]:.2f}] | {d['pvd_mean']:.2f} "
                     f"[{d['pvd_ci95'][0]:.2f}, {d['pvd_ci95'][1]:.2f}] | {d['gain_mean']:+.2f} [{lo:.2f}, {hi:.2f}] "
                     f"| {f['baseline']:.1%} / {f['pvd']:.1%} | `{d['file']}` |")
    lines += ["", "Longer students, same seeds (paired change of each arm's mIoU):", "",
              "| from | to | seeds | baseline change, 95 % CI | PVD change, 95 % CI |", "|---|---|---|---|---|"]
    for r in doc["longer_runs"]:
        b, p = r["baseline"], r["pvd"]
        lines.append(f"| {r['from_steps']} | {r['to_steps']} | {len(r['seeds'])} | {b['change_mean']:+.2f} "
                     f"[{b['ci95'][0]:.2f}, {b['ci95'][1]:.2f}] | {p['change_mean']:+.2f} "
                     f"[{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}] |")
    lines += ["", f"![mIoU against student steps]({Path(doc['png']).name})"]
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="*", type=Path, default=[RESULTS / f for f in DEFAULT_INPUTS],
                    help="distill_gain result files, one per student length (default: 300, 1000, 2000, 4000 steps)")
    ap.add_argument("--results", type=Path, default=RESULTS / "student_convergence.json")
    args = ap.parse_args()
    missing = [str(p) for p in args.inputs if not p.is_file()]
    if missing:
        ap.error(f"missing result files: {', '.join(missing)}")
    designs = sorted((design(p) for p in args.inputs), key=lambda d: d["steps"])
    doc = {"command": "python " + shlex.join(["bench/student_convergence.py"] + sys.argv[1:]),
           "designs": designs, "longer_runs": longer_runs(designs),
           "png": repo_relative(args.results.with_suffix(".png"))}
    print(write_report(doc, args.results, lambda d, png: plot(d["designs"], png), write_markdown).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
