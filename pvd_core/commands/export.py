"""`pvd export`: turn a run's checkpoint into a shippable one, with what it was trained on and its terms.

    pvd export --checkpoint runs/kitti_pvd_s0/last.pt --out models/semantickitti_student_pvd.pt \
        --trained-on "SemanticKITTI, 50 scans of sequences 00-07, 09, 10" --licence semantickitti

The metadata is what the node and ``pvd_bag`` print at start (``pvd_core.shipped_models.model_card``),
so a user sees the terms of the weights they run.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="CKPT",
                        help="checkpoint to export (e.g. a run's last.pt)")
    parser.add_argument("--out", required=True, metavar="OUT", help="where to write the inference checkpoint")
    parser.add_argument("--trained-on", required=True, metavar="TEXT", help="the data it was trained on, in words")
    parser.add_argument("--licence", required=True, metavar="TEXT",
                        help="terms of the weights; 'semantickitti' for SemanticKITTI's non-commercial terms, "
                             "'none' for data without a licence of its own (e.g. synthetic)")
    parser.add_argument("--note", metavar="TEXT", help="a short line on its accuracy, printed at start")
    parser.add_argument("--half", action="store_true",
                        help="store the weights as float16: half the file; they load back as float32, rounded "
                             "(a tensor beyond float16's range, e.g. a BN running variance of 1e7, stays "
                             "float32; meta kept_dtype names it). A synthetic teacher scored 53.60 mIoU "
                             "either way (models/README.md)")


def run(args: argparse.Namespace) -> int:
    from pvd_core.checkpoint import export_checkpoint
    from pvd_core.shipped_models import SEMANTICKITTI_LICENCE, model_card

    licence = {"semantickitti": SEMANTICKITTI_LICENCE, "none": None}.get(args.licence, args.licence)
    updates = {"trained_on": args.trained_on, "licence": licence}
    if args.note:
        updates["miou_note"] = args.note
    import torch

    ckpt = export_checkpoint(Path(args.checkpoint), Path(args.out), updates,
                             float_dtype=torch.float16 if args.half else None)
    size_mb = Path(args.out).stat().st_size / 1e6
    print(f"wrote {args.out} ({size_mb:.1f} MB, init_size {ckpt.config.model.init_size}): {model_card(ckpt.meta)}")
    kept = ckpt.meta.get("kept_dtype") or {}
    if kept:
        print(f"kept in float32 (beyond float16's range): {', '.join(sorted(kept))}")
    return 0
