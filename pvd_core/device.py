"""Device selection shared by training, inference, profiling and the node.

One function so that 'auto' means the same thing everywhere: CUDA when PyTorch can see
a GPU, otherwise the CPU. Asking for CUDA where there is none is a configuration error
rather than a silent CPU fallback, because a deployment that expects a GPU and quietly
runs seconds per scan on the CPU is worse than one that refuses to start.
"""
from __future__ import annotations

from typing import Optional

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn 'auto' | 'cpu' | 'cuda' | 'cuda:N' (or a torch.device) into a usable torch.device."""
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str):
        raise ValueError(f"device must be one of {DEVICE_CHOICES} or 'cuda:N', got {name!r}")
    key = name.strip().lower()
    if key == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key == "cuda" or key.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} was requested but PyTorch sees no CUDA GPU "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); use device 'auto' or 'cpu'")
        device = torch.device(key)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        return device
    raise ValueError(f"device must be one of {DEVICE_CHOICES} or 'cuda:N', got {name!r}")


def set_torch_threads(threads: Optional[int], where: str = "--threads") -> None:
    """Apply a CLI thread count (None: torch's default). One thread per process avoids the
    OpenMP oversubscription that slows several runs sharing few cores by up to 10x."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"{where} must be >= 1, got {threads}")
    torch.set_num_threads(threads)
