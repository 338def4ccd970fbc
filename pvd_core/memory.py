"""Process-wide allocator tuning for long-running inference processes (the ROS node).

Why: glibc's malloc serves every block above its mmap threshold (128 KiB at start, raised
on the fly up to 32 MiB) with a fresh ``mmap`` and returns heap tops above its trim
threshold to the kernel. A segmentation node allocates and frees buffers of several
megabytes per scan (message conversions in rclpy and the DDS layer, the network's
activations), so it page-faults them in again on every scan. On virtual machines one fault
costs microseconds, which adds up to milliseconds per scan for the rclpy round trip of a
64-beam cloud; ``bench/transport.py`` measures it with and without the thresholds below
(figures in docs/platform.md, section "Allocator settings").

The price is resident memory: freed blocks stay with the process for reuse, so RSS stays at
its per-scan peak instead of falling back between scans (a node reaches that peak every
scan anyway).
"""
from __future__ import annotations

import ctypes
import sys

# mallopt parameters from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4

MMAP_THRESHOLD = 32 * 2**20  # glibc's largest accepted value on 64-bit systems
TRIM_THRESHOLD = 2**30


def retain_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD,
                        training: bool = False) -> bool:
    """Keep freed blocks up to ``mmap_threshold`` bytes in the heap, and up to
    ``trim_threshold`` bytes of free heap top, instead of returning them to the kernel.

    ``training``: also serve blocks above the 32 MiB ceiling of the mmap threshold from the heap
    (no mmap at all, 1 GiB top pad, no trimming). A training step on a 120 k-point scan frees
    and re-allocates activations of 100 MB and more, which glibc would otherwise map and unmap
    every step. Peak RSS rises by about a fifth (measured: 5.2 instead of 4.3 GB).

    Returns False, changing nothing, where the C library is not glibc (macOS, musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if training:
        return bool(mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TOP_PAD, 2**30) and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) and mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
