"""`pvd eval`: per-class IoU and mIoU of a checkpoint on dataset sequences.

    pvd eval --checkpoint CKPT --data-root DIR --sequences 08 [--tta N] [--json OUT] [--png OUT]

Inference goes through the Segmenter (the one inference path), so the figure is what the
ROS node would produce on the same scans. Outputs: the IoU table on stdout, a JSON file
(``miou`` in percent, ``iou`` per class name, ``points``, ``absent_classes``, plus the
checkpoint, sequences and tta) and a row-normalised confusion-matrix PNG. Without
--json the files go to ``<checkpoint dir>/eval/<checkpoint stem>_seq<sequences>[_tta<N>].json``
(a run directory's eval/ folder).
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from pvd_core.device import DEVICE_SYNTAX, device_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint (.pt) to evaluate")
    parser.add_argument("--data-root", metavar="DIR",
                        help="dataset root (default: the checkpoint config's dataset.data_root)")
    parser.add_argument("--sequences", nargs="+", metavar="SEQ",
                        help="sequences (nuScenes: pair sources) to evaluate (default: the config's val_sequences)")
    parser.add_argument("--tta", type=int, default=1, metavar="N", help="test-time augmentation votes (default 1)")
    parser.add_argument("--max-scans", type=int, default=0, metavar="N",
                        help="evaluate N scans spread evenly over the sequences (0 = all)")
    parser.add_argument("--device", default="auto", type=device_argument, help=f"{DEVICE_SYNTAX} (default auto)")
    parser.add_argument("--fp16", action="store_true", help="half precision (CUDA only)")
    parser.add_argument("--json", metavar="OUT", help="JSON report path")
    parser.add_argument("--png", metavar="OUT", help="confusion-matrix PNG path (default: beside the JSON)")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pvd_core.data.semantickitti import DataError
    from pvd_core.evaluation import evaluate_files, sequences_text, split_subset
    from pvd_core.segmenter import Segmenter

    from pvd_core.device import set_torch_threads

    set_torch_threads(args.threads)
    ckpt_path = Path(args.checkpoint)
    segmenter = Segmenter.from_checkpoint(ckpt_path, device=args.device, fp16=args.fp16, tta=args.tta)
    cfg = segmenter.config
    dataset = cfg.dataset
    if args.data_root is not None:
        dataset = dataclasses.replace(dataset, data_root=str(args.data_root))
    if args.sequences:
        seqs = [s.zfill(2) if dataset.kind == "semantickitti" and s.isdigit() else s for s in args.sequences]
        dataset = dataclasses.replace(dataset, val_sequences=seqs)
    cfg = dataclasses.replace(cfg, dataset=dataset)
    seqs_text = sequences_text(dataset.val_sequences)
    files = split_subset(cfg, "val", args.max_scans)
    if not files:
        raise DataError(f"no scans found for sequences {dataset.val_sequences} under {dataset.data_root}")
    report = evaluate_files(segmenter, files, dataset.kind, segmenter.label_map, progress=not args.no_progress,
                            desc=f"eval {seqs_text}")
    if args.json:
        json_path = Path(args.json)
    else:
        suffix = f"_tta{args.tta}" if args.tta > 1 else ""
        json_path = ckpt_path.parent / "eval" / f"{ckpt_path.stem}_seq{seqs_text}{suffix}.json"
    png_path = Path(args.png) if args.png else json_path.with_name(json_path.stem + "_confusion.png")
    report.extra = {"checkpoint": str(ckpt_path), "data_root": str(dataset.data_root),
                    "sequences": list(dataset.val_sequences), "tta": args.tta, "max_scans": args.max_scans,
                    "device": str(segmenter.device)}
    print(f"checkpoint {ckpt_path} (init_size {cfg.model.init_size}, {segmenter.label_map.name}), "
          f"sequences {seqs_text}, {report.scans} scans, tta {args.tta}, {report.seconds:.1f} s")
    print(report.table())
    report.write(json_path, png_path, title=f"{ckpt_path.name} on {seqs_text}")
    print(f"wrote {json_path} and {png_path}")
    return 0
