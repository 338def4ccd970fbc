"""The `pvd` command. Each subcommand is a module of pvd_core.commands, imported only when chosen,
so that `pvd synth` does not pay for importing torch and spconv."""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from pvd_core.commands import Command, dispatch

COMMANDS: dict[str, Command] = {
    "synth": Command("pvd_core.commands.synth", "write a synthetic labelled LiDAR sequence (SemanticKITTI layout)"),
    "profile": Command("pvd_core.commands.profile", "count parameters and exact sparse MACs, time the forward pass"),
    "predict": Command("pvd_core.commands.predict", "segment one scan and write SemanticKITTI .label output"),
    "train": Command("pvd_core.commands.train", "train a model with the supervised loss (teacher or baseline)"),
    "distill": Command("pvd_core.commands.distill", "train a student with PVD from a frozen teacher"),
    "eval": Command("pvd_core.commands.eval", "per-class IoU and mIoU of a checkpoint on a dataset split"),
    "export": Command("pvd_core.commands.export",
                      "write a run's checkpoint as a shippable one with its data and licence"),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    return dispatch("pvd", "pvd_ros core tools: data, models, training, evaluation.", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
