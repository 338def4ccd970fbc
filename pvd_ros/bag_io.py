"""rosbag2 reading and writing of PointCloud2 with the pure-Python ``rosbags`` library.

Bags carry their own ground truth: besides x, y, z, intensity (float32) a cloud may hold a
``label`` field (uint32 raw SemanticKITTI word, semantic id in the lower 16 bits), so a
bag can be scored without the dataset it came from. Point decoding goes through
:mod:`pvd_ros.cloud_codec` (the project's one PointCloud2 codec, which works on rosbags
messages as well as rclpy ones); this module only moves messages in and out of bags and
reads the extra ``label`` column with the same library and the same layout checks.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np
from tqdm import tqdm
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from pvd_ros import cloud_codec

PathLike = Union[str, Path]

POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
DEFAULT_TOPIC = "/points"
DEFAULT_FRAME = "lidar"
LABEL_FIELD = "label"
STORAGES: dict[str, StoragePlugin] = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
BAG_VERSION = 9  # rosbag2 metadata version written by Jazzy and later

_TYPESTORE = None


class BagError(ValueError):
    """A bag cannot be read or written as asked; the message names the bag and topic."""


def typestore() -> Any:
    """The message definitions used to (de)serialise (ROS 2 Jazzy; PointCloud2 is unchanged since)."""
    global _TYPESTORE
    if _TYPESTORE is None:
        _TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
    return _TYPESTORE


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


class CloudBagReader:
    """Reads the PointCloud2 messages of one topic of a rosbag2 (sqlite3 or MCAP)."""

    def __init__(self, path: PathLike, topic: str = DEFAULT_TOPIC) -> None:
        self.path = Path(path)
        self.topic = topic
        if not self.path.exists():
            raise BagError(f"{self.path}: bag not found")
        self._reader = AnyReader([self.path], default_typestore=typestore())

    def __enter__(self) -> "CloudBagReader":
        try:
            self._reader.open()
        except Exception as exc:  # rosbags raises its own ReaderError / AnyReaderError types
            raise BagError(f"{self.path}: cannot open as a rosbag2: {type(exc).__name__}: {exc}") from exc
        self._connections = [c for c in self._reader.connections if c.topic == self.topic]
        if not self._connections:
            topics = sorted({f"{c.topic} ({c.msgtype})" for c in self._reader.connections})
            raise BagError(f"{self.path}: no topic {self.topic!r} in the bag; it has {topics or 'no topics'}")
        wrong = [c.msgtype for c in self._connections if c.msgtype != POINTCLOUD2]
        if wrong:
            raise BagError(f"{self.path}: topic {self.topic!r} has type {wrong[0]}, expected {POINTCLOUD2}")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._reader.close()

    def __len__(self) -> int:
        return int(sum(c.msgcount for c in self._connections))

    def __iter__(self) -> Iterator[BagCloud]:
        for index, (connection, timestamp, raw) in enumerate(self._reader.messages(connections=self._connections)):
            try:
                msg = self._reader.deserialize(raw, connection.msgtype)
            except Exception as exc:
                raise BagError(f"{self.path}: message {index} on {self.topic!r} cannot be deserialised: "
                               f"{type(exc).__name__}: {exc}") from exc
            yield BagCloud(index=index, timestamp_ns=int(timestamp), stamp_ns=stamp_ns_of(msg.header),
                           frame_id=str(msg.header.frame_id), msg=msg)


def has_label_field(msg: Any) -> bool:
    return any(f.name == LABEL_FIELD for f in msg.fields)


def read_label_field(msg: Any) -> np.ndarray:
    """(N,) uint32 raw label words of a cloud's ``label`` field, in the cloud's point order.

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
    n = int(msg.height) * int(msg.width)
    if n == 0:
        return np.zeros(0, dtype=np.uint32)
    return np.asarray(cloud_codec._pc2.read_points(msg, field_names=[LABEL_FIELD])[LABEL_FIELD]).astype(np.uint32)


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
        raise ValueError(f"--rate must be > 0 Hz, got {rate_hz}")
    if max_scans is not None and max_scans < 1:
        raise ValueError(f"--max-scans must be >= 1, got {max_scans}")
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
