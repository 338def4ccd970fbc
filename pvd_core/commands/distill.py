"""`pvd distill`: `pvd train` with a frozen teacher (the PVD loss); flags and loop are train's plus --teacher."""
from __future__ import annotations

import argparse

from pvd_core.commands.train import add_training_arguments, run

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser, distill=True)
