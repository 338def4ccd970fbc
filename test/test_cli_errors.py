"""One error policy for every command: a user error (pvd_core.errors.PvdError) is one line naming the
command, exit status 1; any other exception is a bug and keeps its traceback."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pvd_core.cli import main as pvd_main
from pvd_core.commands import Command, dispatch
from pvd_ros.cli import bag_main, demo_main

HERE = Path(__file__).resolve().parent


# This module doubles as a command ("bug") whose run() hits a genuine bug: a NaN reaching int(),
# the kind of bare ValueError the commands used to print as one line and hide.
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--value", type=float, default=float("nan"))


def run(args: argparse.Namespace) -> int:
    return int(args.value)  # ValueError: cannot convert float NaN to integer


def one_line_error(capsys: pytest.CaptureFixture, prefix: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(prefix) and "Traceback" not in err, err
    return lines[0]


def test_user_errors_are_one_line_naming_the_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "missing.yaml"
    assert pvd_main(["train", "--config", str(missing), "--out", str(tmp_path / "run")]) == 1
    assert str(missing) in one_line_error(capsys, "pvd train: error: ")
    # Formerly bare ValueErrors of command-line values are UsageErrors now: still one line.
    assert pvd_main(["profile", "--config", str(missing), "--scan", "x.bin", "--repeat", "-1"]) == 1
    assert "--repeat" in one_line_error(capsys, "pvd profile: error: ")
    assert bag_main(["from-kitti", "--data-root", str(tmp_path), "--sequence", "00", "--out", str(tmp_path / "b"),
                     "--rate", "0"]) == 1
    assert "--rate" in one_line_error(capsys, "pvd_bag from-kitti: error: ")
    assert demo_main(["--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "demo")]) == 1
    assert "nope.pt" in one_line_error(capsys, "pvd_demo: error: ")


def test_a_genuine_bug_keeps_its_exception_and_traceback() -> None:
    commands = {"bug": Command(__name__, "a command with a bug")}
    with pytest.raises(ValueError, match="NaN"):
        dispatch("pvd", "test", commands, ["bug"])


@pytest.mark.subprocess
def test_a_genuine_bug_in_a_console_process_prints_the_traceback() -> None:
    code = ("import sys; from pvd_core.commands import Command, dispatch; "
            "sys.exit(dispatch('pvd', 'test', {'bug': Command('test_cli_errors', 'bug')}, ['bug']))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent)]), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ValueError" in proc.stderr and "in run" in proc.stderr, proc.stderr
