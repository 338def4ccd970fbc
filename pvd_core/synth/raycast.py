"""Vectorised ray casting of a sensor into analytic primitives and the street's ground.

Cost is kept proportional to the rays an object can actually cover: every primitive's
footprint and height give an azimuth interval (a range of columns) and an elevation
interval (a range of beams) seen from the sensor, and only those (primitive, ray) pairs
are intersected. A car 40 m away costs a few dozen pairs, not 131 072.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from pvd_core.synth.ground import GROUND_ALBEDO, LANE_MARKING, TERRAIN, StreetLayout
from pvd_core.synth.sensors import SensorModel

BOX, CYLINDER, ELLIPSOID = 0, 1, 2
GLASS_NONE, GLASS_FACADE, GLASS_ALL = 0, 1, 2


@dataclass
class Primitives:
    """Struct of arrays, one row per primitive, world frame at time 0.

    Boxes and ellipsoids turn by `yaw` about z; cylinders are vertical (half[0] = radius).
    `half` holds half extents (box), radius/radius/half height (cylinder) or semi-axes
    (ellipsoid). `porosity` is a mean free path (m): vegetation and mesh fences are hit at
    a random depth inside, or not at all when the ray gets through; 0 = solid."""
    kind: np.ndarray  # (N,) int8
    center: np.ndarray  # (N, 3)
    half: np.ndarray  # (N, 3)
    yaw: np.ndarray  # (N,)
    raw: np.ndarray  # (N,) raw SemanticKITTI id
    instance: np.ndarray  # (N,) 0 for stuff
    albedo: np.ndarray  # (N,)
    porosity: np.ndarray  # (N,)
    glass: np.ndarray  # (N,) int8 GLASS_*
    velocity: np.ndarray  # (N, 2) m/s in x, y
    wrap: np.ndarray  # (N,) bool: traffic kept within +-wrap_half of the ego along x
    ref_x: np.ndarray  # (N,) x of the owning object at time 0 (wrapping moves whole objects)

    def __len__(self) -> int:
        return len(self.kind)

    @staticmethod
    def from_rows(rows: list[dict]) -> "Primitives":
        names = [f.name for f in fields(Primitives)]
        if not rows:
            raise ValueError("a scene needs at least one primitive")
        cols = {n: np.asarray([r[n] for r in rows]) for n in names}
        return Primitives(
            kind=cols["kind"].astype(np.int8), center=cols["center"].astype(np.float64).reshape(-1, 3),
            half=cols["half"].astype(np.float64).reshape(-1, 3), yaw=cols["yaw"].astype(np.float64),
            raw=cols["raw"].astype(np.int64), instance=cols["instance"].astype(np.int64),
            albedo=cols["albedo"].astype(np.float64), porosity=cols["porosity"].astype(np.float64),
            glass=cols["glass"].astype(np.int8), velocity=cols["velocity"].astype(np.float64).reshape(-1, 2),
            wrap=cols["wrap"].astype(bool), ref_x=cols["ref_x"].astype(np.float64))


@dataclass
class Hits:
    """Per returned point, in the sensor's output order."""
    points: np.ndarray  # (M, 4) float32 x, y, z, reflectance (sensor frame)
    labels: np.ndarray  # (M,) uint32 instance << 16 | raw semantic id
    rays_cast: int
    returns_before_dropout: int


class RayFan:
    """The sensor's ray directions, fixed per sensor, with the output order of points."""

    def __init__(self, sensor: SensorModel):
        self.sensor = sensor
        self.elev = sensor.sorted_elevations()  # ascending
        self.azim = sensor.column_azimuths()
        self.step = 2.0 * np.pi / sensor.columns
        ce, se = np.cos(self.elev), np.sin(self.elev)
        ca, sa = np.cos(self.azim), np.sin(self.azim)
        self.dirs = np.stack([
            (ce[:, None] * ca[None, :]).ravel(),
            (ce[:, None] * sa[None, :]).ravel(),
            np.repeat(se, sensor.columns)], axis=1)  # ray r = beam * columns + column
        # Output: top beam first, each beam a full revolution (a range image read row by row).
        b = np.arange(len(self.elev))[::-1]
        self.order = (b[:, None] * sensor.columns + np.arange(sensor.columns)[None, :]).ravel()


def _pairs(b_lo: np.ndarray, nb: np.ndarray, k_lo: np.ndarray, nk: np.ndarray, columns: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """(primitive row, ray index) for every ray in each primitive's beam x column window."""
    counts = nb * nk
    total = int(counts.sum())
    owner = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    offset = np.arange(total) - starts[owner]
    nk_o = nk[owner]
    beam = b_lo[owner] + offset // nk_o
    col = (k_lo[owner] + offset % nk_o) % columns
    return owner, beam * columns + col


def _windows(center: np.ndarray, half: np.ndarray, yaw: np.ndarray, origin: np.ndarray,
             ego_yaw: float, fan: RayFan, max_range: float):
    """Beam and column windows of each primitive as seen from `origin`."""
    c, s = np.cos(yaw), np.sin(yaw)
    rel = origin[None, :2] - center[:, :2]
    local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]], axis=1)
    d_min = np.linalg.norm(np.maximum(np.abs(local) - half[:, :2], 0.0), axis=1)
    sx = np.array([1, 1, -1, -1])
    sy = np.array([1, -1, 1, -1])
    cx = center[:, 0:1] + c[:, None] * (sx * half[:, 0:1]) - s[:, None] * (sy * half[:, 1:2])
    cy = center[:, 1:2] + s[:, None] * (sx * half[:, 0:1]) + c[:, None] * (sy * half[:, 1:2])
    vx, vy = cx - origin[0], cy - origin[1]
    d_max = np.sqrt(vx ** 2 + vy ** 2).max(axis=1)
    az_c = np.arctan2(center[:, 1] - origin[1], center[:, 0] - origin[0])
    rel_az = np.mod(np.arctan2(vy, vx) - az_c[:, None] + np.pi, 2 * np.pi) - np.pi
    a_min = az_c + rel_az.min(axis=1) - ego_yaw
    a_max = az_c + rel_az.max(axis=1) - ego_yaw
    k_lo = np.ceil((a_min + np.pi) / fan.step - 0.5 - 1e-9).astype(np.int64)
    k_hi = np.floor((a_max + np.pi) / fan.step - 0.5 + 1e-9).astype(np.int64)
    nk = np.clip(k_hi - k_lo + 1, 0, fan.sensor.columns)
    inside = d_min <= 1e-9
    k_lo = np.where(inside, 0, np.mod(k_lo, fan.sensor.columns))
    nk = np.where(inside, fan.sensor.columns, nk)

    zt = center[:, 2] + half[:, 2] - origin[2]
    zb = center[:, 2] - half[:, 2] - origin[2]
    e_max = np.arctan2(zt, np.where(zt > 0, d_min, d_max))
    e_min = np.arctan2(zb, np.where(zb > 0, d_max, d_min))
    b_lo = np.searchsorted(fan.elev, e_min - 1e-9, side="left")
    b_hi = np.searchsorted(fan.elev, e_max + 1e-9, side="right")
    nb = np.clip(b_hi - b_lo, 0, None)
    nb = np.where(d_min < max_range, nb, 0)
    return b_lo.astype(np.int64), nb.astype(np.int64), k_lo.astype(np.int64), nk.astype(np.int64)


def _porous(t_in: np.ndarray, t_out: np.ndarray, mfp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hit depth inside a porous volume: exponential free path, a miss when it exceeds the chord."""
    depth = rng.exponential(1.0, size=t_in.shape) * mfp
    hit = depth < (t_out - t_in)
    return np.where(mfp > 0, np.where(hit, t_in + depth, np.inf), t_in)


def _hit_boxes(p: Primitives, rows: np.ndarray, origin: np.ndarray, dirs: np.ndarray, owner: np.ndarray,
               ray: np.ndarray, rng: np.random.Generator):
    c, s = np.cos(p.yaw[rows]), np.sin(p.yaw[rows])
    rel = origin[None, :] - p.center[rows]
    lo = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], axis=1)[owner]
    d = dirs[ray]
    co, so = c[owner], s[owner]
    ld = np.stack([co * d[:, 0] + so * d[:, 1], -so * d[:, 0] + co * d[:, 1], d[:, 2]], axis=1)
    h = p.half[rows][owner]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(np.abs(ld) < 1e-12, 1e-12, ld)
        t1 = (-h - lo) * inv
        t2 = (h - lo) * inv
    tn = np.minimum(t1, t2)
    tf = np.maximum(t1, t2)
    axis = np.argmax(tn, axis=1)
    t_in = tn.max(axis=1)
    t_out = tf.min(axis=1)
    valid = (t_out >= t_in) & (t_in > 1e-6)
    t = np.where(valid, t_in, np.inf)
    mfp = p.porosity[rows][owner]
    if (mfp > 0).any():
        t = np.where(valid, _porous(t_in, t_out, mfp, rng), np.inf)
    n_local = np.zeros_like(ld)
    sel = np.arange(len(axis))
    n_local[sel, axis] = -np.sign(ld[sel, axis])
    normal = np.stack([co * n_local[:, 0] - so * n_local[:, 1], so * n_local[:, 0] + co * n_local[:, 1],
                       n_local[:, 2]], axis=1)
    return t, normal


def _hit_cylinders(p: Primitives, rows: np.ndarray, origin: np.ndarray, dirs: np.ndarray, owner: np.ndarray,
                   ray: np.ndarray, rng: np.random.Generator):
    rel = (origin[None, :2] - p.center[rows, :2])[owner]
    r = p.half[rows, 0][owner]
    d = dirs[ray]
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2.0 * (rel[:, 0] * d[:, 0] + rel[:, 1] * d[:, 1])
    cc = rel[:, 0] ** 2 + rel[:, 1] ** 2 - r ** 2
    disc = b * b - 4 * a * cc
    ok = (disc >= 0) & (a > 1e-12) & (cc > 0)
    sq = np.sqrt(np.where(ok, disc, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (-b - sq) / (2 * np.where(a > 1e-12, a, 1.0))
    z = origin[2] + t * d[:, 2]
    zc = p.center[rows, 2][owner]
    hz = p.half[rows, 2][owner]
    ok &= (t > 1e-6) & (np.abs(z - zc) <= hz)
    t = np.where(ok, t, np.inf)
    hx = rel[:, 0] + np.where(ok, t, 0) * d[:, 0]
    hy = rel[:, 1] + np.where(ok, t, 0) * d[:, 1]
    normal = np.stack([hx / r, hy / r, np.zeros_like(r)], axis=1)
    return t, normal


def _hit_ellipsoids(p: Primitives, rows: np.ndarray, origin: np.ndarray, dirs: np.ndarray, owner: np.ndarray,
                    ray: np.ndarray, rng: np.random.Generator):
    c, s = np.cos(p.yaw[rows]), np.sin(p.yaw[rows])
    ax = p.half[rows]
    rel = origin[None, :] - p.center[rows]
    lo = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], axis=1) / ax
    lo = lo[owner]
    axo = ax[owner]
    co, so = c[owner], s[owner]
    d = dirs[ray]
    ld = np.stack([co * d[:, 0] + so * d[:, 1], -so * d[:, 0] + co * d[:, 1], d[:, 2]], axis=1) / axo
    a = (ld * ld).sum(axis=1)
    b = 2.0 * (lo * ld).sum(axis=1)
    cc = (lo * lo).sum(axis=1) - 1.0
    disc = b * b - 4 * a * cc
    ok = (disc >= 0) & (cc > 0)
    sq = np.sqrt(np.where(ok, disc, 0.0))
    t_in = (-b - sq) / (2 * a)
    t_out = (-b + sq) / (2 * a)
    ok &= t_in > 1e-6
    t = np.where(ok, t_in, np.inf)
    mfp = p.porosity[rows][owner]
    if (mfp > 0).any():
        t = np.where(ok, _porous(t_in, t_out, mfp, rng), np.inf)
    pl = lo + np.where(ok, t_in, 0)[:, None] * ld
    g = pl / axo
    n_local = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    normal = np.stack([co * n_local[:, 0] - so * n_local[:, 1], so * n_local[:, 0] + co * n_local[:, 1],
                       n_local[:, 2]], axis=1)
    return t, normal


_HIT = {BOX: _hit_boxes, CYLINDER: _hit_cylinders, ELLIPSOID: _hit_ellipsoids}


def primitives_at(prims: Primitives, time: float, ego_x: float, wrap_half: float) -> np.ndarray:
    """Centres at `time`: moving objects advanced, traffic wrapped into the window around the ego."""
    center = prims.center.copy()
    center[:, :2] += prims.velocity * time
    if prims.wrap.any():
        ref = prims.ref_x + prims.velocity[:, 0] * time - ego_x
        shift = (np.mod(ref + wrap_half, 2 * wrap_half) - wrap_half) - ref
        center[:, 0] += np.where(prims.wrap, shift, 0.0)
    return center


def cast_scan(prims: Primitives, layout: StreetLayout, fan: RayFan, ego_xy: tuple[float, float],
              ego_yaw: float, time: float, rng: np.random.Generator, wrap_half: float = 140.0) -> Hits:
    """One revolution of the sensor at the given ego pose; points in the sensor frame."""
    sensor = fan.sensor
    origin = np.array([ego_xy[0], ego_xy[1], sensor.height])
    cy, sy = np.cos(ego_yaw), np.sin(ego_yaw)
    dirs = np.stack([cy * fan.dirs[:, 0] - sy * fan.dirs[:, 1], sy * fan.dirs[:, 0] + cy * fan.dirs[:, 1],
                     fan.dirs[:, 2]], axis=1)
    n_rays = len(dirs)
    center = primitives_at(prims, time, ego_xy[0], wrap_half)
    moved = Primitives(**{**prims.__dict__, "center": center})

    b_lo, nb, k_lo, nk = _windows(center, prims.half, prims.yaw, origin, ego_yaw, fan, sensor.max_range)
    all_ray, all_t, all_prim, all_n = [], [], [], []
    for kind, hit_fn in _HIT.items():
        rows = np.nonzero((prims.kind == kind) & (nb > 0) & (nk > 0))[0]
        if rows.size == 0:
            continue
        owner, ray = _pairs(b_lo[rows], nb[rows], k_lo[rows], nk[rows], sensor.columns)
        t, normal = hit_fn(moved, rows, origin, dirs, owner, ray, rng)
        ok = np.isfinite(t)
        all_ray.append(ray[ok])
        all_t.append(t[ok])
        all_prim.append(rows[owner[ok]])
        all_n.append(normal[ok])

    best_t = np.full(n_rays, np.inf)
    best_prim = np.full(n_rays, -1, dtype=np.int64)
    best_n = np.zeros((n_rays, 3))
    if all_ray:
        ray = np.concatenate(all_ray)
        t = np.concatenate(all_t)
        np.minimum.at(best_t, ray, t)
        win = t == best_t[ray]
        best_prim[ray[win]] = np.concatenate(all_prim)[win]
        best_n[ray[win]] = np.concatenate(all_n)[win]

    g_t, g_raw, g_wall = layout.intersect(origin, dirs, sensor.max_range)
    use_ground = g_t < best_t
    t_hit = np.where(use_ground, g_t, best_t)
    hit = np.isfinite(t_hit) & (t_hit <= sensor.max_range) & (t_hit >= sensor.min_range)
    sel = fan.order[hit[fan.order]]  # returning rays in output order
    n_ret = len(sel)

    ground = use_ground[sel]
    prim = best_prim[sel]
    pid = np.where(ground, 0, prim)
    raw = np.where(ground, g_raw[sel], prims.raw[pid])
    inst = np.where(ground, 0, prims.instance[pid])
    d = dirs[sel]
    normal = best_n[sel]
    normal[ground] = (0.0, 0.0, 1.0)
    wall = ground & g_wall[sel]
    if wall.any():
        horiz = -d[wall].copy()
        horiz[:, 2] = 0
        normal[wall] = horiz / np.maximum(np.linalg.norm(horiz, axis=1, keepdims=True), 1e-9)
    ground_albedo = np.zeros(n_ret)
    for cls, alb in GROUND_ALBEDO.items():
        ground_albedo[g_raw[sel] == cls] = alb
    albedo = np.where(ground, ground_albedo, prims.albedo[pid])
    t_sel = t_hit[sel]
    p_world = origin + t_sel[:, None] * d

    # Glass: building windows on a storey grid, and car cabins, often give no echo.
    glass = np.where(ground, GLASS_NONE, prims.glass[pid])
    window = (glass == GLASS_FACADE) & (np.mod(p_world[:, 0] + p_world[:, 1], 3.3) > 1.0) & \
        (np.mod(p_world[:, 2], 3.0) > 0.9) & (np.mod(p_world[:, 2], 3.0) < 2.2) & (p_world[:, 2] > 2.5)
    cos_inc = np.clip(np.abs((normal * d).sum(axis=1)), 0.0, 1.0)

    refl = albedo * (0.25 + 0.75 * cos_inc) * np.exp(rng.normal(0.0, 0.12, n_ret))
    refl += rng.normal(0.0, 0.015, n_ret)
    refl = np.where(window, refl * 0.4, refl)
    refl = np.where(raw == LANE_MARKING, refl, refl * (1.0 - 0.25 * (t_sel / sensor.max_range)))
    refl = np.where((raw == TERRAIN) & ground, refl + rng.normal(0.0, 0.05, n_ret), refl)
    refl = np.round(np.clip(refl, 0.0, 0.99), 2)

    p_drop = 0.035 + 0.10 * (1.0 - cos_inc) ** 3 + 0.20 * np.clip(0.08 - refl, 0.0, None) / 0.08 \
        + 0.10 * (t_sel / sensor.max_range) ** 2
    p_drop = np.where(window, 0.6, p_drop)
    p_drop = np.where(glass == GLASS_ALL, 0.35, p_drop)
    keep = rng.random(n_ret) >= p_drop

    t_noisy = t_sel + rng.normal(0.0, sensor.range_noise, n_ret)
    xyz = t_noisy[:, None] * fan.dirs[sel]  # the sensor frame is the world frame turned by -ego_yaw
    points = np.concatenate([xyz, refl[:, None]], axis=1)[keep].astype(np.float32)
    labels = ((inst[keep].astype(np.uint32) & 0xFFFF) << 16) | (raw[keep].astype(np.uint32) & 0xFFFF)
    return Hits(points=points, labels=labels.astype(np.uint32), rays_cast=n_rays, returns_before_dropout=n_ret)
