"""Lovasz-softmax (Berman et al., CVPR 2018), the 'present classes' variant Cylinder3D uses.

The Lovasz extension of the Jaccard loss is a convex surrogate that optimises IoU
directly, which plain cross-entropy does not: it is what keeps rare classes (which
dominate mIoU but not the point count) from being drowned out. All classes are
handled at once with one column-wise sort instead of a Python loop over classes.
"""
from __future__ import annotations

import torch


def lovasz_grad_sorted(fg_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension w.r.t. errors sorted in decreasing order.

    ``fg_sorted`` is (N, C) (or (N,)): the foreground indicator of each class, each
    column ordered by that class's decreasing error. Columns are independent.
    """
    gts = fg_sorted.sum(dim=0, keepdim=True)
    intersection = gts - fg_sorted.cumsum(dim=0)
    union = gts + (1.0 - fg_sorted).cumsum(dim=0)  # >= 1 at every row, never 0
    jaccard = 1.0 - intersection / union
    if jaccard.shape[0] > 1:
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]], dim=0)
    return jaccard


def lovasz_softmax(probs: torch.Tensor, labels: torch.Tensor, ignore_index: int = 0) -> torch.Tensor:
    """Mean over the classes present in ``labels`` of the Lovasz-softmax loss.

    ``probs`` (N, C) are softmax probabilities, ``labels`` (N,) class indices. Rows whose
    label is ``ignore_index`` are left out. With no valid row, or no present class, the
    result is a zero that still depends on ``probs`` (so backward works and nothing is NaN).
    """
    if probs.dim() != 2:
        raise ValueError(f"lovasz_softmax: probs must be (N, C), got shape {tuple(probs.shape)}")
    if labels.shape != probs.shape[:1]:
        raise ValueError(
            f"lovasz_softmax: labels shape {tuple(labels.shape)} does not match probs rows {probs.shape[0]}")
    valid = labels != ignore_index
    probs_v = probs[valid]
    labels_v = labels[valid].long()
    num_classes = probs.shape[1]
    fg = torch.nn.functional.one_hot(labels_v, num_classes).to(probs.dtype)  # (N, C)
    errors = (fg - probs_v).abs()
    errors_sorted, order = torch.sort(errors, dim=0, descending=True)
    fg_sorted = torch.gather(fg, 0, order)
    per_class = (errors_sorted * lovasz_grad_sorted(fg_sorted)).sum(dim=0)  # (C,)
    present = (fg.sum(dim=0) > 0).to(probs.dtype)
    # A zero tied to probs when nothing is present: keeps the graph and avoids 0/0.
    return (per_class * present).sum() / present.sum().clamp(min=1.0) + probs.sum() * 0.0
