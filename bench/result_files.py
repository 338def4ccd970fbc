"""How the benchmarks write their committed results: JSON, a Markdown report and a picture."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parents[1]


def repo_relative(path: Optional[Path]) -> Optional[str]:
    """How a results file names another file: relative to the repo when inside it."""
    if path is None:
        return None
    path = Path(path).resolve()
    return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)


def figure(figsize: tuple[float, float]) -> tuple[Any, Any]:
    """A new (figure, axes) on the file-only Agg backend (benches run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out, write (creating the folder) and close ``fig``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(doc: dict[str, Any], results: Path, plot: Callable[[dict[str, Any], Path], None],
                 markdown: Callable[[dict[str, Any], Path], None]) -> Path:
    """Draw ``doc['png']``, then write ``results`` (JSON) and its .md; returns the .md path."""
    plot(doc, REPO / doc["png"])
    results.write_text(json.dumps(doc, indent=2) + "\n")
    report = results.with_suffix(".md")
    markdown(doc, report)
    return report
