"""Bird's-eye pictures of labelled scans, for eval reports (`pvd_bag eval`, `pvd eval`).

A top-down x/y scatter is the quickest way for a person to see *where* a model is wrong
(a road labelled sidewalk, a car smeared into the building); numbers alone do not show it.
Matplotlib's Agg backend only, so it works on headless machines and in CI.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from pvd_core.labels import LabelMap

# Enough points to read the scene, few enough that a 120k-point scan plots in about a second.
DEFAULT_MAX_POINTS = 60000


def save_bev_png(
    points: np.ndarray,
    pred: np.ndarray,
    label_map: LabelMap,
    path: Union[str, Path],
    gt: Optional[np.ndarray] = None,
    title: Optional[str] = None,
    max_points: int = DEFAULT_MAX_POINTS,
    extent_m: Optional[float] = 50.0,
) -> Path:
    """Top-down scatter coloured by class: prediction left, ground truth right (if given).

    ``points`` (N, >=2) and the (N,) class-index arrays are aligned point by point. Points
    are subsampled with a fixed stride to ``max_points`` (the same points in both panels).
    ``extent_m`` crops the view to +-extent metres around the sensor (None: all points).
    The legend lists the classes present in either panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    points = np.asarray(points)
    pred = np.asarray(pred).reshape(-1)
    if points.ndim != 2 or points.shape[1] < 2:
        raise ValueError(f"save_bev_png: points must be (N, >=2), got shape {points.shape}")
    n = points.shape[0]
    if pred.shape[0] != n:
        raise ValueError(f"save_bev_png: {pred.shape[0]} predictions for {n} points")
    panels = [("prediction", pred)]
    if gt is not None:
        gt = np.asarray(gt).reshape(-1)
        if gt.shape[0] != n:
            raise ValueError(f"save_bev_png: {gt.shape[0]} ground-truth labels for {n} points")
        panels.append(("ground truth", gt))
    for name, labels in panels:
        if n and (int(labels.min()) < 0 or int(labels.max()) >= label_map.num_classes):
            raise ValueError(f"save_bev_png: {name} labels must lie in [0, {label_map.num_classes - 1}] "
                             f"({label_map.name} map), got [{int(labels.min())}, {int(labels.max())}]")

    keep = np.isfinite(points[:, :2]).all(axis=1)
    if extent_m is not None:
        keep &= (np.abs(points[:, 0]) <= extent_m) & (np.abs(points[:, 1]) <= extent_m)
    index = np.flatnonzero(keep)
    if max_points > 0 and index.size > max_points:
        index = index[np.linspace(0, index.size - 1, max_points).astype(np.int64)]
    xy = points[index, :2]
    colors = label_map.color_array().astype(np.float32) / 255.0

    fig, axes = plt.subplots(1, len(panels), figsize=(7.0 * len(panels), 8.0), squeeze=False)
    for ax, (name, labels) in zip(axes[0], panels):
        ax.scatter(xy[:, 0], xy[:, 1], c=colors[labels[index].astype(np.int64)], s=1.5, marker=".",
                   linewidths=0)
        ax.set_aspect("equal")
        ax.set_title(name)
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
        ax.set_facecolor("#f4f4f4")
    present = np.unique(np.concatenate([labels[index] for _, labels in panels]).astype(np.int64))
    handles = [Patch(color=colors[c], label=label_map.class_names[c]) for c in present]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
