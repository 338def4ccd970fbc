"""Procedural towns: a straight main street cut into blocks by cross streets, with kerbside
furniture, parked and moving traffic, pedestrians and frontage (buildings, yards, parks).

Objects sit where they would in a real street (cars in lanes and parking strips, persons
on sidewalks, poles and signs at the kerb, trunks under crowns) so that a point's class
can be learnt from its geometry and context. Everything is drawn from generators seeded
by (seed, sequence, block), so a town is reproducible bit for bit and a longer sequence
shares its first blocks with a shorter one.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Optional

import numpy as np

from pvd_core.synth.ground import OTHER_GROUND, TERRAIN, StreetLayout
from pvd_core.synth.raycast import BOX, CYLINDER, ELLIPSOID, GLASS_ALL, GLASS_FACADE, GLASS_NONE, Primitives

# Raw SemanticKITTI ids of objects.
CAR, BICYCLE, MOTORCYCLE, TRUCK, OTHER_VEHICLE = 10, 11, 15, 18, 20
PERSON, BICYCLIST = 30, 31
BUILDING, FENCE, VEGETATION, TRUNK, POLE, SIGN = 50, 51, 70, 71, 80, 81
OTHER_STRUCTURE, OTHER_OBJECT = 52, 99
MOTORCYCLIST = 32
MOVING = {CAR: 252, BICYCLIST: 253, PERSON: 254, MOTORCYCLIST: 255, TRUCK: 258, OTHER_VEHICLE: 259}

SCAN_PERIOD = 0.1  # s, a 10 Hz sensor
EGO_START_X = 160.0  # town metres behind the first pose, so the rear view is populated
TRAFFIC_HALF_WINDOW = 140.0  # traffic lives within +-this of the ego along x (beyond max range)
URBAN, RESIDENTIAL, GREEN = 0, 1, 2


def sequence_key(sequence: str) -> int:
    """A stable integer for a sequence name (Python's str hash is salted per process)."""
    return zlib.crc32(str(sequence).encode("utf-8"))


def town_rng(seed: int, sequence: str, *stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), sequence_key(sequence), *stream])


class SceneBuilder:
    """Collects primitives; each object gets one instance id when it is a 'thing'."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.next_instance = 1

    def new_instance(self) -> int:
        inst = self.next_instance
        self.next_instance = self.next_instance % 65535 + 1
        return inst

    def add(self, kind: int, center, half, raw: int, yaw: float = 0.0, instance: int = 0,
            albedo: float = 0.3, porosity: float = 0.0, glass: int = GLASS_NONE,
            velocity=(0.0, 0.0), wrap: bool = False, ref_x: Optional[float] = None) -> None:
        self.rows.append(dict(kind=kind, center=tuple(center), half=tuple(half), yaw=yaw, raw=raw,
                              instance=instance, albedo=albedo, porosity=porosity, glass=glass,
                              velocity=tuple(velocity), wrap=wrap,
                              ref_x=center[0] if ref_x is None else ref_x))

    def build(self) -> Primitives:
        return Primitives.from_rows(self.rows)


def _local(x: float, y: float, yaw: float, fx: float, fy: float) -> tuple[float, float]:
    c, s = math.cos(yaw), math.sin(yaw)
    return x + c * fx - s * fy, y + s * fx + c * fy


# ---------------------------------------------------------------- object library

def _vehicle_length(rng: np.random.Generator, kind: int) -> float:
    lo, hi = {CAR: (3.8, 4.9), TRUCK: (6.5, 11.0)}.get(kind, (5.5, 12.0))
    return float(rng.uniform(lo, hi))


def add_vehicle(b: SceneBuilder, rng: np.random.Generator, x: float, y: float, yaw: float, kind: int,
                moving: bool = False, velocity=(0.0, 0.0), wrap: bool = False, from_rear: bool = False) -> float:
    """A car, truck or bus/van from boxes: body, cabin or cargo box, wheels. Returns its length.

    With from_rear, x is where the vehicle's extent along x begins (for rows of parked cars)."""
    raw = MOVING[kind] if moving and kind in MOVING else kind
    inst = b.new_instance()
    length = _vehicle_length(rng, kind)
    if from_rear:
        x += length / 2
    paint = float(rng.choice([0.06, 0.12, 0.25, 0.45, 0.6], p=[0.25, 0.25, 0.2, 0.2, 0.1]))
    common = dict(raw=raw, yaw=yaw, instance=inst, velocity=velocity, wrap=wrap, ref_x=x)
    if kind == CAR:
        width = rng.uniform(1.65, 1.9)
        clear, body_h = rng.uniform(0.25, 0.35), rng.uniform(0.55, 0.75)
        cab_h = rng.uniform(0.45, 0.65) if rng.random() < 0.7 else rng.uniform(0.7, 0.95)  # sedans, SUVs/vans
        cab_l = length * rng.uniform(0.45, 0.62)
        b.add(BOX, (x, y, clear + body_h / 2), (length / 2, width / 2, body_h / 2), albedo=paint, **common)
        cx, cy = _local(x, y, yaw, -0.08 * length, 0.0)
        b.add(BOX, (cx, cy, clear + body_h + cab_h / 2), (cab_l / 2, width / 2 - 0.07, cab_h / 2),
              albedo=0.1, glass=GLASS_ALL, **common)
        wheel_r, wheel_x = 0.32, length / 2 - 0.75
    elif kind == TRUCK:
        width = rng.uniform(2.3, 2.55)
        cab_l, cab_h = 2.2, rng.uniform(2.6, 3.0)
        cargo_h = rng.uniform(3.0, 3.8)
        fx, fy = _local(x, y, yaw, length / 2 - cab_l / 2, 0.0)
        b.add(BOX, (fx, fy, 0.5 + cab_h / 2 - 0.25), (cab_l / 2, width / 2, cab_h / 2), albedo=paint, **common)
        rx, ry = _local(x, y, yaw, -cab_l / 2 - 0.1, 0.0)
        b.add(BOX, (rx, ry, 0.9 + (cargo_h - 0.9) / 2), ((length - cab_l - 0.2) / 2, width / 2, (cargo_h - 0.9) / 2),
              albedo=float(rng.uniform(0.2, 0.6)), **common)
        wheel_r, wheel_x = 0.5, length / 2 - 1.2
    else:  # OTHER_VEHICLE: bus, van with trailer, tram-like
        width = rng.uniform(2.0, 2.55)
        height = rng.uniform(2.4, 3.2)
        b.add(BOX, (x, y, 0.35 + height / 2), (length / 2, width / 2, height / 2), albedo=paint, **common)
        if length > 8 and rng.random() < 0.6:  # a bus's window band
            b.add(BOX, (x, y, 0.35 + height * 0.72), (length / 2 - 0.3, width / 2 + 0.01, height * 0.17),
                  albedo=0.1, glass=GLASS_ALL, **common)
        wheel_r, wheel_x = 0.48, length / 2 - 1.3
    for sx in (-1, 1):
        for sy in (-1, 1):
            wx, wy = _local(x, y, yaw, sx * wheel_x, sy * (width / 2 - 0.12))
            b.add(BOX, (wx, wy, wheel_r), (wheel_r, 0.12, wheel_r), albedo=0.05, **common)
    return float(length)


def add_person(b: SceneBuilder, rng: np.random.Generator, x: float, y: float, yaw: float,
               velocity=(0.0, 0.0)) -> None:
    moving = velocity[0] != 0.0 or velocity[1] != 0.0
    raw = MOVING[PERSON] if moving else PERSON
    inst = b.new_instance()
    s = rng.uniform(0.85, 1.1) if rng.random() > 0.08 else rng.uniform(0.6, 0.8)  # some children
    cloth = float(rng.uniform(0.1, 0.55))
    common = dict(raw=raw, yaw=yaw, instance=inst, velocity=velocity, ref_x=x)
    stride = 0.12 * s if moving else 0.0
    for sy, sx in ((-1, 1), (1, -1)):
        lx, ly = _local(x, y, yaw, sx * stride, sy * 0.1 * s)
        b.add(CYLINDER, (lx, ly, 0.43 * s), (0.075 * s, 0.075 * s, 0.43 * s), albedo=cloth, **common)
    b.add(ELLIPSOID, (x, y, 1.18 * s), (0.14 * s, 0.23 * s, 0.36 * s), albedo=cloth, **common)
    b.add(ELLIPSOID, (x, y, 1.64 * s), (0.1 * s, 0.09 * s, 0.12 * s), albedo=float(rng.uniform(0.2, 0.5)), **common)
    if rng.random() < 0.25:  # a bag or backpack
        bx, by = _local(x, y, yaw, -0.2 * s, 0.0)
        b.add(BOX, (bx, by, 1.2 * s), (0.1, 0.15, 0.2), albedo=cloth, **common)


def add_cyclist(b: SceneBuilder, rng: np.random.Generator, x: float, y: float, yaw: float,
                velocity=(0.0, 0.0), wrap: bool = False, rider: bool = True) -> None:
    """A bicyclist (rider and bike, labelled together) or, without rider, a parked bicycle."""
    moving = velocity[0] != 0.0 or velocity[1] != 0.0
    raw = (MOVING[BICYCLIST] if moving else BICYCLIST) if rider else BICYCLE
    inst = b.new_instance()
    common = dict(raw=raw, yaw=yaw, instance=inst, velocity=velocity, wrap=wrap, ref_x=x)
    b.add(BOX, (x, y, 0.36), (0.85, 0.04, 0.36), albedo=0.3, porosity=0.25, **common)  # wheels, spokes
    b.add(BOX, (x, y, 0.75), (0.5, 0.05, 0.15), albedo=0.35, **common)  # frame, saddle, bars
    if rider:
        cloth = float(rng.uniform(0.1, 0.5))
        bx, by = _local(x, y, yaw, -0.1, 0.0)
        b.add(CYLINDER, (bx, by, 0.75), (0.09, 0.09, 0.3), albedo=cloth, **common)
        tx, ty = _local(x, y, yaw, 0.0, 0.0)
        b.add(ELLIPSOID, (tx, ty, 1.3), (0.3, 0.2, 0.3), albedo=cloth, **common)
        hx, hy = _local(x, y, yaw, 0.22, 0.0)
        b.add(ELLIPSOID, (hx, hy, 1.68), (0.12, 0.1, 0.12), albedo=float(rng.uniform(0.3, 0.7)), **common)


def add_motorcycle(b: SceneBuilder, rng: np.random.Generator, x: float, y: float, yaw: float,
                   velocity=(0.0, 0.0), wrap: bool = False, rider: bool = False) -> None:
    """A parked motorcycle, or with a rider a motorcyclist (labelled together, like bicyclists)."""
    raw = (MOVING[MOTORCYCLIST] if velocity[0] or velocity[1] else MOTORCYCLIST) if rider else MOTORCYCLE
    inst = b.new_instance()
    common = dict(raw=raw, yaw=yaw, instance=inst, velocity=velocity, wrap=wrap, ref_x=x)
    b.add(BOX, (x, y, 0.33), (1.0, 0.1, 0.33), albedo=0.08, **common)
    b.add(BOX, (x, y, 0.8), (0.75, 0.3, 0.22), albedo=float(rng.uniform(0.1, 0.6)), **common)
    if rider:
        cloth = float(rng.uniform(0.05, 0.4))
        tx, ty = _local(x, y, yaw, -0.15, 0.0)
        b.add(ELLIPSOID, (tx, ty, 1.3), (0.25, 0.24, 0.33), albedo=cloth, **common)
        hx, hy = _local(x, y, yaw, 0.05, 0.0)
        b.add(ELLIPSOID, (hx, hy, 1.72), (0.15, 0.14, 0.15), albedo=float(rng.uniform(0.2, 0.8)), **common)


def add_tree(b: SceneBuilder, rng: np.random.Generator, x: float, y: float, scale: float = 1.0) -> None:
    trunk_h = rng.uniform(1.8, 3.6) * scale
    trunk_r = rng.uniform(0.09, 0.28) * scale
    b.add(CYLINDER, (x, y, trunk_h / 2), (trunk_r, trunk_r, trunk_h / 2), raw=TRUNK,
          albedo=float(rng.uniform(0.25, 0.4)))
    conifer = rng.random() < 0.2
    a = rng.uniform(1.2, 2.0) * scale if conifer else rng.uniform(1.6, 3.8) * scale
    c = rng.uniform(3.0, 5.0) * scale if conifer else rng.uniform(1.4, 3.2) * scale
    zc = trunk_h + 0.75 * c
    green = float(rng.uniform(0.35, 0.55))
    mfp = float(rng.uniform(0.3, 0.7))
    b.add(ELLIPSOID, (x, y, zc), (a, a * rng.uniform(0.8, 1.0), c), yaw=float(rng.uniform(0, np.pi)),
          raw=VEGETATION, albedo=green, porosity=mfp)
    for _ in range(int(rng.integers(0, 3))):  # lumps make crowns irregular
        ox, oy = rng.normal(0, 0.5 * a, 2)
        b.add(ELLIPSOID, (x + ox, y + oy, zc + rng.normal(0, 0.3 * c)), (a * 0.6, a * 0.6, c * 0.6),
              raw=VEGETATION, albedo=green, porosity=mfp)


def add_bush(b: SceneBuilder, rng: np.random.Generator, x: float, y: float) -> None:
    a, c = rng.uniform(0.4, 1.5), rng.uniform(0.35, 1.1)
    b.add(ELLIPSOID, (x, y, 0.6 * c), (a, a * rng.uniform(0.6, 1.0), c), yaw=float(rng.uniform(0, np.pi)),
          raw=VEGETATION, albedo=float(rng.uniform(0.3, 0.5)), porosity=float(rng.uniform(0.12, 0.3)))


def add_wall_run(b: SceneBuilder, rng: np.random.Generator, x0: float, x1: float, y: float, height: float,
                 raw: int, thickness: float, porosity: float, albedo: float, z0: float = 0.0) -> None:
    """A fence or hedge along x, cut into short pieces so that angular culling stays tight."""
    n = max(1, int(math.ceil((x1 - x0) / 4.0)))
    edges = np.linspace(x0, x1, n + 1)
    for a, c in zip(edges[:-1], edges[1:]):
        b.add(BOX, ((a + c) / 2, y, z0 + height / 2), ((c - a) / 2, thickness / 2, height / 2), raw=raw,
              albedo=albedo, porosity=porosity)


def add_building(b: SceneBuilder, rng: np.random.Generator, x0: float, x1: float, y_front: float, sgn: int,
                 depth: float, height: float) -> None:
    """A block of building between x0 and x1, its facade at y_front, extending away from the street."""
    yc = y_front + sgn * depth / 2
    albedo = float(rng.uniform(0.1, 0.4))
    yaw = float(rng.normal(0, 0.01))
    b.add(BOX, ((x0 + x1) / 2, yc, height / 2), ((x1 - x0) / 2, depth / 2, height / 2), yaw=yaw, raw=BUILDING,
          albedo=albedo, glass=GLASS_FACADE)
    if rng.random() < 0.35:  # a roof storey, a gable or plant room set back from the facade
        w = (x1 - x0) * rng.uniform(0.4, 0.9)
        h = rng.uniform(1.5, 3.5)
        b.add(BOX, ((x0 + x1) / 2, yc + sgn * depth * 0.1, height + h / 2), (w / 2, depth * 0.3, h / 2),
              yaw=yaw, raw=BUILDING, albedo=albedo)
    if rng.random() < 0.2 and height > 6:  # a canopy or balcony row over the sidewalk side
        b.add(BOX, ((x0 + x1) / 2, y_front - sgn * 0.6, rng.uniform(3.0, 3.6)), ((x1 - x0) / 2 - 0.5, 0.6, 0.1),
              raw=BUILDING, albedo=albedo)


def add_street_light(b: SceneBuilder, rng: np.random.Generator, x: float, y: float, sgn_to_road: int) -> None:
    h, r = rng.uniform(6.0, 9.0), rng.uniform(0.07, 0.13)
    b.add(CYLINDER, (x, y, h / 2), (r, r, h / 2), raw=POLE, albedo=0.3)
    arm = rng.uniform(1.0, 2.5)
    b.add(BOX, (x, y + sgn_to_road * arm / 2, h - 0.1), (0.05, arm / 2, 0.05), raw=POLE, albedo=0.3)
    b.add(BOX, (x, y + sgn_to_road * arm, h - 0.2), (0.25, 0.15, 0.08), raw=POLE, albedo=0.3)


def add_sign(b: SceneBuilder, rng: np.random.Generator, x: float, y: float, facing: int,
             traffic_light: bool = False) -> None:
    """A sign post (pole) with one or two plates facing traffic (facing = +1: towards +x)."""
    if traffic_light:
        h = rng.uniform(3.2, 4.2)
        b.add(CYLINDER, (x, y, h / 2), (0.07, 0.07, h / 2), raw=POLE, albedo=0.3)
        b.add(BOX, (x + facing * 0.2, y, h - 0.5), (0.15, 0.18, 0.5), raw=SIGN, albedo=0.35)
        return
    top = rng.uniform(2.2, 3.3)
    r = rng.uniform(0.03, 0.05)
    b.add(CYLINDER, (x, y, top / 2), (r, r, top / 2), raw=POLE, albedo=0.35)
    plates = 1 if rng.random() < 0.7 else 2
    z = top
    for _ in range(plates):
        hw, hh = rng.uniform(0.3, 0.45), rng.uniform(0.2, 0.45)
        b.add(BOX, (x + facing * (r + 0.03), y, z - hh), (0.02, hw, hh), raw=SIGN,
              albedo=float(rng.uniform(0.7, 0.95)))
        z -= 2 * hh + 0.1


# ---------------------------------------------------------------- town layout

@dataclass
class Town:
    layout: StreetLayout
    prims: Primitives
    ego_speed: float
    ego_lane_y: float
    sway: tuple[float, float, float]  # amplitude (m), period (s), phase
    wrap_half: float = TRAFFIC_HALF_WINDOW

    def ego_pose(self, time: float) -> tuple[float, float, float]:
        """(x, y, yaw) of the sensor in the town at `time` seconds after the first scan."""
        amp, period, phase = self.sway
        w = 2 * math.pi / period
        x = EGO_START_X + self.ego_speed * time
        y = self.ego_lane_y + amp * math.sin(w * time + phase)
        yaw = math.atan2(amp * w * math.cos(w * time + phase), self.ego_speed)
        return x, y, yaw


def _block_params(rng: np.random.Generator, p_urban: float) -> dict:
    styles = rng.choice([URBAN, RESIDENTIAL, GREEN], size=2,
                        p=[p_urban, (1 - p_urban) * 0.7, (1 - p_urban) * 0.3])
    return dict(
        length=float(rng.uniform(50.0, 150.0)),
        cross_width=float(rng.uniform(7.0, 12.0)),
        cross_side=[bool(v) for v in rng.choice([[1, 1], [1, 0], [0, 1]], p=[0.5, 0.25, 0.25])],
        crosswalk=bool(rng.random() < 0.5),
        parking=[0.0 if rng.random() < 0.5 else float(rng.uniform(2.0, 2.6)) for _ in range(2)],
        sidewalk=[float(rng.uniform(1.8, 4.5)) for _ in range(2)],
        style=[int(s) for s in styles],
        # Urban frontage is often paved (other-ground) rather than lawn.
        frontage=[OTHER_GROUND if s == URBAN and rng.random() < 0.5 else TERRAIN for s in styles],
    )


def _spaced(xs: list[tuple[float, str]], gap: float) -> list[tuple[float, str]]:
    """Drop kerbside items that would stand closer than `gap` to the one before."""
    out: list[tuple[float, str]] = []
    for x, what in sorted(xs):
        if not out or x - out[-1][0] >= gap:
            out.append((x, what))
    return out


@dataclass
class _Side:
    """One side of one block: where its strips lie (outward distances from the road's edge) and its free span."""

    sgn: int  # +1 left of the road (side 1), -1 right (side 0)
    edge: float
    pw: float  # parking strip width
    sw: float  # sidewalk width
    xa: float  # the free span along x, clear of the cross streets
    xb: float

    def Y(self, e: float) -> float:
        """The y of a point ``e`` metres outward from the road's edge."""
        return self.sgn * (self.edge + e)

    @property
    def span(self) -> float:
        return self.xb - self.xa

    @property
    def front(self) -> float:
        """Where the frontage starts (outward distance from the road's edge)."""
        return self.pw + self.sw


def _side_extent(layout: StreetLayout, blk: int, side: int) -> Optional[_Side]:
    """The strips and free span of ``side`` of block ``blk``; None when the span is under 5 m (draws nothing)."""
    sw = float(layout.sidewalk_width[blk, side])
    x0, x1 = float(layout.bounds[blk]), float(layout.bounds[blk + 1])
    m0 = layout.cross_width[blk] / 2 + sw + 1.0 if layout.cross_side[blk, side] and layout.cross_width[blk] > 0 else 0.5
    m1 = (layout.cross_width[blk + 1] / 2 + sw + 1.0
          if layout.cross_side[blk + 1, side] and layout.cross_width[blk + 1] > 0 else 0.5)
    xa, xb = x0 + m0, x1 - m1
    if xb - xa < 5.0:
        return None
    return _Side(sgn=1 if side == 1 else -1, edge=layout.edge(side), pw=float(layout.parking_width[blk, side]),
                 sw=sw, xa=xa, xb=xb)


def _populate_side(b: SceneBuilder, rng: np.random.Generator, layout: StreetLayout, blk: int, side: int,
                   style: int) -> None:
    """Everything on one side of one block, in a fixed order of draws from ``rng`` (a seed writes the same town)."""
    s = _side_extent(layout, blk, side)
    if s is None:
        return
    _place_kerb_furniture(b, rng, layout, blk, side, s, style)
    _place_parked_vehicles(b, rng, side, s)
    _place_people(b, rng, s)
    if style == URBAN:
        _place_urban_frontage(b, rng, s)
    elif style == RESIDENTIAL:
        _place_residential_lots(b, rng, s)
    else:
        _place_green_frontage(b, rng, s)
    _place_shrub_row(b, rng, s, style)
    _place_back_row(b, rng, s, style)


def _place_kerb_furniture(b: SceneBuilder, rng: np.random.Generator, layout: StreetLayout, blk: int, side: int,
                          s: _Side, style: int) -> None:
    """Kerbside furniture: lights, signs, trees, traffic lights at junction corners, bins."""
    xa, xb, pw, sw = s.xa, s.xb, s.pw, s.sw
    toward_road = -s.sgn
    traffic_dir = 1 if side == 0 else -1  # right-hand traffic: the right side's traffic goes +x
    kerb: list[tuple[float, str]] = []
    spacing = rng.uniform(25.0, 40.0)
    kerb += [(float(x), "light") for x in np.arange(xa + rng.uniform(0, spacing), xb, spacing)]
    if layout.cross_width[blk + 1] > 0 and rng.random() < 0.75:
        kerb.append((xb - rng.uniform(0.5, 3.0), "signal" if rng.random() < 0.4 else "sign"))
    if layout.cross_width[blk] > 0 and rng.random() < 0.5:
        kerb.append((xa + rng.uniform(0.5, 3.0), "sign"))
    kerb += [(float(x), "sign") for x in rng.uniform(xa, xb, rng.poisson(s.span / 45.0))]
    tree_p = {URBAN: 0.6, RESIDENTIAL: 0.85, GREEN: 0.95}[style]
    if rng.random() < tree_p:
        tsp = rng.uniform(6.0, 12.0)
        kerb += [(float(x), "tree") for x in np.arange(xa + rng.uniform(0, tsp), xb, tsp)]
    kerb += [(float(x), "bin") for x in rng.uniform(xa, xb, rng.poisson(s.span / 50.0))]
    for x, what in _spaced(kerb, 1.6):
        if what == "light":
            add_street_light(b, rng, x, s.Y(pw + 0.45), toward_road)
        elif what == "sign":
            add_sign(b, rng, x, s.Y(pw + 0.4), facing=-traffic_dir)
        elif what == "signal":
            add_sign(b, rng, x, s.Y(pw + 0.45), facing=-traffic_dir, traffic_light=True)
        elif what == "tree":
            e = pw + 0.9 if sw >= 2.6 else pw + sw + 1.3
            add_tree(b, rng, x, s.Y(e))
        else:  # waste bin or bench: raw "other-object", unlabeled for training like in the real data
            b.add(BOX, (x, s.Y(pw + 0.5), 0.5), (0.3, 0.3, 0.5), raw=OTHER_OBJECT, albedo=float(rng.uniform(0.1, 0.4)))


def _place_parked_vehicles(b: SceneBuilder, rng: np.random.Generator, side: int, s: _Side) -> None:
    """Parked vehicles in the parking strip (if any), parallel to the kerb."""
    pw = s.pw
    if pw <= 0:
        return
    occupancy = rng.uniform(0.15, 0.65)
    x = s.xa + rng.uniform(0.0, 3.0)
    yaw0 = 0.0 if side == 0 else math.pi
    while x < s.xb - 5.0:
        if rng.random() < occupancy:
            kind = rng.choice(["car", "van", "truck", "moto"], p=[0.88, 0.05, 0.02, 0.05])
            yaw = yaw0 + float(rng.normal(0, 0.03)) + (math.pi if rng.random() < 0.08 else 0.0)
            y = s.Y(pw / 2 + rng.uniform(-0.15, 0.15))
            if kind == "moto":
                add_motorcycle(b, rng, x + 1.0, y, yaw)
                length = 2.0
            else:
                kind_id = {"car": CAR, "van": OTHER_VEHICLE, "truck": TRUCK}[str(kind)]
                length = add_vehicle(b, rng, x, y, yaw, kind_id, from_rear=True)
        else:
            length = rng.uniform(4.0, 6.0)
        x += length + rng.uniform(0.7, 2.5)


def _place_people(b: SceneBuilder, rng: np.random.Generator, s: _Side) -> None:
    """Pedestrians on the sidewalk (in its middle, clear of the kerb furniture), parked bicycles, a cyclist."""
    xa, xb, pw, sw = s.xa, s.xb, s.pw, s.sw
    lane_lo, lane_hi = pw + min(1.1, sw / 2), pw + max(sw - 0.35, min(1.1, sw / 2) + 0.01)
    for _ in range(rng.poisson(s.span * rng.uniform(0.01, 0.05))):
        x = rng.uniform(xa, xb)
        y = s.Y(rng.uniform(lane_lo, lane_hi))
        walking = rng.random() < 0.6
        v = (float(rng.choice([-1, 1]) * rng.uniform(0.8, 1.6)), 0.0) if walking else (0.0, 0.0)
        yaw = (0.0 if v[0] > 0 else math.pi) if walking else float(rng.uniform(0, 2 * math.pi))
        add_person(b, rng, x, y, yaw, velocity=v)
        if rng.random() < 0.25:
            add_person(b, rng, x + 0.7, y + s.sgn * 0.5, yaw, velocity=v)
    for _ in range(rng.poisson(s.span / 90.0)):
        x = rng.uniform(xa, xb - 3)
        for k in range(int(rng.integers(1, 4))):
            add_cyclist(b, rng, x + 0.75 * k, s.Y(pw + sw - 0.45), math.pi / 2 + float(rng.normal(0, 0.1)),
                        rider=False)
    if rng.random() < 0.15:
        v = float(rng.choice([-1, 1]) * rng.uniform(2.5, 4.5))
        add_cyclist(b, rng, rng.uniform(xa, xb), s.Y(rng.uniform(lane_lo, lane_hi)), 0.0 if v > 0 else math.pi,
                    velocity=(v, 0.0))


def _place_urban_frontage(b: SceneBuilder, rng: np.random.Generator, s: _Side) -> None:
    """A row of buildings at the sidewalk, with gaps (gate, fence, shrubs, a tree) between some."""
    xb, front = s.xb, s.front
    x = s.xa - rng.uniform(0, 2)
    while x < xb:
        w = min(rng.uniform(10.0, 35.0), xb + 2 - x)
        if w < 4:
            break
        if rng.random() < 0.22:  # a gap between buildings: gate, fence, shrubs
            gap = rng.uniform(3.0, 9.0)
            if rng.random() < 0.5:
                add_wall_run(b, rng, x, min(x + gap, xb), s.Y(front + 0.3), rng.uniform(1.2, 2.2), FENCE, 0.06,
                             0.0 if rng.random() < 0.5 else 0.04, float(rng.uniform(0.15, 0.4)))
            for _ in range(int(rng.integers(1, 4))):
                add_bush(b, rng, x + rng.uniform(0.5, gap), s.Y(front + rng.uniform(1.5, 5.0)))
            if rng.random() < 0.6:
                add_tree(b, rng, x + gap / 2, s.Y(front + rng.uniform(2.0, 6.0)))
            x += gap
            continue
        setback = 0.0 if rng.random() < 0.6 else rng.uniform(0.5, 4.0)
        add_building(b, rng, x, x + w, s.Y(front + setback), s.sgn, rng.uniform(10.0, 22.0), rng.uniform(7.0, 28.0))
        x += w


def _place_residential_lots(b: SceneBuilder, rng: np.random.Generator, s: _Side) -> None:
    """Lots: fence or hedge with a driveway gap, a set-back house, trees and bushes, sometimes a parked car."""
    xb, front, sgn = s.xb, s.front, s.sgn
    x = s.xa
    while x < xb - 8:
        lot = min(rng.uniform(14.0, 26.0), xb - x)
        border = rng.choice(["fence", "hedge", "none"], p=[0.4, 0.4, 0.2])
        drive = rng.uniform(0.5, max(0.6, lot - 4.0))
        for a, c in ((x, x + drive), (x + drive + 3.5, x + lot)):
            if c - a < 0.5:
                continue
            if border == "fence":
                add_wall_run(b, rng, a, c, s.Y(front + 0.3), rng.uniform(0.9, 1.8), FENCE, 0.06,
                             0.0 if rng.random() < 0.6 else 0.05, float(rng.uniform(0.15, 0.45)))
            elif border == "hedge":
                add_wall_run(b, rng, a, c, s.Y(front + 0.7), rng.uniform(0.9, 2.0), VEGETATION, 0.9, 0.2,
                             float(rng.uniform(0.3, 0.5)))
        w = min(rng.uniform(8.0, 14.0), lot - 3.0)
        setback = rng.uniform(4.0, 10.0)
        if w > 5:
            hx = x + rng.uniform(1.5, lot - w - 1.0) if lot - w > 2.5 else x + 1.0
            add_building(b, rng, hx, hx + w, s.Y(front + setback), sgn, rng.uniform(8.0, 12.0), rng.uniform(5.0, 9.0))
        for _ in range(int(rng.integers(0, 4))):
            add_tree(b, rng, x + rng.uniform(1, lot - 1), s.Y(front + rng.uniform(1.8, max(2.0, setback - 1.5))),
                     scale=float(rng.uniform(0.7, 1.1)))
        for _ in range(int(rng.integers(0, 3))):  # trees behind the house, crowns over the roof line
            add_tree(b, rng, x + rng.uniform(1, lot - 1), s.Y(front + setback + rng.uniform(11.0, 18.0)),
                     scale=float(rng.uniform(0.9, 1.4)))
        for _ in range(int(rng.integers(1, 6))):
            add_bush(b, rng, x + rng.uniform(0.5, lot - 0.5), s.Y(front + rng.uniform(1.2, max(1.5, setback - 0.8))))
        if rng.random() < 0.2:  # a car in the driveway
            add_vehicle(b, rng, x + drive + 1.75, s.Y(front + 3.0), sgn * math.pi / 2 + float(rng.normal(0, 0.05)),
                        CAR)
        x += lot


def _place_green_frontage(b: SceneBuilder, rng: np.random.Generator, s: _Side) -> None:
    """A park or verge with scattered trees and bushes, maybe a fence."""
    xa, xb, front = s.xa, s.xb, s.front
    if rng.random() < 0.4:
        add_wall_run(b, rng, xa, xb, s.Y(front + 0.4), rng.uniform(1.0, 2.0), FENCE, 0.05, 0.05,
                     float(rng.uniform(0.15, 0.4)))
    area = s.span * 35.0
    for _ in range(rng.poisson(area / rng.uniform(35.0, 90.0))):
        add_tree(b, rng, rng.uniform(xa, xb), s.Y(front + rng.uniform(1.5, 36.0)), scale=float(rng.uniform(0.7, 1.3)))
    for _ in range(rng.poisson(area / 50.0)):
        add_bush(b, rng, rng.uniform(xa, xb), s.Y(front + rng.uniform(1.0, 36.0)))


def _place_shrub_row(b: SceneBuilder, rng: np.random.Generator, s: _Side, style: int) -> None:
    """Sometimes a row of shrubs along the frontage edge."""
    if style != URBAN and rng.random() < 0.4 or style == URBAN and rng.random() < 0.15:
        x = s.xa + rng.uniform(0, 2)
        while x < s.xb:
            add_bush(b, rng, x, s.Y(s.front + rng.uniform(0.6, 1.6)))
            x += rng.uniform(1.2, 3.5)


def _place_back_row(b: SceneBuilder, rng: np.random.Generator, s: _Side, style: int) -> None:
    """Sometimes a back row of taller buildings behind the frontage, seen over it and through gaps."""
    if rng.random() < {URBAN: 0.7, RESIDENTIAL: 0.4, GREEN: 0.6}[style]:
        back = s.front + (38.0 if style == GREEN else rng.uniform(26.0, 40.0))
        x = s.xa
        while x < s.xb - 6:
            w = min(rng.uniform(15.0, 40.0), s.xb - x)
            if rng.random() < 0.75:
                add_building(b, rng, x, x + w, s.Y(back), s.sgn, rng.uniform(12.0, 25.0), rng.uniform(10.0, 32.0))
            x += w + rng.uniform(0.0, 6.0)


def _populate_median(b: SceneBuilder, rng: np.random.Generator, layout: StreetLayout, blk: int) -> None:
    x0, x1 = float(layout.bounds[blk]), float(layout.bounds[blk + 1])
    xa = x0 + layout.cross_width[blk] / 2 + 2.0
    xb = x1 - layout.cross_width[blk + 1] / 2 - 2.0
    if xb - xa < 5:
        return
    if layout.median_raw == TERRAIN and layout.median_width > 2.0 and rng.random() < 0.7:
        sp = rng.uniform(9.0, 18.0)
        for x in np.arange(xa + rng.uniform(0, sp), xb, sp):
            add_tree(b, rng, float(x), float(rng.normal(0, 0.15)), scale=0.8)
    else:
        sp = rng.uniform(28.0, 40.0)
        for x in np.arange(xa + rng.uniform(0, sp), xb, sp):
            add_street_light(b, rng, float(x), 0.0, 1)
    if rng.random() < 0.6:
        add_sign(b, rng, xa + 1.0, 0.0, facing=1)


def _populate_traffic(b: SceneBuilder, rng: np.random.Generator, layout: StreetLayout, ego_speed: float) -> float:
    """Moving traffic on the main street (wrapped around the ego) and the cars just ahead of
    and behind it in its own lane. Returns the ego lane's y."""
    ego_y = layout.lane_center(0, 0)
    for side in (0, 1):
        lanes = layout.lanes_right if side == 0 else layout.lanes_left
        direction = 1.0 if side == 0 else -1.0
        for lane in range(lanes):
            if side == 0 and lane == 0:
                continue  # the ego's lane: only the leading and following car below
            speed = direction * rng.uniform(6.0, 15.0)
            y = layout.lane_center(side, lane)
            x = EGO_START_X - TRAFFIC_HALF_WINDOW + rng.uniform(0, 30)
            while x < EGO_START_X + TRAFFIC_HALF_WINDOW:
                kind = int(rng.choice([CAR, TRUCK, OTHER_VEHICLE, MOTORCYCLIST], p=[0.83, 0.06, 0.07, 0.04]))
                yaw = 0.0 if direction > 0 else math.pi
                if kind == MOTORCYCLIST:
                    add_motorcycle(b, rng, x + 1.0, y + float(rng.normal(0, 0.3)), yaw, velocity=(speed, 0.0),
                                   wrap=True, rider=True)
                    length = 2.0
                else:
                    length = add_vehicle(b, rng, x, y + float(rng.normal(0, 0.12)), yaw, kind, moving=True,
                                         velocity=(speed, 0.0), wrap=True, from_rear=True)
                x += length + rng.uniform(12.0, 90.0)
    if rng.random() < 0.65:
        add_vehicle(b, rng, EGO_START_X + rng.uniform(12.0, 45.0), ego_y, 0.0, CAR, moving=True,
                    velocity=(ego_speed, 0.0))
    if rng.random() < 0.5:
        add_vehicle(b, rng, EGO_START_X - rng.uniform(9.0, 28.0), ego_y, 0.0, CAR, moving=True,
                    velocity=(ego_speed, 0.0))
    for side in (0, 1):  # bicyclists along the road's edge with the traffic
        direction = 1.0 if side == 0 else -1.0
        y = (-1 if side == 0 else 1) * (layout.edge(side) - 0.5)
        for _ in range(int(rng.integers(0, 3))):
            add_cyclist(b, rng, EGO_START_X + rng.uniform(-TRAFFIC_HALF_WINDOW, TRAFFIC_HALF_WINDOW), y,
                        0.0 if direction > 0 else math.pi, velocity=(direction * rng.uniform(3.0, 7.0), 0.0),
                        wrap=True)
    return ego_y


def _populate_cross_streets(b: SceneBuilder, rng: np.random.Generator, layout: StreetLayout, k: int) -> None:
    """Cars waiting in a cross street at the junction."""
    wc = float(layout.cross_width[k])
    xc = float(layout.bounds[k])
    for side in (0, 1):
        if not layout.cross_side[k, side] or rng.random() > 0.5:
            continue
        sgn = 1 if side == 1 else -1
        # right-hand traffic: cars approaching the main street from the left side drive towards -y
        lane_x = xc + (wc / 4 if side == 1 else -wc / 4)
        near = slice(k - 1, min(k + 1, layout.num_blocks))
        e = layout.edge(side) + float(layout.parking_width[near, side].max()) + 3.0
        for q in range(int(rng.integers(1, 4))):
            add_vehicle(b, rng, lane_x, sgn * (e + 6.5 * q), -sgn * math.pi / 2 + float(rng.normal(0, 0.03)), CAR)


def generate_town(seed: int, sequence: str, num_scans: int) -> Town:
    """The town for (seed, sequence), long enough for `num_scans` scans plus sensor range."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if num_scans < 1:
        raise ValueError(f"scans must be >= 1, got {num_scans}")
    rng = town_rng(seed, sequence, 0)
    lane_width = float(rng.uniform(3.0, 3.6))
    lanes = [(1, 1), (2, 2), (2, 1), (1, 2)][int(rng.choice(4, p=[0.6, 0.2, 0.1, 0.1]))]
    median = float(rng.uniform(1.5, 4.0)) if lanes == (2, 2) and rng.random() < 0.5 else 0.0
    ego_speed = float(rng.uniform(4.0, 11.0))
    sway = (float(rng.uniform(0.05, 0.25)), float(rng.uniform(8.0, 20.0)), float(rng.uniform(0, 2 * np.pi)))
    p_urban = float(rng.uniform(0.15, 0.6))
    needed = EGO_START_X + ego_speed * SCAN_PERIOD * (num_scans - 1) + 200.0

    params: list[dict] = []
    total = 0.0
    while total < needed:
        params.append(_block_params(town_rng(seed, sequence, 1, len(params)), p_urban))
        total += params[-1]["length"]
    nb = len(params)
    bounds = np.concatenate([[0.0], np.cumsum([p["length"] for p in params])])
    cross_width = np.array([0.0] + [p["cross_width"] for p in params[1:]] + [0.0])
    cross_side = np.array([[False, False]] + [p["cross_side"] for p in params[1:]] + [[False, False]], dtype=bool)
    layout = StreetLayout(
        lane_width=lane_width, lanes_left=lanes[1], lanes_right=lanes[0], median_width=median,
        median_raw=TERRAIN if rng.random() < 0.6 else OTHER_GROUND, kerb_height=float(rng.uniform(0.1, 0.17)),
        center_dashed=bool(rng.random() < 0.6), dash_phase=float(rng.uniform(0, 9)),
        terrain_bump=float(rng.uniform(0.05, 0.25)),
        terrain_phase=(float(rng.uniform(0, 6.3)), float(rng.uniform(0, 6.3))),
        bounds=bounds, cross_width=cross_width, cross_side=cross_side,
        crosswalk=np.array([False] + [p["crosswalk"] for p in params[1:]] + [False], dtype=bool),
        parking_width=np.array([p["parking"] for p in params]),
        sidewalk_width=np.array([p["sidewalk"] for p in params]),
        frontage_raw=np.array([p["frontage"] for p in params], dtype=np.int64),
    )
    builder = SceneBuilder()
    ego_y = _populate_traffic(builder, town_rng(seed, sequence, 2), layout, ego_speed)
    for blk in range(nb):
        brng = town_rng(seed, sequence, 3, blk)
        for side in (0, 1):
            _populate_side(builder, brng, layout, blk, side, params[blk]["style"][side])
        if median > 0:
            _populate_median(builder, brng, layout, blk)
        if blk > 0:
            _populate_cross_streets(builder, brng, layout, blk)
    return Town(layout=layout, prims=builder.build(), ego_speed=ego_speed, ego_lane_y=ego_y, sway=sway)
