"""Inference-only folding of BatchNorm into the preceding Linear of the per-point MLPs.

Why: on the CPU the per-point MLPs run on every point of a scan (about 120 000 for an HDL-64),
and in eval mode each BatchNorm1d is one more full pass over a (N, C) activation that only
applies a fixed affine map. Folding it into the Linear's weight and bias
(``torch.nn.utils.fusion.fuse_linear_bn_eval``) removes that pass and its buffer, with the
same outputs up to float rounding. The ReLUs become in-place for the same reason.

Only for a model that will not train again: the folded copy has no BatchNorm statistics to
update. The Segmenter folds the models it loads from checkpoints, never a model it was handed
(training validation passes the live model).
"""
from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_linear_bn_eval


def fold_sequential(seq: nn.Sequential) -> nn.Sequential:
    """A copy of ``seq`` with every Linear -> BatchNorm1d pair folded into one Linear."""
    layers = list(seq)
    out: list[nn.Module] = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, nn.Linear) and isinstance(nxt, nn.BatchNorm1d):
            out.append(fuse_linear_bn_eval(layer, nxt))
            i += 2
            continue
        out.append(nn.ReLU(inplace=True) if isinstance(layer, nn.ReLU) else layer)
        i += 1
    return nn.Sequential(*out)


def fold_point_mlps(model: nn.Module) -> nn.Module:
    """An eval-mode copy of a Cylinder3D whose point generator and point head MLPs are folded."""
    folded = copy.deepcopy(model).eval()
    gen = folded.cylinder_3d_generator
    gen.PPmodel = fold_sequential(gen.PPmodel)
    folded.point_head.hidden = fold_sequential(folded.point_head.hidden)
    return folded
