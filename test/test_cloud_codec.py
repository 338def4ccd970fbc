"""PointCloud2 <-> numpy: layouts the node must read, malformed clouds it must refuse, its output.

Every test runs once per PointCloud2 library: the PyPI port ``pointcloud2`` and, where a
ROS distribution provides it, ``sensor_msgs_py.point_cloud2`` (skipped with the reason
otherwise), by pointing the codec's library at each in turn.
"""
from __future__ import annotations

import array
import sys
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="ROS 2 message packages (extra 'ros') are not installed")

from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from pvd_ros import cloud_codec  # noqa: E402
from pvd_ros.cloud_codec import (  # noqa: E402
    OUTPUT_POINT_STEP, CloudError, check_layout, decode_points, encode_labelled, make_cloud, packed_rgb_lut)

NP_TO_DATATYPE = {np.dtype(v): k for k, v in cloud_codec.FIELD_DTYPES.items()}


@pytest.fixture(autouse=True, params=["pointcloud2", "sensor_msgs_py"])
def pc2_library(request, monkeypatch):
    """The codec with each PointCloud2 library in turn (the one it imported by itself is one of them)."""
    if request.param == "sensor_msgs_py":
        module = pytest.importorskip(
            "sensor_msgs_py.point_cloud2",
            reason="sensor_msgs_py comes with a ROS 2 distribution (not on PyPI); the codec's sensor_msgs_py path "
                   "is tested where one is sourced")
    else:
        import pointcloud2 as module
    monkeypatch.setattr(cloud_codec, "_pc2", module)
    return module


def cloud_from_structured(points: np.ndarray, height: int = 1, bigendian: bool = False,
                          row_padding: int = 0) -> PointCloud2:
    """A PointCloud2 holding ``points`` (structured, any offsets/itemsize) as-is, written independently
    of the codec under test so both sides do not share a bug."""
    dtype = points.dtype
    fields = []
    for name in dtype.names:
        sub, offset = dtype.fields[name][:2]
        fields.append(PointField(name=name, offset=offset, datatype=NP_TO_DATATYPE[sub.newbyteorder("=")], count=1))
    if bigendian:
        points = points.astype(dtype.newbyteorder(">"))
    width = points.size // height
    rows = points.reshape(height, width).view(np.uint8).reshape(height, width * dtype.itemsize)
    rows = np.concatenate([rows, np.full((height, row_padding), 0xAB, np.uint8)], axis=1)
    msg = PointCloud2()
    msg.header.frame_id = "lidar"
    msg.height, msg.width = height, width
    msg.fields = fields
    msg.is_bigendian = bigendian
    msg.point_step = dtype.itemsize
    msg.row_step = width * dtype.itemsize + row_padding
    msg.data = array.array("B", rows.tobytes())
    msg.is_dense = False
    return msg


def random_xyzi(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.uniform(-40, 40, (n, 3)), rng.uniform(0, 1, (n, 1))], 1).astype(np.float32)


def test_library_in_use_is_a_real_point_cloud2_module():
    assert cloud_codec.POINT_CLOUD2_LIBRARY in ("sensor_msgs_py", "pointcloud2")
    assert hasattr(cloud_codec._pc2, "read_points") and hasattr(cloud_codec._pc2, "create_cloud")


def test_real_scan_roundtrip(real_scan_path):
    points = np.fromfile(real_scan_path, dtype=np.float32).reshape(-1, 4)
    header = Header(frame_id="velodyne")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = make_cloud(header, points)
    assert isinstance(msg, PointCloud2) and msg.width == points.shape[0] == 123389
    decoded = decode_points(msg)
    assert decoded.has_intensity and (decoded.height, decoded.width) == (1, points.shape[0])
    np.testing.assert_array_equal(decoded.points, points)


def test_any_field_order_padding_types_and_organised_rows():
    ref = random_xyzi(60, seed=1)
    dtype = np.dtype({"names": ["ring", "intensity", "z", "t", "x", "y"],
                      "formats": [np.uint16, np.float32, np.float64, np.float64, np.float64, np.float32],
                      "offsets": [0, 4, 8, 16, 24, 36], "itemsize": 48})
    pts = np.zeros(60, dtype)
    pts["x"], pts["y"], pts["z"], pts["intensity"] = ref[:, 0], ref[:, 1], ref[:, 2], ref[:, 3]
    pts["ring"] = np.arange(60) % 4
    for bigendian in (False, True):
        msg = cloud_from_structured(pts, height=4, bigendian=bigendian, row_padding=8)
        decoded = decode_points(msg)
        assert (decoded.height, decoded.width) == (4, 15)
        np.testing.assert_allclose(decoded.points, ref, rtol=0, atol=1e-6)


def test_integer_intensity_and_missing_intensity():
    ref = random_xyzi(10, seed=2)
    dtype = np.dtype([("x", np.float32), ("y", np.float32), ("z", np.float32), ("intensity", np.uint8)])
    pts = np.zeros(10, dtype)
    pts["x"], pts["y"], pts["z"] = ref[:, 0], ref[:, 1], ref[:, 2]
    pts["intensity"] = np.arange(10) * 20
    decoded = decode_points(cloud_from_structured(pts))
    np.testing.assert_array_equal(decoded.points[:, 3], np.arange(10) * 20)

    xyz_only = np.zeros(10, np.dtype([("x", np.float32), ("y", np.float32), ("z", np.float32)]))
    xyz_only["x"] = ref[:, 0]
    decoded = decode_points(cloud_from_structured(xyz_only))
    assert not decoded.has_intensity
    np.testing.assert_array_equal(decoded.points[:, 3], np.zeros(10, np.float32))
    np.testing.assert_array_equal(decoded.points[:, 0], ref[:, 0])


def test_nan_points_are_kept_for_the_caller():
    ref = random_xyzi(5)
    ref[2, 0] = np.nan
    ref[3, 2] = np.inf
    decoded = decode_points(make_cloud(Header(), ref))
    assert np.isnan(decoded.points[2, 0]) and np.isinf(decoded.points[3, 2])


def test_empty_cloud_decodes_to_zero_points():
    decoded = decode_points(make_cloud(Header(), np.zeros((0, 4), np.float32)))
    assert decoded.points.shape == (0, 4)


def test_works_on_rosbags_style_message_with_numpy_data():
    ref = random_xyzi(7)
    msg = make_cloud(Header(), ref)
    bag_like = SimpleNamespace(header=msg.header, height=1, width=7, fields=msg.fields, is_bigendian=False,
                               point_step=16, row_step=112, data=np.frombuffer(msg.data, np.uint8).copy(),
                               is_dense=True)
    np.testing.assert_array_equal(decode_points(bag_like).points, ref)
    copy = cloud_codec.copy_into_message(bag_like)
    np.testing.assert_array_equal(decode_points(copy).points, ref)


def as_rosbags_message(msg: PointCloud2):
    """The message as rosbags deserialises it from a bag (CDR through rclpy, back through the Jazzy typestore)."""
    from rclpy.serialization import serialize_message

    from pvd_ros import bag_io

    return bag_io.typestore().deserialize_cdr(serialize_message(msg), bag_io.POINTCLOUD2)


def padded_organised_cloud(seed: int = 3) -> tuple[PointCloud2, np.ndarray, np.ndarray]:
    """A 4 x 15 cloud, 24-byte points, 8 bytes of 0xAB row padding, with a uint32 label: (msg, xyzi, labels)."""
    ref = random_xyzi(60, seed=seed)
    labels = (np.arange(60, dtype=np.uint32) * 7919) % 260
    dtype = np.dtype({"names": ["x", "y", "z", "intensity", "label"],
                      "formats": [np.float32] * 4 + [np.uint32], "offsets": [0, 4, 8, 12, 16], "itemsize": 24})
    pts = np.zeros(60, dtype)
    pts["x"], pts["y"], pts["z"], pts["intensity"] = ref.T
    pts["label"] = labels
    return cloud_from_structured(pts, height=4, row_padding=8), ref, labels


@pytest.mark.parametrize("kind", ["rclpy", "rosbags"])
def test_padded_organised_cloud_of_every_message_kind(kind):
    """What sensor_msgs_py's read_points (Humble/Jazzy) gets wrong, on both kinds of message: it asserts an
    rclpy PointCloud2 (a rosbags message is not one) and views width * height contiguous records, which
    reads the row padding as points. The codec's one path reads both right, with either library."""
    from pvd_ros import bag_io

    msg, ref, labels = padded_organised_cloud()
    if kind == "rosbags":
        msg = as_rosbags_message(msg)
        assert not isinstance(msg, PointCloud2) and isinstance(msg.data, np.ndarray)
    assert msg.row_step > msg.width * msg.point_step and msg.height > 1
    unpadded = np.ndarray(shape=(msg.width * msg.height,), buffer=memoryview(msg.data).cast("B"),
                          dtype=cloud_codec._pc2.dtype_from_fields(msg.fields, point_step=msg.point_step))
    assert not np.array_equal(unpadded["x"], ref[:, 0])  # the view without row_step misreads rows 1..3
    decoded = decode_points(msg)
    assert (decoded.height, decoded.width) == (4, 15)
    np.testing.assert_array_equal(decoded.points, ref)
    np.testing.assert_array_equal(bag_io.read_label_field(msg), labels)
    np.testing.assert_array_equal(cloud_codec.point_view(msg)["label"].reshape(-1), labels)


def test_rosbags_big_endian_cloud_with_multi_count_field():
    ref = random_xyzi(12, seed=4)
    dtype = np.dtype({"names": ["x", "y", "z", "intensity"], "formats": [np.float64, np.float64, np.float64,
                                                                       np.uint16],
                      "offsets": [0, 8, 16, 24], "itemsize": 32})
    pts = np.zeros(12, dtype)
    pts["x"], pts["y"], pts["z"] = ref[:, 0], ref[:, 1], ref[:, 2]
    pts["intensity"] = np.arange(12) * 100
    msg = cloud_from_structured(pts, height=3, bigendian=True, row_padding=4)
    msg.fields = list(msg.fields) + [PointField(name="ring", offset=26, datatype=PointField.UINT8, count=3)]
    decoded = decode_points(as_rosbags_message(msg))
    np.testing.assert_allclose(decoded.points[:, :3], ref[:, :3], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(decoded.points[:, 3], np.arange(12) * 100)
    assert cloud_codec.point_view(msg).dtype.names[-3:] == ("ring_0", "ring_1", "ring_2")


def _valid_msg(n: int = 8) -> PointCloud2:
    return make_cloud(Header(frame_id="lidar"), random_xyzi(n))


def _field(msg: PointCloud2, name: str) -> PointField:
    return next(f for f in msg.fields if f.name == name)


def _break(kind: str) -> PointCloud2:
    msg = _valid_msg()
    if kind == "no_x":
        _field(msg, "x").name = "q"
    elif kind == "no_z":
        msg.fields = [f for f in msg.fields if f.name != "z"]
    elif kind == "no_fields":
        msg.fields = []
    elif kind == "truncated":
        msg.data = msg.data[:-5]
    elif kind == "extra_bytes":
        msg.data = msg.data + array.array("B", [0] * 3)
    elif kind == "row_step_small":
        msg.row_step = msg.point_step * msg.width - 1
    elif kind == "point_step_small":
        msg.point_step = 8
        msg.row_step = 8 * msg.width
        msg.data = msg.data[: msg.row_step]
    elif kind == "point_step_zero":
        msg.point_step = 0
    elif kind == "offset_outside":
        _field(msg, "intensity").offset = 14
    elif kind == "datatype_zero":
        _field(msg, "y").datatype = 0
    elif kind == "datatype_nine":
        _field(msg, "intensity").datatype = 9
    elif kind == "count_zero":
        _field(msg, "x").count = 0
    elif kind == "count_two":
        _field(msg, "z").count = 2
    elif kind == "duplicate":
        msg.fields = list(msg.fields) + [PointField(name="x", offset=0, datatype=7, count=1)]
    elif kind == "height_lies":
        msg.height = 2
    else:
        raise AssertionError(kind)
    return msg


MALFORMED = {
    "no_x": "missing_field", "no_z": "missing_field", "no_fields": "missing_field", "truncated": "truncated",
    "height_lies": "truncated", "extra_bytes": "layout", "row_step_small": "layout",
    "point_step_small": "layout", "point_step_zero": "layout", "offset_outside": "layout",
    "datatype_zero": "datatype", "datatype_nine": "datatype", "count_zero": "datatype", "count_two": "datatype",
    "duplicate": "layout",
}


@pytest.mark.parametrize("breakage", sorted(MALFORMED))
def test_malformed_clouds_raise_cloud_error_with_kind(breakage):
    msg = _break(breakage)
    with pytest.raises(CloudError) as info:
        decode_points(msg)
    assert info.value.kind == MALFORMED[breakage], str(info.value)
    assert "PointCloud2" in str(info.value)


def test_valid_message_passes_layout_check():
    check_layout(_valid_msg())  # must not raise
    assert decode_points(_valid_msg()).points.shape == (8, 4)


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_encode_fields_values_and_rgb_packing(layout):
    """Both copy paths: contiguous float32 (N, 4) points, and a strided slice of wider rows."""
    colors = np.array([[0, 0, 0], [255, 0, 0], [0, 128, 255], [1, 2, 3]], np.uint8)
    lut = packed_rgb_lut(colors)
    pts = random_xyzi(12)
    if layout == "strided":
        pts = np.concatenate([pts, np.full((12, 2), 9.0, np.float32)], axis=1)[:, :4]
        assert not pts.flags.c_contiguous
    labels = (np.arange(12) % 4).astype(np.uint16)
    conf = np.linspace(0, 1, 12, dtype=np.float32)
    header = Header(frame_id="velodyne")
    header.stamp.sec, header.stamp.nanosec = 7, 99
    msg = encode_labelled(header, pts, labels, conf, lut, height=3, width=4)
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (3, 4, OUTPUT_POINT_STEP, 4 * OUTPUT_POINT_STEP)
    assert msg.header.frame_id == "velodyne" and (msg.header.stamp.sec, msg.header.stamp.nanosec) == (7, 99)
    assert msg.is_bigendian == (sys.byteorder != "little")
    by_name = {f.name: f for f in msg.fields}
    assert sorted(by_name) == sorted(["x", "y", "z", "intensity", "label", "confidence", "rgb"])
    for name in ("x", "y", "z", "intensity", "confidence", "rgb"):
        assert by_name[name].datatype == PointField.FLOAT32
    assert by_name["label"].datatype == PointField.UINT16
    assert len(msg.data) == 12 * OUTPUT_POINT_STEP
    # Read it back with the library, not the codec.
    back = cloud_codec._pc2.read_points(msg)
    np.testing.assert_array_equal(back["label"], labels)
    np.testing.assert_array_equal(back["confidence"], conf)
    for i, name in enumerate(("x", "y", "z", "intensity")):
        np.testing.assert_array_equal(back[name], pts[:, i])
    rgb_bits = back["rgb"].copy().view(np.uint32)
    expected = (colors[labels, 0].astype(np.uint32) << 16) | (colors[labels, 1].astype(np.uint32) << 8) \
        | colors[labels, 2]
    np.testing.assert_array_equal(rgb_bits, expected)
    assert rgb_bits[2] == 0x000080FF
    padding = np.frombuffer(msg.data, np.uint8).reshape(12, OUTPUT_POINT_STEP)[:, 26:]
    assert not padding.any()  # no stale memory leaves the node


def test_encode_rejects_length_mismatch():
    with pytest.raises(ValueError, match="labels"):
        encode_labelled(Header(), random_xyzi(4), np.zeros(3, np.uint16), np.zeros(4, np.float32),
                        packed_rgb_lut(np.zeros((2, 3), np.uint8)))


def test_packed_rgb_lut_rejects_bad_shape():
    with pytest.raises(ValueError, match="colors"):
        packed_rgb_lut(np.zeros((3, 4), np.uint8))
