"""Random-number state of a run, as plain tensors and lists that a checkpoint can hold.

A resumed run must draw exactly what the uninterrupted run would have drawn after the
checkpoint: Python's ``random``, numpy's global generator, torch's CPU (and CUDA)
generators and the PVD sampling generator. Data order and augmentation are not here:
they derive from (seed, epoch, index) in pvd_core.data.dataset and need no state.

numpy's state is stored as a tensor and ints rather than a numpy array so the
checkpoint loads under ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import random
from typing import Any, Optional

import numpy as np
import torch

from pvd_core.checkpoint import CheckpointError


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (model initialisation draws from torch's generator)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def capture_rng_state(generator: Optional[torch.Generator] = None) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss_next],
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generator": generator.get_state() if generator is not None else None,
    }
    return state


def restore_rng_state(state: dict[str, Any], generator: Optional[torch.Generator] = None) -> None:
    """Inverse of :func:`capture_rng_state`; a missing entry is an error naming it."""
    for key in ("python", "numpy", "torch"):
        if key not in state:
            raise CheckpointError(f"checkpoint train_state.rng has no {key!r} entry")
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    if generator is not None:
        if state.get("generator") is None:
            raise CheckpointError("checkpoint train_state.rng has no PVD sampling generator state")
        generator.set_state(state["generator"])
