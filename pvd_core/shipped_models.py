"""The models shipped with the package, where an installed copy finds them, and what they may be used for.

One place for the default checkpoint of the node, the launch file, ``pvd_bag`` and the demo:
``semantickitti_student_pvd.pt`` (real HDL-64 street scenes; non-commercial, because it was
trained on SemanticKITTI) and ``synthetic_student_pvd.pt`` (synthetic streets; no data licence
attached) for unencumbered use.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from pvd_core.errors import MissingFileError

DEFAULT_MODEL = "semantickitti_student_pvd.pt"
SYNTHETIC_MODEL = "synthetic_student_pvd.pt"
SEMANTICKITTI_LICENCE = ("CC BY-NC-SA 4.0 (trained on SemanticKITTI: KITTI scans CC BY-NC-SA 3.0, SemanticKITTI "
                         "labels CC BY-NC-SA 4.0): non-commercial use only, share alike")


def share_dirs(folder: str) -> list[Path]:
    """Where a shipped folder (``models``, ``config``) lives: the source tree, then installed
    ``share/pvd_ros/<folder>`` (pip's prefix, then each AMENT_PREFIX_PATH entry)."""
    dirs = [Path(__file__).resolve().parents[1] / folder, Path(sys.prefix) / "share" / "pvd_ros" / folder]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            dirs.append(Path(prefix) / "share" / "pvd_ros" / folder)
    return dirs


def shipped_model(name: str = DEFAULT_MODEL) -> Path:
    """The path of a shipped model; FileNotFoundError naming every place looked in."""
    tried = [d / name for d in share_dirs("models")]
    for path in tried:
        if path.is_file():
            return path
    raise MissingFileError(f"shipped model {name} not found (looked in {', '.join(str(p) for p in tried)}); "
                            "give a checkpoint path")


def model_card(meta: Mapping[str, Any]) -> str:
    """One line on what a checkpoint was trained on and under which terms, for start-up logs."""
    data = meta.get("trained_on") or meta.get("dataset") or "unknown data"
    licence = meta.get("licence")
    text = f"trained on {data}"
    if meta.get("miou_note"):
        text += f"; {meta['miou_note']}"
    if licence:
        return f"{text}; licence: {licence}"
    if "licence" in meta:  # exported with --licence none: data without terms of its own
        return f"{text}; no data licence attached"
    return f"{text}; no data licence recorded"


def announce_model(checkpoint: Optional[Union[str, Path]], prog: str) -> Path:
    """``checkpoint``, or the shipped default when None; prints what it is and its terms.

    Commands call this before they load a model, so that a user always sees which weights run and
    under which licence (SemanticKITTI-trained weights are non-commercial). On stdout: stderr carries
    only errors, one line each.
    """
    from pvd_core.checkpoint import load_checkpoint

    path = Path(checkpoint) if checkpoint is not None else shipped_model()
    print(f"{prog}: model {path}: {model_card(load_checkpoint(path).meta)}", flush=True)
    return path
