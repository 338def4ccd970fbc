"""Learning-rate schedule as a pure function of the step.

A pure function (rather than a chain of stateful scheduler updates) is what makes a
resumed run land on exactly the learning rates of an uninterrupted one: the step
counter in the checkpoint is all it needs. The LambdaLR wrapper only exists so the
optimiser sees the rate through PyTorch's usual interface.
"""
from __future__ import annotations

import math

import torch

from pvd_core.config import TrainConfig


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` for optimiser step ``step`` (0-based).

    Linear warm-up over ``warmup_steps``, then constant or half-cosine decay to 0 at
    ``max_steps``.
    """
    if step < 0:
        raise ValueError(f"lr_factor: step must be >= 0, got {step}")
    warmup = max(0, int(cfg.warmup_steps))
    if warmup and step < warmup:
        return (step + 1) / warmup
    if cfg.lr_schedule == "constant":
        return 1.0
    if cfg.lr_schedule == "cosine":
        span = max(1, int(cfg.max_steps) - warmup)
        progress = min(1.0, (step - warmup) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"train.lr_schedule must be 'cosine' or 'constant', got {cfg.lr_schedule!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam as in upstream Cylinder3D (docs/method.md section 5); weight decay optional."""
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
