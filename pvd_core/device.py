"""Device selection shared by training, inference, profiling and the node.

One module so that a device string means the same thing everywhere. Two steps:

- :func:`check_device` is the syntax rule (``auto | cpu | cuda | cuda:N``) and needs neither
  torch nor a GPU, so the config schema, every command's ``--device`` (through
  :func:`device_argument`) and the node's ``device`` parameter refuse a typo such as ``gpu``
  at once, on any machine, before anything heavy is loaded.
- :func:`resolve_device` additionally asks PyTorch whether that device exists. 'auto' is
  CUDA when PyTorch can see a GPU, otherwise the CPU. Asking for CUDA where there is none is
  a configuration error rather than a silent CPU fallback, because a deployment that
  expects a GPU and quietly runs seconds per scan on the CPU is worse than one that refuses
  to start.

torch is imported inside the functions that need it: this module is imported by parsers and
the config schema, whose ``--help`` and validation must stay instant.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import TYPE_CHECKING, Optional

from pvd_core.errors import UsageError

if TYPE_CHECKING:
    import torch

#: The accepted device strings, as shown in help texts and error messages.
DEVICE_SYNTAX = "auto | cpu | cuda | cuda:N"
_DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(?::\d+)?")


def check_device(name: object) -> str:
    """Return ``name`` normalised (stripped, lower case) if it is a device string, else raise.

    Syntax only: 'cuda:1' passes on a machine without a GPU (a config or launch file written
    for another machine is still well-formed); :func:`resolve_device` checks existence.
    The message names no field: callers prefix the field, option or parameter it came from.
    """
    key = name.strip().lower() if isinstance(name, str) else None
    if key is None or not _DEVICE_PATTERN.fullmatch(key):
        raise UsageError(f"must be one of {DEVICE_SYNTAX} (N: a GPU index), got {name!r}")
    return key


def device_argument(text: str) -> str:
    """argparse ``type=`` for ``--device``: :func:`check_device` with argparse's error type.

    argparse shows an ArgumentTypeError's own message ("argument --device: must be one of
    ..."); a plain ValueError would only print "invalid device_argument value".
    """
    try:
        return check_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def resolve_device(name: "str | torch.device" = "auto") -> "torch.device":
    """Turn a device string (see :func:`check_device`) or a torch.device into a usable torch.device."""
    import torch

    if isinstance(name, torch.device):
        name = str(name)
    try:
        key = check_device(name)
    except ValueError as exc:
        raise UsageError(f"device {exc}") from None
    if key == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if key == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError(
            f"device {name!r} was requested but PyTorch sees no CUDA GPU "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); use device 'auto' or 'cpu'")
    device = torch.device(key)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(
            f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) are visible "
            f"(indices 0 to {torch.cuda.device_count() - 1})")
    return device


def set_torch_threads(threads: Optional[int], where: str = "--threads") -> None:
    """Apply a CLI thread count (None: torch's default). One thread per process avoids the
    OpenMP oversubscription that slows several runs sharing few cores by up to 10x."""
    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"{where} must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def prefer_passive_openmp_wait() -> str:
    """Make OpenMP threads sleep, not spin, while they wait for work, unless the user chose a policy.

    Why: a robot's CPU is never idle. With libgomp's default (spinning) wait policy, a 2-thread
    forward on a 2-core machine took 3.4x as long when another process kept one core busy; with
    OMP_WAIT_POLICY=PASSIVE it took 1.2x as long, for about 20 % more latency on an idle machine
    (bench/results/loaded_cpu.json). libgomp reads the variable when torch loads it, so this only
    takes effect before the first ``import torch`` of the process. Returns the policy in force.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return os.environ.get("OMP_WAIT_POLICY", "default (spin)")
