"""Supervised loss: Lovasz-softmax against a brute-force definition, CE/Lovasz combination,
label 0 ignored, and an all-unlabeled batch that must not produce NaN."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pvd_core.config import TrainConfig
from pvd_core.data.batch import Batch
from pvd_core.losses.lovasz import lovasz_softmax
from pvd_core.losses.segmentation import segmentation_loss
from pvd_core.models.outputs import SegOutput


def brute_force_lovasz(probs: np.ndarray, labels: np.ndarray, ignore: int = 0) -> float:
    """Berman et al. eq. 8-9 from the set definition: Delta_J(S) = |S| / |G u S| on prefixes."""
    keep = labels != ignore
    probs, labels = probs[keep], labels[keep]
    losses = []
    for c in range(probs.shape[1]):
        fg = labels == c
        if not fg.any():
            continue
        errors = np.abs(fg.astype(float) - probs[:, c])
        order = np.argsort(-errors, kind="stable")
        gt = set(np.nonzero(fg)[0].tolist())
        prev, total, prefix = 0.0, 0.0, set()
        for i in order:
            prefix.add(int(i))
            jac = len(prefix) / len(gt | prefix)
            total += errors[i] * (jac - prev)
            prev = jac
        losses.append(total)
    return float(np.mean(losses)) if losses else 0.0


def test_lovasz_matches_brute_force_definition():
    g = torch.Generator().manual_seed(0)
    for n, c in ((40, 5), (73, 8)):
        probs = torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64), dim=1)
        labels = torch.randint(0, c, (n,), generator=g)
        got = float(lovasz_softmax(probs, labels, ignore_index=0))
        want = brute_force_lovasz(probs.numpy(), labels.numpy())
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_lovasz_on_hard_predictions_is_one_minus_iou():
    """At the vertices of the cube the Lovasz extension equals the Jaccard loss itself."""
    g = torch.Generator().manual_seed(1)
    n, c = 200, 6
    labels = torch.randint(1, c, (n,), generator=g)
    pred = torch.where(torch.rand(n, generator=g) < 0.7, labels, torch.randint(1, c, (n,), generator=g))
    probs = F.one_hot(pred, c).double()
    ious = []
    for k in range(1, c):
        gt_k, pr_k = labels == k, pred == k
        if gt_k.any():
            ious.append(float((gt_k & pr_k).sum()) / float((gt_k | pr_k).sum()))
    expected = 1.0 - float(np.mean(ious))
    assert float(lovasz_softmax(probs, labels)) == pytest.approx(expected, rel=1e-12)
    assert float(lovasz_softmax(F.one_hot(labels, c).double(), labels)) == pytest.approx(0.0, abs=1e-12)


def test_lovasz_ignores_label_zero_rows():
    g = torch.Generator().manual_seed(2)
    probs = torch.softmax(torch.randn(30, 4, generator=g), dim=1)
    labels = torch.randint(1, 4, (30,), generator=g)
    extra = torch.softmax(torch.randn(10, 4, generator=g) * 5, dim=1)
    with_ignored = lovasz_softmax(torch.cat([probs, extra]), torch.cat([labels, torch.zeros(10, dtype=torch.long)]))
    assert float(with_ignored) == pytest.approx(float(lovasz_softmax(probs, labels)), rel=1e-6)


def _output_and_batch(labels_p: torch.Tensor, labels_v: torch.Tensor, num_classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    p, v = labels_p.shape[0], labels_v.shape[0]
    point_to_voxel = torch.randint(0, v, (p,), generator=g)
    coords = torch.stack([torch.zeros(v, dtype=torch.int32), torch.randperm(v, generator=g).int(),
                          torch.zeros(v, dtype=torch.int32), torch.zeros(v, dtype=torch.int32)], 1)
    out = SegOutput(
        point_logits=torch.randn(p, num_classes, generator=g).requires_grad_(),
        voxel_logits=torch.randn(v, num_classes, generator=g).requires_grad_(),
        point_features=torch.randn(p, 8, generator=g), voxel_features=torch.randn(v, 8, generator=g),
        point_to_voxel=point_to_voxel, voxel_coords=coords)
    batch = Batch(point_features=torch.randn(p, 9, generator=g), point_batch=torch.zeros(p, dtype=torch.long),
                  point_to_voxel=point_to_voxel, voxel_coords=coords, batch_size=1, spatial_shape=[64, 16, 8],
                  point_labels=labels_p, voxel_labels=labels_v)
    return out, batch


def test_segmentation_loss_terms_and_total():
    g = torch.Generator().manual_seed(3)
    C = 7
    labels_p = torch.randint(0, C, (120,), generator=g)
    labels_v = torch.randint(0, C, (40,), generator=g)
    out, batch = _output_and_batch(labels_p, labels_v, C)
    cfg = TrainConfig(lovasz_weight=0.5, point_loss_weight=2.0)
    losses = segmentation_loss(out, batch, cfg)
    assert set(losses) == {"voxel_ce", "voxel_lovasz", "point_ce", "point_lovasz", "seg"}
    keep_p, keep_v = labels_p != 0, labels_v != 0
    assert losses["point_ce"].item() == pytest.approx(
        F.cross_entropy(out.point_logits[keep_p], labels_p[keep_p]).item(), rel=1e-5)
    assert losses["voxel_ce"].item() == pytest.approx(
        F.cross_entropy(out.voxel_logits[keep_v], labels_v[keep_v]).item(), rel=1e-5)
    want = (losses["voxel_ce"] + 0.5 * losses["voxel_lovasz"]
            + 2.0 * (losses["point_ce"] + 0.5 * losses["point_lovasz"]))
    assert losses["seg"].item() == pytest.approx(want.item(), rel=1e-6)
    assert all(v.item() > 0 for v in losses.values())
    losses["seg"].backward()
    assert out.point_logits.grad is not None and out.point_logits.grad.abs().sum() > 0
    assert out.voxel_logits.grad is not None and out.voxel_logits.grad.abs().sum() > 0
    # Rows labelled 0 receive no gradient at all: they are ignored by both CE and Lovasz.
    assert float(out.point_logits.grad[~keep_p].abs().sum()) == 0.0


def test_segmentation_loss_all_unlabeled_is_zero_not_nan():
    out, batch = _output_and_batch(torch.zeros(50, dtype=torch.long), torch.zeros(20, dtype=torch.long), 5)
    losses = segmentation_loss(out, batch, TrainConfig())
    for name, value in losses.items():
        assert torch.isfinite(value), name
        assert value.item() == 0.0, name
    losses["seg"].backward()
    assert torch.isfinite(out.point_logits.grad).all()


def test_segmentation_loss_names_missing_labels():
    out, batch = _output_and_batch(torch.ones(10, dtype=torch.long), torch.ones(4, dtype=torch.long), 3)
    batch.voxel_labels = None
    with pytest.raises(ValueError, match="voxel_labels"):
        segmentation_loss(out, batch, TrainConfig())
