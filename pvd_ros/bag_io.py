"""Bag reading (rosbag2 and ROS 1) and rosbag2 writing of PointCloud2 with the pure-Python ``rosbags`` library.

Bags carry their own ground truth: besides x, y, z, intensity (float32) a cloud may hold a
``label`` field, so a bag can be scored without the dataset it came from. The field means
one of two things, told apart by its datatype (:func:`label_kind`):

- ``uint32``: a raw SemanticKITTI word (semantic id in the lower 16 bits), what
  ``pvd_bag from-kitti`` writes; mapped to class indices with the checkpoint's label map;
- ``uint16`` or ``uint8`` in a cloud that also has a ``confidence`` field: the class index
  the segmentation node publishes (a bag recorded from its output), used as it is.

Anything else is refused with a message naming the field, its datatype and the bag.

Which reader opens a path is decided by what is on disk, never by the name
(:func:`open_bag_reader`): a directory with ``metadata.yaml`` is a rosbag2 (also when it is
called ``drive.bag``), a file starting with ``#ROSBAG V2.0`` a ROS 1 bag, a ``.mcap`` /
``.db3`` file a single rosbag2 storage file. Point decoding goes through
:mod:`pvd_ros.cloud_codec` (the project's one PointCloud2 codec, which works on rosbags
messages as well as rclpy ones); this module only moves messages in and out of bags and
reads the extra ``label`` column with the same view and the same layout checks.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np
from tqdm import tqdm
from rosbags.rosbag1 import Reader as Reader1
from rosbags.rosbag2 import Reader as Reader2
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from pvd_core.errors import PvdError
from pvd_ros import cloud_codec

PathLike = Union[str, Path]

POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
DEFAULT_TOPIC = "/points"
DEFAULT_FRAME = "lidar"
LABEL_FIELD = "label"
STORAGES: dict[str, StoragePlugin] = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
BAG_VERSION = 9  # rosbag2 metadata version written by Jazzy and later

_TYPESTORES: dict[Stores, Any] = {}


class BagError(PvdError, ValueError):
    """A bag cannot be read or written as asked; the message names the bag and topic."""


def typestore(store: Stores = Stores.ROS2_JAZZY) -> Any:
    """The message definitions used to (de)serialise: ROS 2 Jazzy (PointCloud2 is the same in every
    ROS 2 distribution) for rosbag2 CDR, ``Stores.ROS1_NOETIC`` for ROS 1 bags."""
    if store not in _TYPESTORES:
        _TYPESTORES[store] = get_typestore(store)
    return _TYPESTORES[store]


# ---------------------------------------------------------------------------- writing
# x, y, z, intensity as float32 and the raw label word as uint32: point_step 20.
_FLOAT32, _UINT32 = 7, 6  # sensor_msgs/PointField datatypes
_GT_FIELDS = (("x", 0, _FLOAT32), ("y", 4, _FLOAT32), ("z", 8, _FLOAT32), ("intensity", 12, _FLOAT32),
              (LABEL_FIELD, 16, _UINT32))


def make_cloud(points: np.ndarray, raw_labels: Optional[np.ndarray], stamp_ns: int,
               frame_id: str = DEFAULT_FRAME) -> Any:
    """A rosbags PointCloud2 of (N, >=4) points, with a ``label`` field when labels are given.

    The point layout is the PointCloud2 library's own dtype for the declared fields
    (``dtype_from_fields``), so reading it back goes through exactly the same mapping.
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] < 4:
        raise ValueError(f"make_cloud: points must be (N, >=4) x, y, z, intensity, got shape {points.shape}")
    n = points.shape[0]
    store = typestore()
    PointField = store.types["sensor_msgs/msg/PointField"]
    specs = _GT_FIELDS if raw_labels is not None else _GT_FIELDS[:4]
    step = specs[-1][1] + 4
    fields = [PointField(name=name, offset=off, datatype=dt, count=1) for name, off, dt in specs]
    structured = np.zeros(n, dtype=cloud_codec._pc2.dtype_from_fields(fields, point_step=step))
    for column, name in enumerate(("x", "y", "z", "intensity")):
        structured[name] = points[:, column]
    if raw_labels is not None:
        raw_labels = np.asarray(raw_labels)
        if raw_labels.shape != (n,):
            raise ValueError(f"make_cloud: labels of shape {raw_labels.shape} for {n} points")
        structured[LABEL_FIELD] = raw_labels.astype(np.uint32)
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    header = Header(stamp=Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000)),
                    frame_id=frame_id)
    return store.types[POINTCLOUD2](
        header=header, height=1, width=n, fields=fields, is_bigendian=sys.byteorder != "little",
        point_step=step, row_step=step * n, data=structured.view(np.uint8).reshape(-1),
        is_dense=bool(np.isfinite(points[:, :3]).all()))


class CloudBagWriter:
    """Writes PointCloud2 messages to one topic of a new rosbag2 (use as a context manager)."""

    def __init__(self, path: PathLike, topic: str = DEFAULT_TOPIC, storage: str = "mcap") -> None:
        self.path = Path(path)
        if storage not in STORAGES:
            raise BagError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
        if self.path.exists():
            raise BagError(f"{self.path}: output bag already exists (rosbag2 will not overwrite it); "
                           "remove it or choose another --out")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.topic = topic
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        self._connection: Any = None
        self.count = 0

    def __enter__(self) -> "CloudBagWriter":
        self._writer.open()
        self._connection = self._writer.add_connection(self.topic, POINTCLOUD2, typestore=typestore())
        return self

    def __exit__(self, *exc: Any) -> None:
        self._writer.close()

    def write(self, msg: Any, timestamp_ns: int) -> None:
        """Serialise a rosbags PointCloud2 and write it with the given receive time."""
        self.write_serialized(typestore().serialize_cdr(msg, POINTCLOUD2), timestamp_ns)

    def write_serialized(self, data: Union[bytes, memoryview], timestamp_ns: int) -> None:
        """Write an already CDR-serialised PointCloud2 (e.g. rclpy's serialize_message)."""
        self._writer.write(self._connection, int(timestamp_ns), data)
        self.count += 1


# ---------------------------------------------------------------------------- reading
@dataclass
class BagCloud:
    """One cloud of a bag: receive time, header stamp, points and (if the cloud has them) raw labels."""

    index: int
    timestamp_ns: int  # the bag's receive (log) time
    stamp_ns: int  # header.stamp
    frame_id: str
    msg: Any  # the rosbags PointCloud2 (its data is a uint8 numpy array)


def stamp_ns_of(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


ROS1_MAGIC = b"#ROSBAG V2.0\n"  # the first line of every ROS 1 bag file
ROSBAG2_FILE_SUFFIXES = tuple(k for k in Reader2.STORAGE_PLUGINS if k.startswith("."))  # .mcap, .db3


def open_bag_reader(path: PathLike) -> tuple[str, Any]:
    """("rosbag2" or "rosbag1", an unopened rosbags reader) for the bag at ``path``.

    Chosen by what is on disk, not by the name: rosbags' ``AnyReader`` takes every path
    ending in ``.bag`` for a ROS 1 file, so the rosbag2 directory that ``from-kitti --out
    drive.bag`` writes would fail with "Is a directory". Reading and deserialising stay
    the library's (``rosbag1.Reader`` / ``rosbag2.Reader``); a path that is none of the
    three kinds raises one BagError line naming the path and what was tried.
    """
    path = Path(path)
    if not path.exists():
        raise BagError(f"{path}: bag not found")
    if path.is_dir():
        if (path / "metadata.yaml").is_file():
            return "rosbag2", Reader2(path)
        raise BagError(f"{path}: not a bag: tried a rosbag2 directory, but it has no metadata.yaml")
    with open(path, "rb") as f:
        head = f.read(len(ROS1_MAGIC))
    if head == ROS1_MAGIC:
        return "rosbag1", Reader1(path)
    if path.suffix in ROSBAG2_FILE_SUFFIXES:
        return "rosbag2", Reader2(path)
    raise BagError(f"{path}: not a bag: tried a rosbag2 directory (it is a file), a ROS 1 bag (it does not start "
                   f"with {ROS1_MAGIC.decode().strip()!r}) and a rosbag2 storage file (its name does not end in "
                   f"{' or '.join(ROSBAG2_FILE_SUFFIXES)})")


class CloudBagReader:
    """Reads the PointCloud2 messages of one topic of a bag: rosbag2 (directory, or one .mcap/.db3 file) or ROS 1."""

    def __init__(self, path: PathLike, topic: str = DEFAULT_TOPIC) -> None:
        self.path = Path(path)
        self.topic = topic
        self.kind, self._reader = open_bag_reader(self.path)
        if self.kind == "rosbag1":
            self._deserialize = typestore(Stores.ROS1_NOETIC).deserialize_ros1
        else:
            self._deserialize = typestore().deserialize_cdr

    def __enter__(self) -> "CloudBagReader":
        try:
            self._reader.open()
        except Exception as exc:  # rosbags raises its own ReaderError types
            raise BagError(f"{self.path}: cannot open as a {self.kind}: {type(exc).__name__}: {exc}") from exc
        self._connections = [c for c in self._reader.connections if c.topic == self.topic]
        if not self._connections:
            topics = sorted({f"{c.topic} ({c.msgtype})" for c in self._reader.connections})
            self._reader.close()
            raise BagError(f"{self.path}: no topic {self.topic!r} in the {self.kind}; it has {topics or 'no topics'}")
        wrong = [c.msgtype for c in self._connections if c.msgtype != POINTCLOUD2]
        if wrong:
            self._reader.close()
            raise BagError(f"{self.path}: topic {self.topic!r} has type {wrong[0]}, expected {POINTCLOUD2}")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._reader.close()

    def __len__(self) -> int:
        return int(sum(c.msgcount for c in self._connections))

    def __iter__(self) -> Iterator[BagCloud]:
        for index, (connection, timestamp, raw) in enumerate(self._reader.messages(connections=self._connections)):
            try:
                msg = self._deserialize(raw, connection.msgtype)
            except Exception as exc:
                raise BagError(f"{self.path}: message {index} on {self.topic!r} cannot be deserialised: "
                               f"{type(exc).__name__}: {exc}") from exc
            yield BagCloud(index=index, timestamp_ns=int(timestamp), stamp_ns=stamp_ns_of(msg.header),
                           frame_id=str(msg.header.frame_id), msg=msg)


def has_label_field(msg: Any) -> bool:
    return any(f.name == LABEL_FIELD for f in msg.fields)


def read_label_field(msg: Any) -> np.ndarray:
    """(N,) uint32 values of a cloud's ``label`` field, in the cloud's point order (what they mean: label_kind).

    Raises cloud_codec.CloudError (naming the field) when the layout is inconsistent or
    the field is not an integer type.
    """
    cloud_codec.check_layout(msg)
    field = next((f for f in msg.fields if f.name == LABEL_FIELD), None)
    if field is None:
        raise cloud_codec.CloudError("missing_field", f"PointCloud2 has no {LABEL_FIELD!r} field; fields are "
                                     f"{sorted(f.name for f in msg.fields)}")
    dtype = cloud_codec.FIELD_DTYPES[int(field.datatype)]
    if dtype.kind not in "iu" or int(field.count) != 1:
        raise cloud_codec.CloudError("datatype", f"PointCloud2 field {LABEL_FIELD!r} must be one integer per "
                                     f"point, got {dtype} x {field.count}")
    return cloud_codec.point_view(msg)[LABEL_FIELD].reshape(-1).astype(np.uint32)


RAW_WORD = "raw_word"  # uint32 SemanticKITTI word: what from-kitti writes
CLASS_INDEX = "class_index"  # uint16/uint8 beside a confidence field: what segment_node publishes
CONFIDENCE_FIELD = "confidence"
_UINT8, _UINT16 = 2, 4  # sensor_msgs/PointField datatypes


def label_kind(msg: Any, source: str) -> str:
    """RAW_WORD or CLASS_INDEX for a cloud's ``label`` field, told apart by datatype (see the module doc).

    Raises BagError naming ``source`` (bag, topic, message), the field and its datatype when
    the field could be either (or neither).
    """
    field = next((f for f in msg.fields if f.name == LABEL_FIELD), None)
    if field is None:
        raise BagError(f"{source}: no {LABEL_FIELD!r} field")
    datatype = int(field.datatype)
    has_confidence = any(f.name == CONFIDENCE_FIELD for f in msg.fields)
    if datatype == _UINT32 and int(field.count) == 1:
        return RAW_WORD
    if datatype in (_UINT8, _UINT16) and int(field.count) == 1 and has_confidence:
        return CLASS_INDEX
    dtype = cloud_codec.FIELD_DTYPES.get(datatype, f"datatype {datatype}")
    beside = "beside" if has_confidence else "without"
    raise BagError(
        f"{source}: field {LABEL_FIELD!r} is {dtype} x {field.count} {beside} a {CONFIDENCE_FIELD!r} field: "
        f"cannot tell whether it holds raw SemanticKITTI ids (uint32, as pvd_bag from-kitti writes) or class "
        f"indices (uint16 or uint8 beside {CONFIDENCE_FIELD!r}, as segment_node publishes); refusing to score it")


def ground_truth(msg: Any, label_map: Any, source: str) -> np.ndarray:
    """(N,) uint8 class indices of a cloud's ``label`` field under ``label_map``, whichever kind it is.

    Raw words are mapped (lower 16 bits) with the label map; class indices are checked
    against its number of classes. Errors name ``source``.
    """
    kind = label_kind(msg, source)
    values = read_label_field(msg)
    if kind == RAW_WORD:
        return label_map.map_raw(values & 0xFFFF, source=f"{source} field {LABEL_FIELD!r}")
    if values.size and int(values.max()) >= label_map.num_classes:
        raise BagError(f"{source}: field {LABEL_FIELD!r} holds class index {int(values.max())}, but the "
                       f"{label_map.name} label map of the checkpoint has {label_map.num_classes} classes")
    return values.astype(np.uint8)


# ---------------------------------------------------------------------------- SemanticKITTI -> bag
DEFAULT_START_S = 1_700_000_000  # a fixed, plausible epoch: the same sequence always makes the same bag


def kitti_to_bag(
    data_root: PathLike,
    sequence: str,
    out: PathLike,
    storage: str = "mcap",
    rate_hz: float = 10.0,
    max_scans: Optional[int] = None,
    topic: str = DEFAULT_TOPIC,
    frame_id: str = DEFAULT_FRAME,
    start_s: float = DEFAULT_START_S,
    progress: bool = True,
) -> dict[str, Any]:
    """Write a SemanticKITTI-layout sequence as a rosbag2: one PointCloud2 per scan.

    Header stamp and bag receive time of scan i are ``start_s + i / rate_hz``. The raw
    label words travel in the ``label`` field when the sequence has labels (all scans or
    none: a sequence with some label files missing is refused, naming the first one).
    """
    from pvd_core.data.semantickitti import DataError, read_points, read_raw_labels, scan_files

    if rate_hz <= 0:
        raise BagError(f"--rate must be > 0 Hz, got {rate_hz}")
    if max_scans is not None and max_scans < 1:
        raise BagError(f"--max-scans must be >= 1, got {max_scans}")
    sequence = str(sequence)
    pairs = scan_files(data_root, [sequence], require_labels=False)
    if max_scans is not None:
        pairs = pairs[:max_scans]
    missing = [scan for scan, label in pairs if label is None]
    if missing and len(missing) != len(pairs):
        raise DataError(f"{missing[0]}: no label file, but other scans of sequence {sequence} have labels; "
                        "a bag must be labelled throughout or not at all")
    labelled = not missing
    start_ns = int(round(start_s * 1e9))
    period_ns = 1e9 / rate_hz
    points_total = 0
    with CloudBagWriter(out, topic=topic, storage=storage) as writer:
        for i, (scan, label) in enumerate(tqdm(pairs, desc=f"sequence {sequence} -> {Path(out).name}",
                                               unit="scan", disable=not progress)):
            points = read_points(scan)
            raw = read_raw_labels(label, num_points=points.shape[0]) if labelled else None
            stamp = start_ns + int(round(i * period_ns))
            writer.write(make_cloud(points, raw, stamp, frame_id), stamp)
            points_total += points.shape[0]
    return {"bag": str(out), "topic": topic, "frame_id": frame_id, "storage": storage, "scans": len(pairs),
            "points": points_total, "labelled": labelled, "rate_hz": rate_hz, "sequence": sequence,
            "data_root": str(data_root)}
