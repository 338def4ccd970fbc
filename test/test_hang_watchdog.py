"""The CI hang guard (test/hang_watchdog.py) really ends a run stuck in one test, with the stack."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess  # slow tier (markers in setup.cfg)

HERE = Path(__file__).resolve().parent


def test_a_stuck_test_is_dumped_and_the_run_ends(tmp_path: Path) -> None:
    (tmp_path / "test_stuck.py").write_text(
        "import time\n\ndef test_quick():\n    pass\n\ndef test_stuck():\n    time.sleep(120)\n")
    log = tmp_path / "hang.txt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
               PVD_TEST_HANG_S="2", PVD_TEST_HANG_LOG=str(log))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "hang_watchdog",
                          "--rootdir", str(tmp_path), str(tmp_path / "test_stuck.py")],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    dump = log.read_text()
    assert dump.startswith("=== test_stuck.py::test_stuck: still running after 2 s")
    assert 'test_stuck.py", line 7 in test_stuck' in dump  # the stuck line, from the C watchdog


def test_a_passing_run_leaves_no_dump(tmp_path: Path) -> None:
    (tmp_path / "test_fine.py").write_text("def test_fine():\n    pass\n")
    log = tmp_path / "hang.txt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
               PVD_TEST_HANG_S="30", PVD_TEST_HANG_LOG=str(log))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "hang_watchdog",
                          "--rootdir", str(tmp_path), str(tmp_path / "test_fine.py")],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert log.read_text() == ""
