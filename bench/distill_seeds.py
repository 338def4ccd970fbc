"""Baseline and PVD student over several student seeds, from the *pre-issue-11* distill_gain.py results.

Superseded by the paired benchmark (bench/distill_gain.py now runs and aggregates its own pairs);
kept to summarise the committed per-seed files, with the paired-t CI (pvd_core.paired_stats).

Each input is one distill_gain.json (seed 0 is the full matrix; other seeds come from
``bench/distill_gain.py --seed N --only student_baseline student_pvd`` against the same
teacher). Writes mean, standard deviation and per-seed gain:

    python bench/distill_seeds.py bench/results/distill_gain.json bench/results/distill_gain_seed1.json \\
        bench/results/distill_gain_seed2.json
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    seeds: dict[int, dict[str, Any]] = {}
    for run in runs:
        seed = int(run.get("student_seed", 0))
        if seed in seeds:
            raise SystemExit(f"student seed {seed} appears twice")
        seeds[seed] = {"student_baseline": run["variants"]["student_baseline"]["miou"],
                       "student_pvd": run["variants"]["student_pvd"]["miou"], "command": run["commands"][-1]}
    teachers = {run["variants"]["teacher"]["miou"] for run in runs}
    if len(teachers) != 1:
        raise SystemExit(f"the runs used different teachers (mIoU {sorted(teachers)}): seeds must share one")
    teacher = teachers.pop()
    base = [s["student_baseline"] for s in seeds.values()]
    pvd = [s["student_pvd"] for s in seeds.values()]
    gain = [p - b for p, b in zip(pvd, base)]
    closed = statistics.mean(gain) / (teacher - statistics.mean(base))
    from pvd_core.paired_stats import paired_t

    t = paired_t(base, pvd)
    return {
        "teacher_miou": teacher,
        "seeds": {str(k): seeds[k] for k in sorted(seeds)},
        "mean": {"student_baseline": round(statistics.mean(base), 3), "student_pvd": round(statistics.mean(pvd), 3),
                 "gain": round(statistics.mean(gain), 3)},
        "stdev": {"student_baseline": round(statistics.stdev(base), 3), "student_pvd": round(statistics.stdev(pvd), 3),
                  "gain": round(statistics.stdev(gain), 3)},
        "gain_per_seed": [round(g, 3) for g in gain],
        "gap_closed_fraction_of_means": round(closed, 3),
        "gain_ci95_paired_t": [round(x, 3) for x in t.ci95],
        "gain_p_value": round(t.p_value, 4),
        "metric_note": "old metric: the class set depended on the predictions (issue 11); not re-scorable, "
                       "the files hold no confusion matrices",
        "goals": {"gain_goal_1p5_on_mean": statistics.mean(gain) >= 1.5, "gap_goal_half_on_means": closed >= 0.5},
    }


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="distill_gain.json files, one per student seed")
    ap.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "distill_gain_seeds.json")
    args = ap.parse_args(argv)
    if len(args.runs) < 2:
        raise SystemExit("give at least two runs (seeds)")
    doc = {"benchmark": "distill_gain_seeds",
           "command": "python " + shlex.join(["bench/distill_seeds.py"] + (sys.argv[1:] if argv is None else argv)),
           "note": "Seeds after 0 reuse the seed-0 run's teacher and data: copy OUT/runs/teacher and "
                   "OUT/results/teacher.json into the new --out folder and symlink OUT/data there as data "
                   "(distill_gain.py then skips the cached teacher).",
           **summarise([json.loads(p.read_text()) for p in args.runs])}
    args.output.write_text(json.dumps(doc, indent=2) + "\n")
    m, s = doc["mean"], doc["stdev"]
    print(f"baseline {m['student_baseline']:.2f} ± {s['student_baseline']:.2f}, PVD {m['student_pvd']:.2f} ± "
          f"{s['student_pvd']:.2f}, gain {m['gain']:+.2f} ± {s['gain']:.2f} -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
