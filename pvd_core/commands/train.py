"""`pvd train` (and, through pvd_core.commands.distill, `pvd distill`): one loop (pvd_core.training.trainer).

    pvd train   --config CFG [--data-root DIR] [--out RUN_DIR] [--max-steps N] [--resume] [--init-from CKPT]
    pvd distill --config CFG --teacher CKPT [--unlabelled SOURCE ...] [--data-root DIR] [--out RUN_DIR]
                [--max-steps N] [--resume]

Multi-process: ``torchrun --standalone --nproc_per_node N -m pvd_core.cli train ...``
(gloo on CPU, nccl on GPU); only rank 0 writes the run directory.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from pvd_core.config import load_config
from pvd_core.errors import UsageError
from pvd_core.device import DEVICE_SYNTAX, device_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser, distill=False)


def add_training_arguments(parser: argparse.ArgumentParser, distill: bool) -> None:
    """The flags of ``pvd train``; ``distill`` adds ``--teacher`` (``pvd distill``, pvd_core.commands.distill)."""
    parser.add_argument("--config", required=True, metavar="CFG", help="YAML config (config/*.yaml)")
    if distill:
        parser.add_argument("--teacher", required=True, metavar="CKPT",
                            help="teacher checkpoint (its config must share the student's grid and dataset kind)")
        parser.add_argument("--unlabelled", action="append", metavar="SOURCE",
                            help="scans without labels that contribute the PVD terms only (repeatable; replaces "
                                 "dataset.unlabelled): a dataset root with sequences/*/velodyne, a sequence folder "
                                 "with velodyne/, a folder of .bin scans or one scan; `pvd_bag export` writes this "
                                 "layout from a rosbag2 or ROS 1 bag. Labels next to them are ignored")
        parser.add_argument("--unlabelled-ratio", type=float, metavar="R",
                            help="override distill.unlabelled_ratio: unlabelled scans per labelled scan in each "
                                 "batch (default 1: batch_size labelled plus as many unlabelled)")
    parser.add_argument("--data-root", metavar="DIR", help="dataset location (overrides dataset.data_root)")
    parser.add_argument("--out", metavar="RUN_DIR",
                        help="run directory (default runs/<config name>); holds config.yaml, metrics.jsonl, "
                             "curves.png, last.pt, best.pt, eval/")
    parser.add_argument("--max-steps", type=int, metavar="N", help="override train.max_steps")
    parser.add_argument("--seed", type=int, metavar="N",
                        help="override train.seed (initialisation, data order, augmentation and point sampling; "
                             "a baseline and a PVD run with the same seed are a pair)")
    parser.add_argument("--resume", action="store_true", help="continue RUN_DIR/last.pt")
    parser.add_argument("--init-from", metavar="CKPT",
                        help="start from this checkpoint's weights (weights only: fresh optimiser, schedule and "
                             "step), e.g. a synthetic pre-trained model fine-tuned on real scans; every tensor "
                             "must fit the config's model")
    parser.add_argument("--device", type=device_argument, help=f"override train.device ({DEVICE_SYNTAX})")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for torch (default: torch's choice; 1 avoids oversubscription "
                             "when several runs share few cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs still written)")
    parser.add_argument("--release-freed-memory", action="store_true",
                        help="let glibc return freed buffers to the OS (its default); by default a training "
                             "process keeps them for reuse: with the equivalent MALLOC_* environment settings 4 "
                             "steps on real HDL-64 scans took 28 s instead of 39 s, at a higher peak RSS "
                             "(docs/platform.md)")


def run(args: argparse.Namespace) -> int:
    from pvd_core.training.trainer import TrainOptions, train

    from pvd_core.device import set_torch_threads
    from pvd_core.memory import retain_freed_memory

    set_torch_threads(args.threads)
    if not args.release_freed_memory:
        retain_freed_memory(training=True)
    cfg = load_config(args.config, data_root=args.data_root)
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise UsageError(f"--max-steps must be >= 1, got {args.max_steps}")
        cfg.train = dataclasses.replace(cfg.train, max_steps=args.max_steps)
    if args.seed is not None:
        if args.seed < 0:
            raise UsageError(f"--seed must be >= 0, got {args.seed}")
        cfg.train = dataclasses.replace(cfg.train, seed=args.seed)
    if args.device is not None:
        cfg.train = dataclasses.replace(cfg.train, device=args.device)
    if getattr(args, "unlabelled", None):
        cfg.dataset = dataclasses.replace(cfg.dataset, unlabelled=[str(s) for s in args.unlabelled])
    if getattr(args, "unlabelled_ratio", None) is not None:
        cfg.distill = dataclasses.replace(cfg.distill, unlabelled_ratio=args.unlabelled_ratio)
        cfg.validate(f"{args.config} with --unlabelled-ratio")
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    teacher = Path(args.teacher) if args.command == "distill" else None
    init_from = Path(args.init_from) if args.init_from else None
    result = train(TrainOptions(config=cfg, out_dir=out, resume=args.resume, teacher=teacher, init_from=init_from,
                                progress=not args.no_progress, config_source=str(args.config)))
    if os.environ.get("RANK", "0") == "0":
        best = "n/a" if result.best_miou is None else f"{result.best_miou:.2f}"
        print(f"{args.command}: {result.step} steps in {result.wall_s:.1f} s; best validation mIoU {best}; "
              f"checkpoints in {result.out_dir}")
    return 0
