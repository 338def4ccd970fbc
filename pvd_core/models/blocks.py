"""Building blocks of the asymmetric sparse UNet (docs/method.md section 2), on spconv 2.x.

The block structure, layer order (conv -> LeakyReLU -> BatchNorm) and attribute names
follow upstream Cylinder3D (segmentator_3d_asymm_spconv.py), so that converted upstream
weights load by name. One deliberate difference: upstream gave submanifold convs of
different kernel shapes one shared ``indice_key``; spconv 1.x then silently reused the
first rulebook for every shape. Here every key is ``<level>_<kernel>`` (for example
``L0_313``): a rulebook is shared only between convs that have both the same voxel set
(resolution level) and the same kernel shape, which is exactly when sharing is correct.
"""
from __future__ import annotations

from typing import Sequence

import spconv.pytorch as spconv
from torch import nn

from pvd_core.spconv_compat import BiasedSubMConv3d


def kernel_tag(kernel: Sequence[int]) -> str:
    return "".join(str(int(k)) for k in kernel)


def subm_key(level: int, kernel: Sequence[int]) -> str:
    """Rulebook key of a submanifold conv: one per (resolution level, kernel shape)."""
    return f"L{level}_{kernel_tag(kernel)}"


def down_key(level: int) -> str:
    """Rulebook key of the strided conv from ``level`` to ``level + 1`` (reused by its inverse)."""
    return f"down_L{level}"


def subm(cin: int, cout: int, kernel: Sequence[int], level: int, bias: bool = False) -> spconv.SubMConv3d:
    kernel = tuple(int(k) for k in kernel)
    padding = tuple(k // 2 for k in kernel)
    cls = BiasedSubMConv3d if bias else spconv.SubMConv3d
    return cls(cin, cout, kernel_size=kernel, stride=1, padding=padding, bias=bias,
                             indice_key=subm_key(level, kernel))


K333 = (3, 3, 3)
K133 = (1, 3, 3)  # upstream conv1x3
K313 = (3, 1, 3)  # upstream conv3x1
K311 = (3, 1, 1)
K131 = (1, 3, 1)
K113 = (1, 1, 3)


def _act_bn(x: spconv.SparseConvTensor, act: nn.Module, bn: nn.Module) -> spconv.SparseConvTensor:
    return x.replace_feature(bn(act(x.features)))


class _AsymmetricResidual(nn.Module):
    """Two asymmetric branches summed: ``first`` then ``second`` kernel, and the reverse.

    Attribute names are upstream's (conv1, bn0, ...), so state_dict keys match its weights.
    """

    def __init__(self, in_filters: int, out_filters: int, level: int,
                 first: tuple[int, int, int], second: tuple[int, int, int]):
        super().__init__()
        self.conv1 = subm(in_filters, out_filters, first, level)
        self.act1, self.bn0 = nn.LeakyReLU(), nn.BatchNorm1d(out_filters)
        self.conv1_2 = subm(out_filters, out_filters, second, level)
        self.act1_2, self.bn0_2 = nn.LeakyReLU(), nn.BatchNorm1d(out_filters)
        self.conv2 = subm(in_filters, out_filters, second, level)
        self.act2, self.bn1 = nn.LeakyReLU(), nn.BatchNorm1d(out_filters)
        self.conv3 = subm(out_filters, out_filters, first, level)
        self.act3, self.bn2 = nn.LeakyReLU(), nn.BatchNorm1d(out_filters)

    def residual(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        shortcut = _act_bn(self.conv1(x), self.act1, self.bn0)
        shortcut = _act_bn(self.conv1_2(shortcut), self.act1_2, self.bn0_2)
        res = _act_bn(self.conv2(x), self.act2, self.bn1)
        res = _act_bn(self.conv3(res), self.act3, self.bn2)
        return res.replace_feature(res.features + shortcut.features)


class ResContextBlock(_AsymmetricResidual):
    """Entry block: two asymmetric branches (1x3x3 then 3x1x3, and 3x1x3 then 1x3x3), summed."""

    def __init__(self, in_filters: int, out_filters: int, level: int = 0):
        super().__init__(in_filters, out_filters, level, K133, K313)

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        return self.residual(x)


class ResBlock(_AsymmetricResidual):
    """Asymmetric residual block followed by a stride-2 sparse conv (the encoder's down step).

    Returns (pooled, pre-pool); the pre-pool tensor is the skip connection of the decoder.
    """

    def __init__(self, in_filters: int, out_filters: int, level: int, height_pooling: bool):
        super().__init__(in_filters, out_filters, level, K313, K133)
        stride = (2, 2, 2) if height_pooling else (2, 2, 1)
        self.pool = spconv.SparseConv3d(out_filters, out_filters, kernel_size=3, stride=stride, padding=1,
                                        bias=False, indice_key=down_key(level))

    def forward(self, x: spconv.SparseConvTensor) -> tuple[spconv.SparseConvTensor, spconv.SparseConvTensor]:
        res = self.residual(x)
        return self.pool(res), res


class UpBlock(nn.Module):
    """Decoder step: 3x3x3 subm conv at the coarse level, inverse conv up, add skip, asymmetric convs.

    ``level`` is the fine (output) level; the inverse conv reuses the rulebook of the
    encoder's strided conv from that level, so its output voxels are exactly the skip's.
    """

    def __init__(self, in_filters: int, out_filters: int, level: int):
        super().__init__()
        self.trans_dilao = subm(in_filters, out_filters, K333, level + 1)
        self.trans_act, self.trans_bn = nn.LeakyReLU(), nn.BatchNorm1d(out_filters)
        self.conv1 = subm(out_filters, out_filters, K133, level)
        self.act1, self.bn1 = nn.LeakyReLU(), nn.BatchNorm1d(out_filters)
        self.conv2 = subm(out_filters, out_filters, K313, level)
        self.act2, self.bn2 = nn.LeakyReLU(), nn.BatchNorm1d(out_filters)
        self.conv3 = subm(out_filters, out_filters, K333, level)
        self.act3, self.bn3 = nn.LeakyReLU(), nn.BatchNorm1d(out_filters)
        self.up_subm = spconv.SparseInverseConv3d(out_filters, out_filters, kernel_size=3, bias=False,
                                                  indice_key=down_key(level))

    def forward(self, x: spconv.SparseConvTensor, skip: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        up = _act_bn(self.trans_dilao(x), self.trans_act, self.trans_bn)
        up = self.up_subm(up)
        up = up.replace_feature(up.features + skip.features)
        up = _act_bn(self.conv1(up), self.act1, self.bn1)
        up = _act_bn(self.conv2(up), self.act2, self.bn2)
        return _act_bn(self.conv3(up), self.act3, self.bn3)


class ReconBlock(nn.Module):
    """DDCM: three rank-1 subm convs (3x1x1, 1x3x1, 1x1x3), BN + sigmoid each, summed, times input."""

    def __init__(self, in_filters: int, out_filters: int, level: int = 0):
        super().__init__()
        self.conv1 = subm(in_filters, out_filters, K311, level)
        self.bn0, self.act1 = nn.BatchNorm1d(out_filters), nn.Sigmoid()
        self.conv1_2 = subm(in_filters, out_filters, K131, level)
        self.bn0_2, self.act1_2 = nn.BatchNorm1d(out_filters), nn.Sigmoid()
        self.conv1_3 = subm(in_filters, out_filters, K113, level)
        self.bn0_3, self.act1_3 = nn.BatchNorm1d(out_filters), nn.Sigmoid()

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        a = self.act1(self.bn0(self.conv1(x).features))
        b = self.act1_2(self.bn0_2(self.conv1_2(x).features))
        c = self.act1_3(self.bn0_3(self.conv1_3(x).features))
        return x.replace_feature((a + b + c) * x.features)
