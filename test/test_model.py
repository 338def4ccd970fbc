"""Cylinder3D with a point head on real spconv: shapes, voxel order, gradients, indice keys."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from spconv.pytorch.conv import SparseConvolution

from pvd_core.config import config_from_dict
from pvd_core.data.batch import collate_scans
from pvd_core.models.cylinder3d import Cylinder3D, build_model
from pvd_core.voxelizer import CylindricalVoxelizer

GRID = [32, 32, 8]


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def tiny_config(init_size: int = 4, kind: str = "semantickitti"):
    return config_from_dict({"dataset": {"kind": kind}, "grid": {"size": GRID}, "model": {"init_size": init_size}})


def random_cloud(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    r, a, z = rng.uniform(1, 48, n), rng.uniform(-np.pi, np.pi, n), rng.uniform(-3.5, 1.5, n)
    pts = np.stack([r * np.cos(a), r * np.sin(a), z, rng.uniform(0, 1, n)], 1).astype(np.float32)
    return pts, rng.integers(0, 20, n)


def tiny_batch(cfg, sizes=(1500, 1100)):
    vox = CylindricalVoxelizer(cfg.grid)
    scans = [vox(*random_cloud(n, seed)) for seed, n in enumerate(sizes)]
    return collate_scans(scans, cfg.grid.size)


@pytest.mark.parametrize("init_size", [8, 16])
def test_forward_shapes_batch_of_two(init_size):
    torch.manual_seed(0)
    cfg = tiny_config(init_size)
    model = build_model(cfg)
    batch = tiny_batch(cfg)
    assert batch.batch_size == 2
    out = model(batch)
    P, V, C = batch.num_points, batch.num_voxels, 20
    assert out.point_logits.shape == (P, C)
    assert out.voxel_logits.shape == (V, C)  # occupied voxels only
    assert out.point_features.shape == (P, 64)
    assert out.voxel_features.shape == (V, 2 * init_size)
    assert torch.equal(out.point_to_voxel, batch.point_to_voxel)
    assert torch.equal(out.voxel_coords, batch.voxel_coords)
    assert torch.isfinite(out.point_logits).all() and torch.isfinite(out.voxel_logits).all()


def test_voxel_rows_follow_batch_voxel_order():
    """The head's sparse output must sit on exactly Batch.voxel_coords, in that order."""
    torch.manual_seed(0)
    cfg = tiny_config(4)
    model = build_model(cfg).eval()
    batch = tiny_batch(cfg)
    seen = {}

    def keep_indices(module, inputs, output) -> None:
        seen["indices"] = output.indices.clone()

    handle = model.cylinder_3d_spconv_seg.logits.register_forward_hook(keep_indices)
    with torch.inference_mode():
        out = model(batch)
    handle.remove()
    assert torch.equal(seen["indices"], batch.voxel_coords)
    assert out.voxel_logits.shape[0] == batch.num_voxels


def test_widths_build_with_the_documented_parameter_counts():
    counts = {}
    for s in (8, 16, 32, 48):
        with torch.device("meta"):  # no memory or init time for the 1.5x model
            model = build_model(config_from_dict({"model": {"init_size": s}}))
        counts[s] = sum(p.numel() for p in model.parameters())
        assert model.voxel_feature_dim == 2 * s
    assert 54e6 < counts[32] < 58e6  # docs/method.md section 2: about 56 M
    assert 13e6 < counts[16] < 15e6  # about 14 M
    assert counts[16] <= 0.27 * counts[32]
    assert counts[8] < counts[16] < counts[32] < counts[48]


def test_num_classes_from_label_map():
    assert build_model(tiny_config(4, "semantickitti")).num_classes == 20
    assert build_model(tiny_config(4, "nuscenes")).num_classes == 17


def test_backward_reaches_every_parameter_on_cpu():
    torch.manual_seed(0)
    cfg = tiny_config(4)
    model = build_model(cfg).train()
    batch = tiny_batch(cfg)
    out = model(batch)
    loss = (F.cross_entropy(out.point_logits, batch.point_labels, ignore_index=0)
            + F.cross_entropy(out.voxel_logits, batch.voxel_labels, ignore_index=0))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient reached: {missing}"


def test_indice_keys_are_distinct_per_kernel_shape():
    model = build_model(tiny_config(4))
    by_key: dict[str, list[SparseConvolution]] = {}
    for m in model.modules():
        if isinstance(m, SparseConvolution):
            assert m.indice_key, f"{m} has no indice_key"
            by_key.setdefault(m.indice_key, []).append(m)
    for key, mods in by_key.items():
        shapes = {tuple(m.kernel_size) for m in mods}
        assert len(shapes) == 1, f"indice_key {key!r} shared by kernel shapes {shapes} (the upstream defect)"
        if any(m.subm for m in mods):
            assert all(m.subm for m in mods), f"{key!r} mixes submanifold and strided convs"
        else:  # one strided conv and the inverse conv that reuses its rulebook
            assert sorted(m.inverse for m in mods) == [False, True], key
    # The asymmetric blocks really use several kernel shapes at full resolution.
    level0 = {tuple(m.kernel_size) for k, mods in by_key.items() if k.startswith("L0_") for m in mods}
    assert {(1, 3, 3), (3, 1, 3), (3, 3, 3), (3, 1, 1), (1, 3, 1), (1, 1, 3)} <= level0


def test_eval_forward_is_deterministic_and_checks_the_grid():
    torch.manual_seed(0)
    cfg = tiny_config(4)
    model = build_model(cfg).eval()
    batch = tiny_batch(cfg, sizes=(800,))
    with torch.inference_mode():
        a, b = model(batch), model(batch)
    assert torch.equal(a.point_logits, b.point_logits)
    other = Cylinder3D(cfg.model, config_from_dict({"grid": {"size": [48, 32, 8]}}).grid, 20)
    with pytest.raises(ValueError, match="grid.size"):
        other(batch)


def test_two_thread_forward_matches_one_thread():
    """spconv's CPU scatter-add races with two threads unless spconv_compat fixes it."""
    torch.manual_seed(0)
    cfg = tiny_config(4)
    model = build_model(cfg).eval()
    batch = tiny_batch(cfg, sizes=(1500,))
    with torch.inference_mode():
        one = model(batch)
        torch.set_num_threads(2)
        two = [model(batch) for _ in range(2)]
    for out in two:
        torch.testing.assert_close(out.voxel_logits, one.voxel_logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.point_logits, one.point_logits, rtol=1e-5, atol=1e-5)


def test_folded_point_mlps_give_the_same_outputs(single_torch_thread) -> None:
    import numpy as np
    from torch import nn

    from pvd_core.config import config_from_dict
    from pvd_core.data.batch import collate_scans
    from pvd_core.models.cylinder3d import build_model
    from pvd_core.models.fusion import fold_point_mlps
    from pvd_core.voxelizer import CylindricalVoxelizer

    cfg = config_from_dict({"grid": {"size": [32, 32, 8]}, "model": {"init_size": 4}})
    torch.manual_seed(0)
    model = build_model(cfg)
    # Non-trivial BatchNorm statistics and affine terms, as after training.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    model.eval()
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.uniform(-20, 20, (3000, 2)), rng.uniform(-2, 1, (3000, 1)),
                             rng.uniform(0, 1, (3000, 1))], 1).astype(np.float32)
    batch = collate_scans([CylindricalVoxelizer(cfg.grid)(points)], cfg.grid.size)
    folded = fold_point_mlps(model)
    bn_left = [m for m in folded.point_head.hidden if isinstance(m, nn.BatchNorm1d)]
    assert not bn_left and not any(isinstance(m, nn.BatchNorm1d)
                                   for m in list(folded.cylinder_3d_generator.PPmodel)[1:])
    with torch.no_grad():
        a, b = model(batch), folded(batch)
    torch.testing.assert_close(b.point_logits, a.point_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(b.voxel_logits, a.voxel_logits, rtol=1e-4, atol=1e-4)
    # The original keeps its BatchNorm layers (training validation hands the live model over).
    assert any(isinstance(m, nn.BatchNorm1d) for m in model.point_head.hidden)
