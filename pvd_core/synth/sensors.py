"""Spinning LiDAR models of the sensor table in docs/data.md, as the generator needs them.

A sensor is a fixed fan of beam elevations swept over evenly spaced azimuth columns; the
ray directions are therefore the same for every scan and are computed once here.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class SensorModel:
    name: str
    elevations_deg: tuple[float, ...]  # one per beam, any order
    columns: int  # azimuth steps per revolution
    height: float  # mounting height above the road surface (m)
    max_range: float  # returns beyond this are lost (m)
    min_range: float = 2.5  # closer returns hit the ego vehicle and are filtered out (m)
    range_noise: float = 0.02  # 1-sigma range noise (m)
    nominal_points: int = 0  # docs/data.md's "points per scan" figure
    # Returned points per scan that a street scene should give: (low, high). Fewer rays return
    # than are cast because of sky, far misses and dropped echoes.
    expected_points: tuple[int, int] = field(default=(0, 0))

    @property
    def beams(self) -> int:
        return len(self.elevations_deg)

    @property
    def num_rays(self) -> int:
        return self.beams * self.columns

    def sorted_elevations(self) -> np.ndarray:
        """Beam elevations in radians, ascending (the order the ray caster indexes beams in)."""
        return np.sort(np.radians(np.asarray(self.elevations_deg, dtype=np.float64)))

    def column_azimuths(self) -> np.ndarray:
        """Azimuth of each column in radians, sensor frame, starting behind the sensor and
        sweeping counter-clockwise like a Velodyne scan as stored in KITTI."""
        step = 2.0 * np.pi / self.columns
        return -np.pi + (np.arange(self.columns) + 0.5) * step

    def with_columns(self, columns: int) -> "SensorModel":
        """A cheaper variant for tests and previews; the expected point range scales along."""
        if columns < 8:
            raise ValueError(f"columns must be >= 8, got {columns}")
        scale = columns / self.columns
        low, high = self.expected_points
        return replace(self, columns=int(columns), nominal_points=int(round(self.nominal_points * scale)),
                       expected_points=(int(low * scale), int(high * scale)))


def _hdl64_elevations() -> tuple[float, ...]:
    # HDL-64E: an upper block of 32 lasers at about 1/3 deg spacing and a lower block of 32 at
    # about 1/2 deg, together +2.0 to -24.9 deg.
    upper = np.linspace(2.0, -8.33, 32)
    lower = np.linspace(-8.83, -24.9, 32)
    return tuple(float(round(v, 4)) for v in np.concatenate([upper, lower]))


SENSORS: dict[str, SensorModel] = {
    "hdl64": SensorModel(
        name="hdl64", elevations_deg=_hdl64_elevations(), columns=2048, height=1.73,
        max_range=120.0, nominal_points=120_000, expected_points=(100_000, 125_000)),
    "hdl32": SensorModel(
        name="hdl32", elevations_deg=tuple(float(round(v, 4)) for v in np.linspace(10.67, -30.67, 32)),
        columns=1080, height=1.84, max_range=100.0, nominal_points=34_000,
        expected_points=(24_000, 34_560)),
    "vlp16": SensorModel(
        name="vlp16", elevations_deg=tuple(float(v) for v in np.arange(-15.0, 15.1, 2.0)),
        columns=1800, height=1.73, max_range=100.0, nominal_points=29_000,
        expected_points=(18_000, 28_800)),
}


def sensor_for(name: str, columns: Optional[int] = None) -> SensorModel:
    """The named sensor, optionally with fewer azimuth columns."""
    try:
        sensor = SENSORS[name]
    except KeyError:
        raise ValueError(f"unknown sensor {name!r}; expected one of {sorted(SENSORS)}") from None
    return sensor if columns is None else sensor.with_columns(columns)
