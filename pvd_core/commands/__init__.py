"""Every command-line program of the project, one module per command, under one scheme.

``pvd_core/commands/<name>.py`` holds ``pvd <name>`` and ``pvd_ros/commands/<name>.py`` the
``pvd_bag`` subcommands and ``pvd_demo``. Each module has ``add_arguments(parser)`` and
``run(args) -> int`` and nothing else of substance: the work is done by library modules that
never import argparse. ``pvd_core.cli`` and ``pvd_ros.cli`` map command names to these modules
and run them through :func:`dispatch` or :func:`run_single`, which import a command's module only
when it is chosen (``pvd synth`` does not pay for torch) and handle errors in one way: a
:class:`~pvd_core.errors.PvdError` (a user error) prints one line ``PROG COMMAND: error: ...`` and
exits 1; any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import NamedTuple, Optional, Sequence

from pvd_core.errors import PvdError



class Command(NamedTuple):
    module: str  # module with add_arguments(parser) and run(args) -> int
    help: str  # one line for the program's --help
    description: Optional[str] = None  # the subcommand's own --help text (default: help)


def run_command(prog: str, module_name: str, args: argparse.Namespace) -> int:
    """``run(args)`` of the module; a user error becomes one line on stderr and exit status 1."""
    module = importlib.import_module(module_name)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except PvdError as exc:
        # User errors already name the file, flag or field: show them plainly.
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1


def dispatch(prog: str, description: str, commands: dict[str, Command],
             argv: Optional[Sequence[str]] = None) -> int:
    """``prog COMMAND [flags]``: parse, then run the chosen command's module."""
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = argv[0] if argv and argv[0] in commands else None
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in commands.items():
        p = sub.add_parser(name, help=command.help, description=command.description or command.help)
        if name == chosen:
            importlib.import_module(command.module).add_arguments(p)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    args.argv = argv
    return run_command(f"{prog} {args.command}", commands[args.command].module, args)


def run_single(prog: str, module_name: str, argv: Optional[Sequence[str]] = None) -> int:
    """A program that is one command (``pvd_demo``); its --help text is the module's first paragraph."""
    argv = list(sys.argv[1:] if argv is None else argv)
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=prog, description=(module.__doc__ or "").split("\n\n")[0])
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    args.argv = argv
    return run_command(prog, module_name, args)
