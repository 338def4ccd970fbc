"""The one base of the errors a user causes and can fix: ``PvdError``.

Every command (``pvd``, ``pvd_bag``, ``pvd_demo``, ``segment_node``'s start-up) catches exactly
``PvdError`` and prints its message as one line naming the command; any other exception is a bug
and keeps its traceback. Each module's error class (``ConfigError``, ``CheckpointError``,
``DataError``, ...) derives from it, and most also from the built-in type they raised before
(``ValueError``), so existing ``except ValueError`` callers still catch them.
"""
from __future__ import annotations


class PvdError(Exception):
    """A user error (bad argument, missing or malformed file, unusable setting); the message says which."""


class UsageError(PvdError, ValueError):
    """A command-line value or an argument outside what the command accepts; the message names it."""


class MissingFileError(PvdError, FileNotFoundError):
    """A file the user named (checkpoint, parameter file, shipped model) does not exist."""
