"""Training augmentation of docs/method.md section 5, driven by an explicit numpy Generator.

The caller owns the Generator (the dataset derives it from seed, epoch and scan index),
so an interrupted run that resumes at the same epoch sees bit-identical inputs. All
random draws happen in a fixed order whatever the config enables, so switching one
augmentation off does not change the values the others draw.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pvd_core.config import AugmentConfig

# flip codes (upstream Cylinder3D's flip_type): which of x and y are negated
FLIP_NONE, FLIP_X, FLIP_Y, FLIP_XY = 0, 1, 2, 3


@dataclass(frozen=True)
class AugmentParams:
    """One drawn transform; kept so that tests and test-time augmentation can replay it."""

    flip: int = FLIP_NONE
    angle_deg: float = 0.0
    scale: float = 1.0
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)


def transform_points(points: np.ndarray, params: AugmentParams) -> np.ndarray:
    """Apply flip, then rotation about z, then xy scale, then translation to a copy of ``points``.

    Only columns 0-2 change; intensity and any extra columns are copied unchanged.
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f"points must be an (N, >=3) array, got shape {points.shape}")
    out = points.copy()
    x = points[:, 0].astype(np.float64)
    y = points[:, 1].astype(np.float64)
    if params.flip in (FLIP_X, FLIP_XY):
        x = -x
    if params.flip in (FLIP_Y, FLIP_XY):
        y = -y
    if params.flip not in (FLIP_NONE, FLIP_X, FLIP_Y, FLIP_XY):
        raise ValueError(f"AugmentParams.flip must be 0, 1, 2 or 3, got {params.flip}")
    angle = np.deg2rad(params.angle_deg)
    c, s = np.cos(angle), np.sin(angle)
    x, y = c * x - s * y, s * x + c * y
    tx, ty, tz = params.translation
    out[:, 0] = x * params.scale + tx
    out[:, 1] = y * params.scale + ty
    out[:, 2] = points[:, 2].astype(np.float64) + tz
    return out


class Augmenter:
    """Random flip / z-rotation / xy scale / translation noise with the ranges of ``AugmentConfig``."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg

    def draw(self, rng: np.random.Generator) -> AugmentParams:
        """Draw one transform; disabled parts fall back to identity values (draws still happen)."""
        cfg = self.cfg
        flip = int(rng.integers(4))
        angle = float(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
        scale = float(rng.uniform(cfg.scale[0], cfg.scale[1]))
        translation = tuple(float(t) for t in rng.normal(0.0, 1.0, size=3) * cfg.translate_std)
        return AugmentParams(flip=flip if cfg.flip else FLIP_NONE, angle_deg=angle, scale=scale,
                             translation=translation)  # type: ignore[arg-type]

    def __call__(self, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A transformed copy of (N, >=3) ``points``; with ``enabled: false`` an unchanged copy."""
        if not self.cfg.enabled:
            return np.array(points, copy=True)
        return transform_points(points, self.draw(rng))

