"""The street's ground: a two-level height field (road level and kerb level) described
analytically, so that a ray's ground hit costs two plane intersections and a lookup.

World frame: x along the main street, y to the left, z up, road surface at z = 0. The
street is cut into blocks by cross streets; each block side has its own parking strip and
sidewalk widths. Everything beyond the sidewalk is terrain (lawns, verges, yards).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Raw SemanticKITTI ids used for the ground.
ROAD, LANE_MARKING, PARKING, SIDEWALK, OTHER_GROUND, TERRAIN = 40, 60, 44, 48, 49, 72

GROUND_ALBEDO = {ROAD: 0.17, LANE_MARKING: 0.62, PARKING: 0.13, SIDEWALK: 0.30, OTHER_GROUND: 0.24,
                 TERRAIN: 0.40}


@dataclass
class StreetLayout:
    lane_width: float
    lanes_left: int
    lanes_right: int
    median_width: float  # 0 = painted centre line; else a raised island
    median_raw: int  # TERRAIN (grass) or OTHER_GROUND (paved island)
    kerb_height: float
    center_dashed: bool
    dash_phase: float
    terrain_bump: float  # amplitude (m) of the lawns' unevenness
    terrain_phase: tuple[float, float]
    # Block b spans [bounds[b], bounds[b+1]); a cross street is centred on each inner bound.
    bounds: np.ndarray  # (B+1,)
    cross_width: np.ndarray  # (B+1,) 0 where there is no cross street
    cross_side: np.ndarray  # (B+1, 2) bool: the cross street leaves to the right (0) / left (1)
    crosswalk: np.ndarray  # (B+1,) bool: zebra stripes on the main road before the junction
    parking_width: np.ndarray  # (B, 2) per block and side (0 right, 1 left); 0 = no strip
    sidewalk_width: np.ndarray  # (B, 2)
    frontage_raw: np.ndarray  # (B, 2) ground class beyond the sidewalk: TERRAIN or OTHER_GROUND

    @property
    def num_blocks(self) -> int:
        return len(self.bounds) - 1

    def edge(self, side: int) -> float:
        """Distance from the street axis to the kerb line of the road on that side."""
        lanes = self.lanes_left if side == 1 else self.lanes_right
        return self.median_width / 2.0 + lanes * self.lane_width

    def lane_center(self, side: int, lane: int) -> float:
        """y of the centre of lane `lane` (0 = innermost) on that side."""
        offset = self.median_width / 2.0 + (lane + 0.5) * self.lane_width
        return offset if side == 1 else -offset

    def block_of(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.searchsorted(self.bounds, x, side="right") - 1, 0, self.num_blocks - 1)

    def _nearest_cross(self, x: np.ndarray) -> np.ndarray:
        i = np.clip(np.searchsorted(self.bounds, x), 1, len(self.bounds) - 1)
        left = self.bounds[i - 1]
        return np.where(np.abs(x - left) < np.abs(self.bounds[i] - x), i - 1, i)

    def classify(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Raw SemanticKITTI id of the ground at world (x, y)."""
        side = (y >= 0).astype(np.int64)
        ay = np.abs(y)
        edge = np.where(side == 1, self.edge(1), self.edge(0))
        e = ay - edge  # outward distance from the kerb line of the road
        blk = self.block_of(x)
        pw = self.parking_width[blk, side]
        sw = self.sidewalk_width[blk, side]
        raw = np.full(x.shape, ROAD, dtype=np.int64)
        raw[e >= 0] = PARKING
        raw[e >= pw] = SIDEWALK
        front = e >= pw + sw
        raw[front] = self.frontage_raw[blk[front], side[front]]

        k = self._nearest_cross(x)
        dx = np.abs(x - self.bounds[k])
        wc = self.cross_width[k]
        present = self.cross_side[k, side] & (wc > 0)
        raw[present & (dx < wc / 2 + 6.0) & (e >= 0) & (e < pw)] = ROAD  # no parking at junctions
        raw[present & (dx >= wc / 2) & (dx < wc / 2 + sw) & (e >= pw + sw)] = SIDEWALK
        in_cross = present & (dx < wc / 2) & (e >= 0)
        raw[in_cross] = ROAD

        on_road = e < 0
        if self.median_width > 0:
            median = ay < self.median_width / 2
            raw[median] = self.median_raw
            on_road &= ~median
        # Paint: edge lines, lane separators, centre line, zebra crossings.
        junction = (wc > 0) & (dx < wc / 2) & self.cross_side[k].any(axis=1)
        dashed = np.mod(x + self.dash_phase, 9.0) < 3.0
        q = ay - self.median_width / 2
        paint = (e > -0.3) & (e < -0.15) & ~junction
        lanes = np.where(side == 1, self.lanes_left, self.lanes_right)
        for j in range(1, max(self.lanes_left, self.lanes_right)):
            paint |= (np.abs(q - j * self.lane_width) < 0.07) & dashed & (j < lanes) & ~junction
        if self.median_width == 0:
            paint |= (ay < 0.08) & (dashed if self.center_dashed else True) & ~junction
        zebra = self.crosswalk[k] & (dx > wc / 2 + 0.5) & (dx < wc / 2 + 3.5) & (np.mod(y + 100.0, 1.0) < 0.5)
        paint |= zebra
        raw[on_road & paint] = LANE_MARKING
        return raw

    def raised(self, raw: np.ndarray) -> np.ndarray:
        """Whether ground of that class sits at kerb height."""
        return (raw == SIDEWALK) | (raw == TERRAIN) | (raw == OTHER_GROUND)

    def terrain_height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Unevenness of lawns above kerb level: gentle, never below it."""
        a, b = self.terrain_phase
        return self.terrain_bump * (0.5 + 0.5 * np.sin(0.83 * x + a) * np.sin(0.61 * y + b)) ** 2

    def intersect(self, origin: np.ndarray, dirs: np.ndarray, max_t: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """First ground hit of rays from one origin: (t, raw id, is_wall). t = inf for no hit.

        Rays that land on raised ground after passing above road level went through a kerb
        face; a short bisection finds the face, labelled as the raised class behind it."""
        n = len(dirs)
        t = np.full(n, np.inf)
        raw = np.zeros(n, dtype=np.int64)
        wall = np.zeros(n, dtype=bool)
        oz = origin[2]
        dz = dirs[:, 2]
        idx = np.nonzero(dz < -1e-6)[0]
        d = dirs[idx]
        t_hi = (self.kerb_height - oz) / d[:, 2]
        t_lo = -oz / d[:, 2]
        keep = t_hi <= max_t
        idx, d, t_hi, t_lo = idx[keep], d[keep], t_hi[keep], t_lo[keep]

        p_hi = origin + t_hi[:, None] * d
        raw_hi = self.classify(p_hi[:, 0], p_hi[:, 1])
        up_hi = self.raised(raw_hi)
        p_lo = origin + t_lo[:, None] * d
        raw_lo = self.classify(p_lo[:, 0], p_lo[:, 1])
        up_lo = self.raised(raw_lo)

        res_t = np.where(up_hi, t_hi, t_lo)
        res_raw = np.where(up_hi, raw_hi, raw_lo)
        kerb = ~up_hi & up_lo
        if kerb.any():
            lo = t_hi[kerb].copy()  # not raised here
            hi = t_lo[kerb].copy()  # raised here
            dk = d[kerb]
            for _ in range(8):
                mid = 0.5 * (lo + hi)
                pm = origin + mid[:, None] * dk
                up = self.raised(self.classify(pm[:, 0], pm[:, 1]))
                hi = np.where(up, mid, hi)
                lo = np.where(up, lo, mid)
            pk = origin + hi[:, None] * dk
            res_t[kerb] = hi
            res_raw[kerb] = self.classify(pk[:, 0], pk[:, 1])
            wall[idx[kerb]] = True
        # Lawns are uneven: two fixed-point steps onto the bumped surface.
        lawn = (res_raw == TERRAIN) & ~kerb
        if lawn.any() and self.terrain_bump > 0:
            tl = res_t[lawn]
            dl = d[lawn]
            for _ in range(2):
                p = origin + tl[:, None] * dl
                h = self.kerb_height + self.terrain_height(p[:, 0], p[:, 1])
                tl = (h - oz) / dl[:, 2]
            res_t[lawn] = tl
        t[idx] = res_t
        raw[idx] = res_raw
        return t, raw, wall
