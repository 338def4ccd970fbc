"""`pvd profile`: MACs counted from the rulebooks equal a hand count; the JSON has its keys."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import spconv.pytorch as spconv
import torch
from torch import nn

from pvd_core.checkpoint import save_checkpoint
from pvd_core.cli import main as pvd_main
from pvd_core.config import config_from_dict
from pvd_core.data.semantickitti import read_points
from pvd_core.labels import SEMANTIC_KITTI
from pvd_core.models.cylinder3d import build_model
from pvd_core.profiling import count_macs, count_params, profile_model
from pvd_core.voxelizer import CylindricalVoxelizer

SHAPE = (10, 12, 6)


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def random_voxels(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    occupied = np.argwhere(rng.random((2, *SHAPE)) < 0.3)
    return np.ascontiguousarray(occupied.astype(np.int32))


def hand_pairs_subm(coords: np.ndarray, kernel) -> int:
    """Pairs of a submanifold conv: (active voxel, active neighbour at a kernel offset)."""
    occupied = {tuple(c) for c in coords.tolist()}
    offsets = itertools.product(*[range(-(k // 2), k // 2 + 1) for k in kernel])
    return sum((c[0], c[1] + o[0], c[2] + o[1], c[3] + o[2]) in occupied
               for o in offsets for c in coords.tolist())


def hand_pairs_strided(coords: np.ndarray, kernel: int, stride, padding: int) -> int:
    """Pairs of a strided conv: (input voxel, kernel offset) landing on an output grid cell."""
    out_shape = [(s + 2 * padding - kernel) // st + 1 for s, st in zip(SHAPE, stride)]
    total = 0
    for o in itertools.product(range(kernel), repeat=3):
        q = coords[:, 1:] + padding - np.array(o)
        ok = np.ones(len(coords), bool)
        for d in range(3):
            ok &= (q[:, d] % stride[d] == 0) & (q[:, d] // stride[d] >= 0) & (q[:, d] // stride[d] < out_shape[d])
        total += int(ok.sum())
    return total


def test_macs_of_a_submanifold_conv_equal_the_hand_count():
    coords = random_voxels()
    x = spconv.SparseConvTensor(torch.randn(len(coords), 3), torch.from_numpy(coords), list(SHAPE), 2)
    conv = spconv.SubMConv3d(3, 5, (3, 1, 3), padding=(1, 0, 1), bias=False, indice_key="a")
    macs = count_macs(conv, lambda: conv(x))
    expected = hand_pairs_subm(coords, (3, 1, 3)) * 3 * 5
    assert macs.sparse_conv == expected and macs.dense == 0
    assert expected > len(coords) * 3 * 5  # more than the centre tap: neighbours were counted


def test_macs_of_a_strided_conv_and_a_linear_equal_the_hand_count():
    coords = random_voxels(seed=1)
    x = spconv.SparseConvTensor(torch.randn(len(coords), 4), torch.from_numpy(coords), list(SHAPE), 2)
    conv = spconv.SparseConv3d(4, 6, 3, stride=(2, 2, 1), padding=1, bias=False, indice_key="d")
    lin = nn.Linear(4, 7)
    holder = nn.ModuleDict({"conv": conv, "lin": lin})
    macs = count_macs(holder, lambda: (conv(x), lin(x.features)))
    assert macs.sparse_conv == hand_pairs_strided(coords, 3, (2, 2, 1), 1) * 4 * 6
    assert macs.dense == len(coords) * 4 * 7
    assert macs.per_layer == {"conv": macs.sparse_conv, "lin": macs.dense}


def tiny_yaml(tmp_path, init_size: int = 4):
    path = tmp_path / f"tiny{init_size}.yaml"
    path.write_text(f"grid:\n  size: [32, 32, 8]\nmodel:\n  init_size: {init_size}\n")
    return path


def test_pvd_profile_prints_and_writes_json(tmp_path, real_scan_path, capsys):
    cfg_path = tiny_yaml(tmp_path)
    out = tmp_path / "cost.json"
    rc = pvd_main(["profile", "--config", str(cfg_path), "--scan", str(real_scan_path), "--repeat", "1",
                   "--warmup", "0", "--device", "cpu", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    for key in ("params", "macs", "points", "voxels", "latency_ms", "device", "init_size", "grid"):
        assert key in data, key
    assert set(data["latency_ms"]) == {"median", "min", "max"}
    assert data["latency_ms"]["min"] <= data["latency_ms"]["median"] <= data["latency_ms"]["max"]
    cfg = config_from_dict({"grid": {"size": [32, 32, 8]}, "model": {"init_size": 4}})
    points = read_points(real_scan_path)
    scan = CylindricalVoxelizer(cfg.grid)(points)
    assert data["points"] == len(points) and data["voxels"] == scan.num_voxels
    assert data["params"] == count_params(build_model(cfg))
    assert data["init_size"] == 4 and data["grid"] == [32, 32, 8] and data["device"] == "cpu"
    assert data["macs"] == data["macs_sparse_conv"] + data["macs_dense"] > 0
    assert data["command"].startswith("pvd profile --config")
    assert "MACs" in printed and "voxels" in printed


def test_macs_scale_with_width_and_not_with_weights(tmp_path):
    rng = np.random.default_rng(0)
    r, a = rng.uniform(1, 45, 2000), rng.uniform(-np.pi, np.pi, 2000)
    pts = np.stack([r * np.cos(a), r * np.sin(a), rng.uniform(-3, 1, 2000), rng.uniform(0, 1, 2000)], 1)
    pts = pts.astype(np.float32)
    costs = {}
    for s in (4, 8):
        cfg = config_from_dict({"grid": {"size": [32, 32, 8]}, "model": {"init_size": s}})
        torch.manual_seed(s)
        costs[s] = profile_model(build_model(cfg), cfg, pts, repeat=0)
    # Sparse conv MACs grow about 4x when the width doubles (Cin x Cout per pair).
    ratio = costs[8]["macs_sparse_conv"] / costs[4]["macs_sparse_conv"]
    assert 3.0 < ratio < 4.2, ratio
    assert costs[4]["voxels"] == costs[8]["voxels"]
    assert costs[4]["latency_ms"]["median"] is None


def test_pvd_profile_checks_the_checkpoint_against_the_config(tmp_path, real_scan_path, capsys):
    cfg = config_from_dict({"grid": {"size": [32, 32, 8]}, "model": {"init_size": 4}})
    ckpt = tmp_path / "w4.pt"
    save_checkpoint(ckpt, build_model(cfg), cfg, SEMANTIC_KITTI, {"step": 0})
    rc = pvd_main(["profile", "--config", str(tiny_yaml(tmp_path, 8)), "--checkpoint", str(ckpt),
                   "--scan", str(real_scan_path), "--repeat", "0", "--device", "cpu"])
    assert rc == 1
    assert "checkpoint has init_size 4, config asks for 8" in capsys.readouterr().err
