"""The CI hang guard (test/hang_watchdog.py) really ends a run stuck in one test, with the stack."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess  # slow tier (markers in setup.cfg)

HERE = Path(__file__).resolve().parent


def run_pytest(tmp_path: Path, test_file: str, source: str, hang_s: int) -> tuple[subprocess.CompletedProcess, str]:
    """pytest on one written test file with only the watchdog plugin; returns the run and the dump."""
    (tmp_path / test_file).write_text(source)
    log = tmp_path / "hang.txt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
               PVD_TEST_HANG_S=str(hang_s), PVD_TEST_HANG_LOG=str(log))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "hang_watchdog",
                          "--rootdir", str(tmp_path), str(tmp_path / test_file)],
                         env=env, capture_output=True, text=True, timeout=60)
    return run, log.read_text()


def test_a_stuck_test_is_dumped_and_the_run_ends(tmp_path: Path) -> None:
    run, dump = run_pytest(tmp_path, "test_stuck.py",
                           "import time\n\ndef test_quick():\n    pass\n\ndef test_stuck():\n    time.sleep(120)\n", 2)
    assert run.returncode != 0
    assert dump.startswith("=== test_stuck.py::test_stuck: still running after 2 s")
    assert 'test_stuck.py", line 7 in test_stuck' in dump  # the stuck line, from the C watchdog


def test_a_passing_run_leaves_no_dump(tmp_path: Path) -> None:
    run, dump = run_pytest(tmp_path, "test_fine.py", "def test_fine():\n    pass\n", 30)
    assert run.returncode == 0, run.stdout + run.stderr
    assert dump == ""
