"""PointCloud2 <-> numpy for the segmentation node.

The PointCloud2 library is ``sensor_msgs_py.point_cloud2`` where a ROS distribution
provides it and its PyPI port ``pointcloud2`` elsewhere (docs/ros.md: never a third codec).
Reading takes one path whichever is loaded (:func:`point_view`): the record dtype comes
from the library's ``dtype_from_fields`` (names, offsets, count > 1 sub-fields, point_step),
and the buffer is viewed with one documented numpy call, strides ``(row_step, point_step)``
and the message's byte order. Not the libraries' ``read_points``: sensor_msgs_py's
(Humble, Jazzy) starts with ``assert isinstance(cloud, PointCloud2)``, so it refuses the
messages rosbags deserialises, and views the buffer as ``width * height`` contiguous
records, ignoring ``row_step``, so it misreads organised clouds with padded rows.
:func:`check_layout` validates everything the message *says* about its layout first,
in O(fields) time without touching the points, and turns every problem into a
:class:`CloudError` that names the field at fault. That is what lets the node count and
drop a bad cloud instead of crashing on it.

Writing fills one structured numpy array whose dtype (names, offsets, itemsize) is
exactly the output ``PointField`` list. The array lives inside the ``array.array('B')``
that becomes ``msg.data``, so the encode is a handful of vectorised column writes and
no extra copy of the ~3.5 MB output buffer (rclpy accepts an ``array.array('B')``
as-is; bytes or lists would be copied or, with field checks on, walked per byte).
"""
from __future__ import annotations

import array
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

try:  # a ROS distribution
    from sensor_msgs_py import point_cloud2 as _pc2  # type: ignore[import-not-found]
    POINT_CLOUD2_LIBRARY = "sensor_msgs_py"
except ImportError:  # PyPI wheels: the maintained port of the same module
    import pointcloud2 as _pc2  # type: ignore[no-redef]
    POINT_CLOUD2_LIBRARY = "pointcloud2"

from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from pvd_core.errors import PvdError

# PointField datatype -> numpy dtype, as in sensor_msgs/PointField.msg.
FIELD_DTYPES: dict[int, np.dtype] = {
    PointField.INT8: np.dtype(np.int8),
    PointField.UINT8: np.dtype(np.uint8),
    PointField.INT16: np.dtype(np.int16),
    PointField.UINT16: np.dtype(np.uint16),
    PointField.INT32: np.dtype(np.int32),
    PointField.UINT32: np.dtype(np.uint32),
    PointField.FLOAT32: np.dtype(np.float32),
    PointField.FLOAT64: np.dtype(np.float64),
}

INPUT_FIELDS: tuple[str, ...] = ("x", "y", "z", "intensity")

# Output layout (point_step 28): x, y, z, intensity, rgb, confidence as float32, label as uint16.
OUTPUT_FIELD_SPECS: tuple[tuple[str, int, int], ...] = (
    ("x", 0, PointField.FLOAT32),
    ("y", 4, PointField.FLOAT32),
    ("z", 8, PointField.FLOAT32),
    ("intensity", 12, PointField.FLOAT32),
    ("rgb", 16, PointField.FLOAT32),
    ("confidence", 20, PointField.FLOAT32),
    ("label", 24, PointField.UINT16),
)
OUTPUT_POINT_STEP = 28
OUTPUT_DTYPE = np.dtype({
    "names": [name for name, _, _ in OUTPUT_FIELD_SPECS],
    "formats": [FIELD_DTYPES[dt].newbyteorder("=") for _, _, dt in OUTPUT_FIELD_SPECS],
    "offsets": [off for _, off, _ in OUTPUT_FIELD_SPECS],
    "itemsize": OUTPUT_POINT_STEP,
})

# The output records' first 16 bytes (x, y, z, intensity) as one opaque field.
_LEADING_16_BYTES = np.dtype({"names": ["xyzi"], "formats": ["V16"], "offsets": [0], "itemsize": OUTPUT_POINT_STEP})


class CloudError(PvdError, ValueError):
    """A PointCloud2 the node cannot read; ``kind`` groups the reasons for counting.

    Kinds: ``missing_field`` (no x, y or z), ``datatype`` (unknown PointField datatype or
    count), ``layout`` (point_step / row_step / field offsets inconsistent),
    ``truncated`` (data shorter than row_step * height).
    """

    KINDS = ("missing_field", "datatype", "layout", "truncated")

    def __init__(self, kind: str, message: str) -> None:
        assert kind in self.KINDS, kind
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class DecodedCloud:
    """Input points as the Segmenter wants them, plus the shape to give the output back in."""

    points: np.ndarray  # (N, 4) float32 x, y, z, intensity; N = height * width, row-major
    height: int
    width: int
    has_intensity: bool


def output_fields() -> list[PointField]:
    """The seven PointFields of the labelled cloud (a fresh list: messages are mutable)."""
    return [PointField(name=name, offset=off, datatype=dt, count=1) for name, off, dt in OUTPUT_FIELD_SPECS]


def check_layout(msg: Any) -> None:
    """Raise CloudError unless the message's declared layout is self-consistent.

    Works on anything with PointCloud2's attributes (rclpy messages, rosbags messages).
    Checks only metadata and ``len(data)``, never the points themselves.
    """
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    if height < 0 or width < 0:
        raise CloudError("layout", f"PointCloud2 height ({height}) and width ({width}) must be >= 0")
    names: set[str] = set()
    for field in msg.fields:
        dtype = FIELD_DTYPES.get(int(field.datatype))
        if dtype is None:
            raise CloudError(
                "datatype", f"PointCloud2 field {field.name!r} has unsupported datatype {field.datatype} "
                f"(expected 1..8, sensor_msgs/PointField)")
        if int(field.count) < 1:
            raise CloudError("datatype", f"PointCloud2 field {field.name!r} has count {field.count} (must be >= 1)")
        if field.name in INPUT_FIELDS and int(field.count) != 1:
            raise CloudError("datatype", f"PointCloud2 field {field.name!r} has count {field.count} (must be 1)")
        if field.name in names:
            raise CloudError("layout", f"PointCloud2 field {field.name!r} appears twice")
        names.add(field.name)
        end = int(field.offset) + dtype.itemsize * int(field.count)
        if end > point_step:
            raise CloudError(
                "layout", f"PointCloud2 field {field.name!r} (offset {field.offset}, {dtype.itemsize * field.count}"
                f" bytes) does not fit in point_step {point_step}")
    missing = [n for n in ("x", "y", "z") if n not in names]
    if missing:
        raise CloudError("missing_field", f"PointCloud2 has no field(s) {missing}; fields are {sorted(names)}")
    if height * width > 0 and point_step <= 0:
        raise CloudError("layout", f"PointCloud2 point_step is {point_step} for {height * width} points")
    if row_step < width * point_step:
        raise CloudError(
            "layout", f"PointCloud2 row_step ({row_step}) is smaller than width * point_step "
            f"({width} * {point_step})")
    expected = row_step * height
    n_bytes = len(msg.data)
    if n_bytes < expected:
        raise CloudError("truncated", f"PointCloud2 data has {n_bytes} bytes, row_step * height needs {expected}")
    if n_bytes > expected:
        raise CloudError("layout", f"PointCloud2 data has {n_bytes} bytes, more than row_step * height ({expected})")


def point_view(msg: Any) -> np.ndarray:
    """(height, width) structured, zero-copy read-only view of a cloud's points (after check_layout).

    Works on rclpy messages, rosbags messages (``data`` a uint8 numpy array) and the
    pointcloud2 port's dataclass alike, with either library loaded. Fields are named as
    the library names them (a count > 1 field ``f`` becomes ``f_0``, ``f_1``, ...).
    """
    check_layout(msg)
    height, width = int(msg.height), int(msg.width)
    dtype = _pc2.dtype_from_fields(msg.fields, point_step=int(msg.point_step))
    dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")  # the message's byte order, no byteswap copy
    if height * width == 0:
        return np.zeros((height, width), dtype=dtype)
    # The thin view: row r, column c starts at r * row_step + c * point_step (row padding skipped).
    return np.ndarray(shape=(height, width), dtype=dtype, buffer=memoryview(msg.data).cast("B"),
                      strides=(int(msg.row_step), int(msg.point_step)))


def decode_points(msg: Any) -> DecodedCloud:
    """Read x, y, z and intensity by name as (N, 4) float32; a missing intensity is 0.

    Any field order, point_step, padding, numeric type, byte order and organised
    (height > 1) layout; points keep the message's row-major order. NaN/Inf are kept
    (the caller decides what an invalid point gets).
    """
    view = point_view(msg)
    height, width = view.shape
    has_intensity = "intensity" in view.dtype.names
    wanted = [n for n in INPUT_FIELDS if n in view.dtype.names]
    # Every column is written below, except a missing intensity (which must read 0).
    out = (np.empty if has_intensity else np.zeros)((height * width, 4), dtype=np.float32)
    rows = out.reshape(height, width, 4)  # a view of out: each column is written once, converted on the way
    for column, name in enumerate(wanted):
        rows[:, :, column] = view[name]
    return DecodedCloud(points=out, height=height, width=width, has_intensity=has_intensity)


def packed_rgb_lut(colors: np.ndarray) -> np.ndarray:
    """(C, 3) uint8 RGB -> (C,) float32 holding 0x00RRGGBB bits (RViz's RGB8 transformer)."""
    colors = np.asarray(colors, dtype=np.uint32)
    if colors.ndim != 2 or colors.shape[1] != 3:
        raise ValueError(f"colors must be (C, 3) RGB, got shape {colors.shape}")
    packed = (colors[:, 0] << 16) | (colors[:, 1] << 8) | colors[:, 2]
    return packed.astype(np.uint32).view(np.float32)


def encode_labelled(
    header: Header,
    points: np.ndarray,
    labels: np.ndarray,
    confidence: np.ndarray,
    rgb_lut: np.ndarray,
    height: int = 1,
    width: int | None = None,
) -> PointCloud2:
    """Build the output cloud: input order and (height, width), seven fields, copied header.

    ``rgb_lut`` comes from :func:`packed_rgb_lut`; ``labels`` must index it.
    """
    n = int(points.shape[0])
    if width is None:
        width = n // height if height else 0
    if height * width != n or labels.shape[0] != n or confidence.shape[0] != n:
        raise ValueError(
            f"encode_labelled: {n} points, {labels.shape[0]} labels, {confidence.shape[0]} confidences "
            f"for a {height} x {width} cloud")
    buffer = array.array("B", [0]) * (n * OUTPUT_POINT_STEP)  # one zeroed allocation, no temporary
    cloud = np.frombuffer(buffer, dtype=OUTPUT_DTYPE) if n else np.zeros(0, OUTPUT_DTYPE)
    if n and points.dtype == np.float32 and points.shape[1] == 4 and points.flags.c_contiguous:
        # x, y, z, intensity are the first 16 bytes of both layouts: one 16-byte copy per point
        # (about 3x faster than four strided float copies).
        np.frombuffer(buffer, dtype=_LEADING_16_BYTES)["xyzi"] = points.view("V16").reshape(-1)
    else:
        cloud["x"] = points[:, 0]
        cloud["y"] = points[:, 1]
        cloud["z"] = points[:, 2]
        cloud["intensity"] = points[:, 3]
    cloud["rgb"] = rgb_lut[labels]
    cloud["confidence"] = confidence
    cloud["label"] = labels
    msg = PointCloud2()
    msg.header = header
    msg.height = int(height)
    msg.width = int(width)
    msg.fields = output_fields()
    msg.is_bigendian = sys.byteorder != "little"
    msg.point_step = OUTPUT_POINT_STEP
    msg.row_step = OUTPUT_POINT_STEP * int(width)
    msg.data = buffer
    msg.is_dense = False
    return msg


def make_cloud(header: Header, points: np.ndarray, height: int = 1) -> PointCloud2:
    """An x, y, z, intensity float32 cloud from (N, >=4) points (publishers, tests, the bench).

    Goes through the library's ``create_cloud`` so the producer side of tests is not our code.
    """
    points = np.ascontiguousarray(points[:, :4], dtype=np.float32)
    fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
              for i, n in enumerate(INPUT_FIELDS)]
    width = points.shape[0] // height if height else 0
    structured = points.view(_pc2.dtype_from_fields(fields, point_step=16)).reshape(height, width)
    lib_cloud = _pc2.create_cloud(header, fields, structured if height > 1 else structured.reshape(-1))
    if isinstance(lib_cloud, PointCloud2):
        return lib_cloud
    return copy_into_message(lib_cloud)


def copy_into_message(cloud: Any) -> PointCloud2:
    """Any PointCloud2-like object (the pointcloud2 port's dataclass, a rosbags message) -> rclpy message."""
    msg = PointCloud2()
    msg.header = cloud.header if isinstance(cloud.header, Header) else _header_from(cloud.header)
    msg.height = int(cloud.height)
    msg.width = int(cloud.width)
    msg.fields = [PointField(name=f.name, offset=int(f.offset), datatype=int(f.datatype), count=int(f.count))
                  for f in cloud.fields]
    msg.is_bigendian = bool(cloud.is_bigendian)
    msg.point_step = int(cloud.point_step)
    msg.row_step = int(cloud.row_step)
    data = cloud.data
    msg.data = data if isinstance(data, array.array) else array.array("B", memoryview(data).cast("B"))
    msg.is_dense = bool(cloud.is_dense)
    return msg


def _header_from(header: Any) -> Header:
    out = Header()
    out.frame_id = str(header.frame_id)
    out.stamp.sec = int(header.stamp.sec)
    out.stamp.nanosec = int(header.stamp.nanosec)
    return out


def field_names(msg: Any) -> Sequence[str]:
    return [f.name for f in msg.fields]
