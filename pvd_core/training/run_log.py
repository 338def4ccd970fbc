"""The metrics log of a run (one JSON object per line) and its loss-curve PNG.

JSON lines rather than one JSON document because a run killed with SIGKILL leaves
every line written before the kill readable; a resumed run first drops the lines
logged after its checkpoint (:meth:`MetricsLog.truncate_after`) so that the log of a
resumed run reads like the log of an uninterrupted one.

Line kinds: ``{"kind": "train", "step", "epoch", "lr", <every loss term>, "scans_per_s",
"time"}`` every ``train.log_every`` steps, and ``{"kind": "val", "step", "miou", ...}``
after each validation.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Union

from pvd_core.data.semantickitti import DataError

PathLike = Union[str, Path]


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null so every line stays parseable."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class MetricsLog:
    """Append-only JSON-lines file, flushed and fsynced per line (it must survive a kill)."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(_clean(record), sort_keys=False)
        with self.path.open("a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def truncate_after(self, step: int) -> int:
        """Drop records with ``step`` > ``step`` (and a torn last line); returns how many were dropped."""
        if not self.path.is_file():
            return 0
        records = read_metrics(self.path)
        kept = [r for r in records if int(r.get("step", 0)) <= step]
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(self.path)
        return len(records) - len(kept)


def read_metrics(path: PathLike) -> list[dict[str, Any]]:
    """All complete records of a metrics log; a torn last line (killed mid-write) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # the write a SIGKILL interrupted
            raise DataError(f"{path}: line {i + 1} is not valid JSON")
    return records


LOSS_SKIP = {"kind", "step", "epoch", "lr", "time", "scans_per_s", "steps_per_s", "elapsed_s"}


def plot_curves(records: Iterable[dict[str, Any]], path: PathLike, title: str = "") -> Path:
    """Loss terms (log scale) and validation mIoU against the step, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = list(records)
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val" and r.get("miou") is not None]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(12, 4.5))
    terms = []
    for r in train:
        for k, v in r.items():
            if k not in LOSS_SKIP and isinstance(v, (int, float)) and k not in terms:
                terms.append(k)
    for term in terms:
        pts = [(r["step"], r[term]) for r in train if isinstance(r.get(term), (int, float)) and r[term] > 0]
        if pts:
            xs, ys = zip(*pts)
            ax_loss.plot(xs, ys, label=term, linewidth=2.0 if term in ("loss", "seg", "pvd") else 1.0)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    if any(ax_loss.get_lines()):
        ax_loss.set_yscale("log")
        ax_loss.legend(fontsize=7, ncol=2)
    ax_loss.set_title("training losses")
    ax_loss.grid(alpha=0.3)
    if val:
        ax_val.plot([r["step"] for r in val], [r["miou"] for r in val], "o-", color="tab:green")
    ax_val.set_xlabel("step")
    ax_val.set_ylabel("validation mIoU (%)")
    ax_val.set_title("validation mIoU")
    ax_val.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path
