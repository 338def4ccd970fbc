"""The `pvd` command. Each subcommand lives in its own module, imported only when chosen,
so that `pvd synth` does not pay for importing torch and spconv."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

# name -> (module with add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("pvd_core.synth.cli", "write a synthetic labelled LiDAR sequence (SemanticKITTI layout)"),
    "profile": ("pvd_core.profiling", "count parameters and exact sparse MACs, time the forward pass"),
    "predict": ("pvd_core.predict", "segment one scan and write SemanticKITTI .label output"),
    "train": ("pvd_core.training.cli", "train a model with the supervised loss (teacher or baseline)"),
    "distill": ("pvd_core.training.cli", "train a student with PVD from a frozen teacher"),
    "eval": ("pvd_core.evaluation_cli", "per-class IoU and mIoU of a checkpoint on a dataset split"),
    "export": ("pvd_core.export_cli", "write a run's checkpoint as a shippable one with its data and licence"),
}


def build_parser(command: Optional[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pvd", description="pvd_ros core tools: data, models, training, evaluation.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module_name).add_arguments(p, name)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as exc:
        # Configuration and data errors already name the file or field: show them plainly.
        print(f"pvd {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
