"""Process-wide allocator tuning for long-running inference processes (the ROS node).

Why: glibc's malloc serves every block above its mmap threshold (128 KiB at start, raised
on the fly up to 32 MiB) with a fresh ``mmap`` and returns heap tops above its trim
threshold to the kernel. A segmentation node allocates and frees buffers of several
megabytes per scan (message conversions in rclpy and the DDS layer, the network's
activations), so it page-faults them in again on every scan. On the virtual machines here
one fault costs microseconds: a 2 MB cloud in plus a 3.5 MB labelled cloud out through rclpy
took 13.9 ms with the defaults and 3.7 ms with the thresholds below (bench/transport.py).

The price is resident memory: freed blocks stay with the process for reuse, so RSS stays at
its per-scan peak instead of falling back between scans (a node reaches that peak every
scan anyway).
"""
from __future__ import annotations

import ctypes
import sys

# mallopt parameters from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 2**20  # glibc's largest accepted value on 64-bit systems
TRIM_THRESHOLD = 2**30


def retain_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Keep freed blocks up to ``mmap_threshold`` bytes in the heap, and up to
    ``trim_threshold`` bytes of free heap top, instead of returning them to the kernel.

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
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) and mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
