"""Label maps of docs/data.md: raw dataset ids to training classes, names and RGB colours.

Training class 0 is "unlabeled" and ignored by every loss and metric; a raw id that
the table does not know is a data error, never a silent 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from pvd_core.errors import PvdError


class LabelError(PvdError, ValueError):
    """A label file holds ids the label map does not know, or its length is wrong."""


@dataclass(frozen=True)
class LabelMap:
    name: str
    class_names: tuple[str, ...]  # index 0 = unlabeled
    colors: tuple[tuple[int, int, int], ...]  # RGB per class
    raw_to_train: dict[int, int]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def lut(self) -> np.ndarray:
        """Lookup table raw id -> training class, -1 for ids the map does not know."""
        size = max(self.raw_to_train) + 1
        table = np.full(size, -1, dtype=np.int64)
        for raw, train in self.raw_to_train.items():
            table[raw] = train
        return table

    def map_raw(self, raw: np.ndarray, source: Optional[str] = None) -> np.ndarray:
        """Map raw semantic ids to training classes (uint8), rejecting unknown ids."""
        raw = np.asarray(raw, dtype=np.int64)
        table = self.lut()
        in_table = (raw >= 0) & (raw < table.size)
        mapped = np.full(raw.shape, -1, dtype=np.int64)
        mapped[in_table] = table[raw[in_table]]
        bad = mapped < 0
        if bad.any():
            unknown = np.unique(raw[bad])[:10].tolist()
            where = f"{source}: " if source else ""
            raise LabelError(
                f"{where}{int(bad.sum())} points carry raw label ids unknown to the {self.name} map: "
                f"{unknown}")
        return mapped.astype(np.uint8)

    def color_array(self) -> np.ndarray:
        """(C, 3) uint8 RGB colours, one row per class."""
        return np.asarray(self.colors, dtype=np.uint8)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "class_names": list(self.class_names),
            "colors": [list(c) for c in self.colors],
            "raw_to_train": {int(k): int(v) for k, v in self.raw_to_train.items()},
        }

    @staticmethod
    def from_dict(data: dict) -> "LabelMap":
        return LabelMap(
            name=str(data["name"]),
            class_names=tuple(data["class_names"]),
            colors=tuple(tuple(int(x) for x in c) for c in data["colors"]),
            raw_to_train={int(k): int(v) for k, v in data["raw_to_train"].items()},
        )


_SK_RAW = {
    0: 0, 1: 0, 52: 0, 99: 0,
    10: 1, 11: 2, 15: 3, 18: 4, 13: 5, 16: 5, 20: 5, 30: 6, 31: 7, 32: 8,
    40: 9, 60: 9, 44: 10, 48: 11, 49: 12, 50: 13, 51: 14, 70: 15, 71: 16, 72: 17, 80: 18, 81: 19,
    252: 1, 253: 7, 254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}

SEMANTIC_KITTI = LabelMap(
    name="semantickitti",
    class_names=(
        "unlabeled", "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist",
        "motorcyclist", "road", "parking", "sidewalk", "other-ground", "building", "fence",
        "vegetation", "trunk", "terrain", "pole", "traffic-sign",
    ),
    # semantic-kitti.yaml's learning colours, converted from its BGR order to RGB.
    colors=(
        (0, 0, 0), (100, 150, 245), (100, 230, 245), (30, 60, 150), (80, 30, 180), (0, 0, 255),
        (255, 30, 30), (255, 40, 200), (150, 30, 90), (255, 0, 255), (255, 150, 255), (75, 0, 75),
        (175, 0, 75), (255, 200, 0), (255, 120, 50), (0, 175, 0), (135, 60, 0), (150, 240, 80),
        (255, 240, 150), (255, 0, 0),
    ),
    raw_to_train=_SK_RAW,
)

_NUSC_RAW = {raw: 0 for raw in (0, 1, 5, 7, 8, 10, 11, 13, 19, 20, 29, 31)}
_NUSC_RAW.update({
    2: 7, 3: 7, 4: 7, 6: 7, 9: 1, 12: 8, 14: 2, 15: 3, 16: 3, 17: 4, 18: 5, 21: 6, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 30: 16,
})

NUSCENES = LabelMap(
    name="nuscenes",
    class_names=(
        "unlabeled", "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle",
        "pedestrian", "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat",
        "sidewalk", "terrain", "manmade", "vegetation",
    ),
    colors=(
        (0, 0, 0), (112, 128, 144), (220, 20, 60), (255, 127, 80), (255, 158, 0), (233, 150, 70),
        (255, 61, 99), (0, 0, 230), (47, 79, 79), (255, 140, 0), (255, 99, 71), (0, 207, 191),
        (175, 0, 75), (75, 0, 75), (112, 180, 60), (222, 184, 135), (0, 175, 0),
    ),
    raw_to_train=_NUSC_RAW,
)

LABEL_MAPS = {"semantickitti": SEMANTIC_KITTI, "nuscenes": NUSCENES}


def label_map_for(kind: str) -> LabelMap:
    try:
        return LABEL_MAPS[kind]
    except KeyError:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {sorted(LABEL_MAPS)}") from None


# Canonical raw id written for each training class (SemanticKITTI's learning_map_inv;
# for nuScenes the first fine-grained id of each class, vehicle.bus.rigid for bus).
CANONICAL_RAW_IDS: dict[str, tuple[int, ...]] = {
    "semantickitti": (0, 10, 11, 15, 18, 20, 30, 31, 32, 40, 44, 48, 49, 50, 51, 70, 71, 72, 80, 81),
    "nuscenes": (0, 9, 14, 16, 17, 18, 21, 2, 12, 22, 23, 24, 25, 26, 27, 28, 30),
}


def train_to_raw_table(label_map: LabelMap) -> np.ndarray:
    """(C,) uint32 raw id per training class, so predictions can be written in the dataset's ids.

    Maps without a canonical table use the smallest raw id of each class.
    """
    table = CANONICAL_RAW_IDS.get(label_map.name)
    if table is None or len(table) != label_map.num_classes:
        smallest: dict[int, int] = {}
        for raw, train in sorted(label_map.raw_to_train.items()):
            smallest.setdefault(train, raw)
        missing = [c for c in range(label_map.num_classes) if c not in smallest]
        if missing:
            raise LabelError(f"label map {label_map.name!r} has no raw id for classes {missing}")
        table = tuple(smallest[c] for c in range(label_map.num_classes))
    return np.asarray(table, dtype=np.uint32)


def train_to_raw(label_map: LabelMap, classes: np.ndarray) -> np.ndarray:
    """Training classes -> canonical raw ids (uint32), e.g. for SemanticKITTI .label output."""
    classes = np.asarray(classes)
    table = train_to_raw_table(label_map)
    if classes.size and (classes.min() < 0 or classes.max() >= table.size):
        raise LabelError(f"class indices must be in 0..{table.size - 1} for the {label_map.name} map, "
                         f"got range {int(classes.min())}..{int(classes.max())}")
    return table[classes.astype(np.int64, copy=False)]
