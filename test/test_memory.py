"""pvd_core.memory: the malloc tuning takes effect (page faults counted, in fresh processes)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.subprocess  # slow tier (markers in setup.cfg)

# A 24 MiB block allocated, written and freed three times; page faults of each round.
PROBE = textwrap.dedent("""
    import ctypes, json, resource, sys
    from pvd_core.memory import retain_freed_memory
    tuned = retain_freed_memory() if sys.argv[1] == "tuned" else None
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    size = 24 * 2**20
    faults = []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps({"tuned": tuned, "faults": faults}))
""")


def probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_retained_memory_is_not_faulted_in_again():
    pages = 24 * 2**20 // 4096
    default, tuned = probe("default"), probe("tuned")
    assert tuned["tuned"] is True
    # glibc's defaults: the first two rounds each fault the whole block in (mmap, then a heap
    # extension that was given back); tuned, only the first round does.
    assert default["faults"][1] > pages // 2, default
    assert tuned["faults"][0] > pages // 2, tuned
    assert tuned["faults"][1] < pages // 20 and tuned["faults"][2] < pages // 20, tuned
