"""Last-resort hang guard for the test suite (an autouse fixture; test/conftest.py imports it).

pytest-timeout (``--timeout`` in .ci/setup) fails a slow test through SIGALRM, which Python only
handles when the main thread returns to the interpreter; a test stuck inside a C call (a DDS
publish or shutdown holding the GIL) never does, and CI then dies at its own limit with no trace.
faulthandler's C watchdog needs no GIL: after PVD_TEST_HANG_S seconds (default 1200) in one test
it writes every thread's stack to PVD_TEST_HANG_LOG (which .ci/setup prints) and exits the run.
Unset PVD_TEST_HANG_LOG (the default outside CI) and it does nothing.
"""
from __future__ import annotations

import faulthandler
import os

import pytest


@pytest.fixture(autouse=True)
def hang_watchdog(request: pytest.FixtureRequest):
    seconds = float(os.environ.get("PVD_TEST_HANG_S", "1200"))
    log_path = os.environ.get("PVD_TEST_HANG_LOG")
    if not log_path or seconds <= 0:
        yield
        return
    with open(log_path, "w") as log:  # holds only the running test's header until it hangs
        log.write(f"=== {request.node.nodeid}: still running after {seconds:.0f} s; every thread's stack:\n")
        log.flush()
        faulthandler.dump_traceback_later(seconds, exit=True, file=log)
        try:
            yield
        finally:
            faulthandler.cancel_dump_traceback_later()
            log.truncate(0)
