"""The ROS-side commands: ``pvd_bag`` subcommands (from_kitti, eval, replay) and ``pvd_demo``.

Same scheme as pvd_core.commands (``add_arguments(parser)``, ``run(args) -> int``); ``pvd_ros.cli``
dispatches them. Heavy imports (torch, rclpy) happen inside ``run``, so ``--help`` is instant.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence


def write_json_report(report: dict, path: Optional[Path], argv: Sequence[str]) -> None:
    """The report (less its text table) as JSON, with the ``pvd_bag`` command line that made it."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"command": " ".join(["pvd_bag", *argv]), **{k: v for k, v in report.items() if k != "table"}}
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {path}")
