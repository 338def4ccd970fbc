#!/usr/bin/env python3
"""Pair files for bench/distill_gain.py, recovered from a committed results JSON.

Why: until the pair files moved into the repo, they lived in the work folder (``--out``), and a
lost work folder lost a design's pairs although the results JSON in git still held every pair's
mIoU. A recovered pair file holds what that JSON kept: the seed, each arm's mIoU and
segmentation-loss quarters, and the teacher's per-class IoU, which ``distill_gain.py`` checks
against the teacher it trains, so recovered pairs join only the design they came from. They
carry no per-scan matrices: they count in the paired-t verdict, not in the per-scan and
per-class figures. Main pairs only; ablation pairs are not recovered.

    python bench/recover_pairs.py --source ec08599:bench/results/distill_gain_students4000.json \\
        --pairs-dir bench/results/distill_gain_students4000_pairs
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def read_committed(source: str) -> dict[str, Any]:
    """``REV:PATH`` as git holds it (the file may have changed or gone since)."""
    proc = subprocess.run(["git", "show", source], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"--source {source}: git show failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def recovered_pairs(doc: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """One pair document per entry of ``doc['pairs']``, in distill_gain's pair-file layout."""
    for key in ("pairs", "teacher_detail", "loss_curves_seg"):
        if key not in doc:
            raise SystemExit(f"--source {source}: no '{key}': not a bench/distill_gain.py results file")
    curves = doc["loss_curves_seg"]
    return [{"seed": p["seed"], "teacher_iou": doc["teacher_detail"]["iou"], "recovered_from": source,
             **{arm: {"miou": p[arm], "loss_curve_seg": curves.get(f"{arm}_s{p['seed']}", [])}
                for arm in ("baseline", "pvd")}} for p in doc["pairs"]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", required=True, help="REV:PATH of a committed distill_gain results JSON")
    ap.add_argument("--pairs-dir", type=Path, required=True, help="where distill_gain.py reads its pair files")
    args = ap.parse_args()
    pairs = recovered_pairs(read_committed(args.source), args.source)
    args.pairs_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for pair in pairs:
        path = args.pairs_dir / f"pair_{pair['seed']}.json"
        if path.exists():  # a pair scored in full (or recovered before) is never overwritten
            print(f"{path}: exists, kept")
            continue
        path.write_text(json.dumps(pair, indent=2) + "\n")
        written += 1
    print(f"{written} of {len(pairs)} pair files written to {args.pairs_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
