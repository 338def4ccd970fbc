"""Model cost for one real scan: parameters, exact sparse MACs, voxels, forward latency.

The library behind `pvd profile` (pvd_core.commands.profile).

MACs are counted, not estimated: a forward hook on every spconv layer reads the rulebook
the layer actually used (its ``indice_key`` entry) and adds pairs x Cin x Cout, which is
the multiply-accumulate work of gather-GEMM-scatter; every nn.Linear adds rows x in x out.
BatchNorm, activations, the scatter-max and the gathers are not counted (no MACs).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from torch import nn

from pvd_core.config import Config
from pvd_core.data.batch import Batch, collate_scans
from pvd_core.data.semantickitti import DataError
from pvd_core.voxelizer import CylindricalVoxelizer


@dataclass
class MacCount:
    sparse_conv: int = 0
    dense: int = 0
    per_layer: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.sparse_conv + self.dense


def rulebook_pairs(indice_data: Any) -> int:
    """Number of (input voxel, output voxel, kernel offset) pairs in a spconv rulebook."""
    pairs = getattr(indice_data, "indice_pairs", None)
    if pairs is not None:  # native algorithm (CPU): (2, KV, N) with -1 for unused slots
        return int((pairs[0] >= 0).sum().item())
    pair_fwd = getattr(indice_data, "pair_fwd", None)
    if pair_fwd is not None:  # implicit GEMM (CUDA): (KV, N_out) with -1 for unused slots
        return int((pair_fwd >= 0).sum().item())
    raise TypeError(f"unknown spconv rulebook type {type(indice_data).__name__}")


def count_macs(module: nn.Module, run: Callable[[], Any]) -> MacCount:
    """MACs of everything ``run()`` executes inside ``module`` (hooks are removed afterwards)."""
    from spconv.pytorch.conv import SparseConvolution

    count = MacCount()
    names = {m: n or type(module).__name__ for n, m in module.named_modules()}

    def conv_hook(mod: SparseConvolution, inputs: Any, output: Any) -> None:
        key = mod.indice_key
        data = output.indice_dict.get(key) if key is not None else None
        if data is None:
            raise RuntimeError(f"{names[mod]}: spconv layer without a stored rulebook (indice_key {key!r}); "
                               "its MACs cannot be counted")
        macs = rulebook_pairs(data) * mod.in_channels * mod.out_channels
        count.sparse_conv += macs
        count.per_layer[names[mod]] = count.per_layer.get(names[mod], 0) + macs

    def linear_hook(mod: nn.Linear, inputs: Any, output: Any) -> None:
        rows = inputs[0].numel() // mod.in_features
        macs = rows * mod.in_features * mod.out_features
        count.dense += macs
        count.per_layer[names[mod]] = count.per_layer.get(names[mod], 0) + macs

    handles = []
    for m in module.modules():
        if isinstance(m, SparseConvolution):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        with torch.inference_mode():
            run()
    finally:
        for h in handles:
            h.remove()
    return count


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def time_forward(model: nn.Module, batch: Batch, repeat: int, warmup: int = 1) -> list[float]:
    """Forward latencies in ms (inference mode, CUDA synchronised) after ``warmup`` untimed runs."""
    device = next(model.parameters()).device
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeat):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            model(batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    return times


def scan_batch(config: Config, points: np.ndarray) -> Batch:
    """One scan voxelized by the shared voxelizer and collated by the shared collate."""
    scan = CylindricalVoxelizer(config.grid)(points)
    if scan.num_points == 0:
        raise DataError("the scan has no valid points inside the grid volume")
    return collate_scans([scan], config.grid.size)


def profile_model(model: nn.Module, config: Config, points: np.ndarray, repeat: int = 5,
                  warmup: int = 1) -> dict[str, Any]:
    """The cost record of ``pvd profile`` for a model that is already on its device."""
    device = next(model.parameters()).device
    model.eval()
    batch = scan_batch(config, points).to(device)
    macs = count_macs(model, lambda: model(batch))
    times = time_forward(model, batch, repeat, warmup) if repeat > 0 else []
    return {
        "params": count_params(model),
        "macs": macs.total,
        "macs_sparse_conv": macs.sparse_conv,
        "macs_dense": macs.dense,
        "points": batch.num_points,
        "voxels": batch.num_voxels,
        "latency_ms": {
            "median": statistics.median(times) if times else None,
            "min": min(times) if times else None,
            "max": max(times) if times else None,
        },
        "repeat": len(times),
        "warmup": warmup,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "init_size": int(config.model.init_size),
        "grid": [int(s) for s in config.grid.size],
    }


def build_for_profile(config: Config, checkpoint: Optional[Union[str, Path]], device: torch.device) -> nn.Module:
    """Checkpoint weights when given (checked against the config), else a seeded random init."""
    if checkpoint is not None:
        from pvd_core.checkpoint import build_model_from_checkpoint, load_checkpoint

        return build_model_from_checkpoint(load_checkpoint(checkpoint), config, device=device)
    from pvd_core.models.cylinder3d import build_model

    torch.manual_seed(0)
    return build_model(config).to(device).eval()


def format_report(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    lat_txt = (f"{lat['median']:.1f} ms median, {lat['min']:.1f} min, {lat['max']:.1f} max over {r['repeat']} runs"
               if lat["median"] is not None else "not timed (--repeat 0)")
    return "\n".join([
        f"model      Cylinder3D init_size {r['init_size']}, grid {r['grid']}, device {r['device']}",
        f"params     {r['params']:,} ({r['params'] / 1e6:.2f} M)",
        f"MACs       {r['macs']:,} ({r['macs'] / 1e9:.2f} G; sparse conv {r['macs_sparse_conv'] / 1e9:.2f} G, "
        f"dense {r['macs_dense'] / 1e9:.2f} G)",
        f"points     {r['points']:,}",
        f"voxels     {r['voxels']:,}",
        f"latency    {lat_txt}",
    ])
