"""The spconv CPU workarounds, checked against dense torch.nn.functional references.

The gradient test runs a small SubM -> strided -> inverse -> SubM stack forward and
backward and compares every gradient with the same computation done densely with
conv3d / conv_transpose3d. Without ``ensure_cpu_backward`` the sparse backward raises on
CPU-only torch, so this test fails if the workaround is removed. Everything here runs
with two intra-op threads, where spconv's unpatched CPU scatter-add races.
"""
from __future__ import annotations

import pytest
import spconv.pytorch as spconv
import torch
import torch.nn.functional as F

import pvd_core.models.cylinder3d  # noqa: F401  (applies the workaround at import, like real use)
from pvd_core import spconv_compat
from pvd_core.spconv_compat import BiasedSubMConv3d, ensure_cpu_backward

SHAPE = [8, 10, 6]


@pytest.fixture(autouse=True)
def two_threads():
    """Two OpenMP threads: the setting in which spconv's own CPU scatter-add is wrong."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _sparse_input(seed: int = 0, channels: int = 3):
    g = torch.Generator().manual_seed(seed)
    active = torch.rand(2, *SHAPE, generator=g) < 0.35
    # torch.nonzero returns a column-major tensor; spconv needs contiguous int32 indices.
    coords = active.nonzero().to(torch.int32).contiguous()
    feats = torch.randn(coords.shape[0], channels, generator=g, dtype=torch.float64).float()
    return coords, feats


def _to_dense(feats: torch.Tensor, coords: torch.Tensor, shape, batch: int = 2) -> torch.Tensor:
    """(B, C, *shape) tensor holding ``feats`` at ``coords`` and zeros elsewhere (differentiable)."""
    c = coords.long()
    dense = feats.new_zeros(batch, *shape, feats.shape[1])  # channels last for row indexing
    dense = dense.index_put((c[:, 0], c[:, 1], c[:, 2], c[:, 3]), feats)
    return dense.permute(0, 4, 1, 2, 3)


def _gather(dense: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    c = coords.long()
    return dense.permute(0, 2, 3, 4, 1)[c[:, 0], c[:, 1], c[:, 2], c[:, 3]]


def _dense_weight(w: torch.Tensor) -> torch.Tensor:
    """spconv 2.x (Cout, k1, k2, k3, Cin) -> conv3d (Cout, Cin, k1, k2, k3)."""
    return w.permute(0, 4, 1, 2, 3)


def test_workaround_is_active_on_cpu_only_torch():
    if torch.cuda.is_available():
        assert ensure_cpu_backward() is False
        assert not spconv_compat.is_patched()
    else:
        assert ensure_cpu_backward() is True
        assert spconv_compat.is_patched()
        assert ensure_cpu_backward() is True  # idempotent


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU stream failure only exists on CPU-only torch")
def test_sparse_backward_fails_without_the_workaround():
    """Proves the patch is needed: with spconv's own stream lookup, CPU backward raises."""
    import spconv.pytorch.ops as ops

    coords, feats = _sparse_input()
    conv = spconv.SubMConv3d(3, 4, 3, padding=1, bias=False, indice_key="k")
    original = spconv_compat.original_get_current_stream()
    assert original is not None
    ops.get_current_stream = original
    try:
        out = conv(spconv.SparseConvTensor(feats.requires_grad_(), coords, SHAPE, 2))
        with pytest.raises((RuntimeError, AssertionError), match="CUDA"):
            out.features.sum().backward()
    finally:
        ensure_cpu_backward()
    assert spconv_compat.is_patched()


def test_sparse_stack_gradients_match_dense_conv3d():
    torch.manual_seed(0)
    coords, feats0 = _sparse_input(seed=1)
    sub1 = spconv.SubMConv3d(3, 5, 3, padding=1, bias=False, indice_key="s333")
    down = spconv.SparseConv3d(5, 6, 3, stride=2, padding=1, bias=False, indice_key="down")
    up = spconv.SparseInverseConv3d(6, 5, 3, bias=False, indice_key="down")
    sub2 = spconv.SubMConv3d(5, 4, (3, 1, 3), padding=(1, 0, 1), bias=False, indice_key="s313")

    feats = feats0.clone().requires_grad_()
    x = spconv.SparseConvTensor(feats, coords, SHAPE, 2)
    a = sub1(x)
    b = down(a)
    c = up(b)
    d = sub2(c.replace_feature(c.features + a.features))
    assert torch.equal(d.indices, coords)  # inverse conv returns exactly the fine voxel set
    probe = torch.randn(d.features.shape, generator=torch.Generator().manual_seed(2))
    (d.features * probe).sum().backward()

    # Dense reference with the same weights; masks keep the sparse semantics.
    dfeats = feats0.clone().requires_grad_()
    wd = {name: _dense_weight(m.weight.detach()).clone().requires_grad_()
          for name, m in (("sub1", sub1), ("down", down), ("sub2", sub2))}
    w_up = up.weight.detach().permute(4, 0, 1, 2, 3).clone().requires_grad_()  # (Cin, Cout, k, k, k)
    fine = _to_dense(dfeats, coords, SHAPE)
    mask0 = _to_dense(torch.ones(len(coords), 1), coords, SHAPE)
    da = F.conv3d(fine, wd["sub1"], padding=1) * mask0
    db = F.conv3d(da, wd["down"], stride=2, padding=1)
    coarse_coords = b.indices
    mask1 = _to_dense(torch.ones(len(coarse_coords), 1), coarse_coords, db.shape[2:])
    db = db * mask1
    out_pad = [s - ((cs - 1) * 2 - 2 + 3) for s, cs in zip(SHAPE, db.shape[2:])]
    dc = F.conv_transpose3d(db, w_up, stride=2, padding=1, output_padding=out_pad) * mask0
    dd = F.conv3d(dc + da, wd["sub2"], padding=(1, 0, 1)) * mask0
    dense_out = _gather(dd, coords)
    torch.testing.assert_close(d.features, dense_out, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(_gather(db, coarse_coords), b.features, rtol=1e-4, atol=1e-4)
    (dense_out * probe).sum().backward()

    torch.testing.assert_close(feats.grad, dfeats.grad, rtol=1e-4, atol=1e-4)
    for name, m in (("sub1", sub1), ("down", down), ("sub2", sub2)):
        torch.testing.assert_close(_dense_weight(m.weight.grad), wd[name].grad, rtol=1e-4, atol=1e-4,
                                   msg=lambda s, n=name: f"weight gradient of {n}: {s}")
    torch.testing.assert_close(up.weight.grad.permute(4, 0, 1, 2, 3), w_up.grad, rtol=1e-4, atol=1e-4)
    assert feats.grad.abs().sum() > 0


def test_cpu_scatter_add_is_race_free_with_two_threads():
    import spconv.pytorch.ops as ops
    from spconv.pytorch.cppcore import torch_tensor_to_tv

    assert spconv_compat.scatter_is_patched()
    g = torch.Generator().manual_seed(0)
    wrong = 0
    for _ in range(100):
        inds = torch.randperm(5000, generator=g)[:3000].to(torch.int32)
        rows = torch.randn(3100, 16, generator=g)  # spconv's buffers are longer than the index list
        out = torch.randn(5000, 16, generator=g)
        expected = out.index_add(0, inds.long(), rows[:3000])
        ops.SpconvOps.scatter_add_cpu(torch_tensor_to_tv(out), torch_tensor_to_tv(rows), torch_tensor_to_tv(inds))
        wrong += not torch.equal(out, expected)
    assert wrong == 0, f"{wrong} of 100 scatter-adds were wrong"
    assert torch.get_num_threads() == 2  # the wrapper restores the thread count


def test_biased_subm_conv_works_in_eval_mode_on_cpu():
    """spconv fuses the bias in eval mode with a CUDA-only kernel; the subclass must not."""
    torch.manual_seed(0)
    coords, feats = _sparse_input(seed=3)
    conv = BiasedSubMConv3d(3, 4, 3, padding=1, bias=True, indice_key="b").eval()
    with torch.inference_mode():
        out = conv(spconv.SparseConvTensor(feats, coords, SHAPE, 2))
    dense = F.conv3d(_to_dense(feats, coords, SHAPE), _dense_weight(conv.weight.detach()),
                     bias=conv.bias.detach(), padding=1)
    torch.testing.assert_close(out.features, _gather(dense, coords), rtol=1e-4, atol=1e-4)
    if not torch.cuda.is_available():
        plain = spconv.SubMConv3d(3, 4, 3, padding=1, bias=True, indice_key="b").eval()
        with pytest.raises(AssertionError, match="cpu don't support"), torch.inference_mode():
            plain(spconv.SparseConvTensor(feats, coords, SHAPE, 2))
