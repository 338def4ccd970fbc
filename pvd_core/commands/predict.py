"""`pvd predict`: segment one scan through the Segmenter and write a SemanticKITTI .label file.

The output holds one uint32 per input point: the canonical raw id of the predicted class
in the lower 16 bits (for example 10 for car, 20 for other-vehicle), instance 0 in the
upper 16 bits, so the file can be scored by the official SemanticKITTI tools. Points the
Segmenter leaves unlabeled (NaN rows, dropped out-of-volume points) are written as raw 0.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pvd_core.device import DEVICE_SYNTAX, device_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="pvd_ros checkpoint (.pt)")
    parser.add_argument("--scan", required=True, help="SemanticKITTI .bin scan (float32 x, y, z, reflectance)")
    parser.add_argument("--out", required=True, help="output .label file (uint32 raw ids)")
    parser.add_argument("--device", default="auto", type=device_argument, help=f"{DEVICE_SYNTAX} (default auto)")
    parser.add_argument("--tta", type=int, default=1, help="test-time augmentation votes, 1-8 (default 1)")


def run(args: argparse.Namespace) -> int:
    from pvd_core.data.semantickitti import read_points, write_label_file
    from pvd_core.labels import train_to_raw
    from pvd_core.segmenter import Segmenter

    points = read_points(args.scan)
    segmenter = Segmenter.from_checkpoint(args.checkpoint, device=args.device, tta=args.tta)
    result = segmenter.segment(points)
    raw = train_to_raw(segmenter.label_map, result.labels)
    out = Path(args.out)
    write_label_file(out, raw)
    counts = np.bincount(result.labels, minlength=segmenter.label_map.num_classes)
    top = np.argsort(counts)[::-1][:5]
    summary = ", ".join(f"{segmenter.label_map.class_names[c]} {counts[c]}" for c in top if counts[c])
    t = result.timings
    print(f"wrote {out}: {len(raw)} labels ({summary}); preprocess {t['preprocess']:.0f} ms, "
          f"inference {t['inference']:.0f} ms, postprocess {t['postprocess']:.0f} ms on {segmenter.device}")
    return 0
