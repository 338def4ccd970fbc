"""The class legend RViz shows next to the labelled cloud: one text marker per class.

Published once on a transient-local (latched) topic, so an RViz started later still gets
it; the markers are stamped with time zero so RViz draws them with the newest transform
of their frame instead of waiting for a TF at an old stamp.
"""
from __future__ import annotations

from builtin_interfaces.msg import Duration
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from visualization_msgs.msg import Marker, MarkerArray

from pvd_core.labels import LabelMap

LEGEND_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

# Class 0 is drawn black in the cloud (invisible on RViz's dark background); its legend entry is grey.
UNLABELED_TEXT_RGB = (0.6, 0.6, 0.6)


def legend_markers(
    label_map: LabelMap,
    frame_id: str,
    origin: tuple[float, float, float] = (0.0, -12.0, 6.0),
    line_spacing: float = 1.0,
    text_height: float = 0.8,
) -> MarkerArray:
    """A column of TEXT_VIEW_FACING markers, class index and name, in the class colours."""
    array = MarkerArray()
    clear = Marker()
    clear.header.frame_id = frame_id
    clear.ns = "pvd_legend"
    clear.action = Marker.DELETEALL
    array.markers.append(clear)
    colors = label_map.color_array()
    for index, name in enumerate(label_map.class_names):
        marker = Marker()
        marker.header.frame_id = frame_id
        marker.ns = "pvd_legend"
        marker.id = index
        marker.type = Marker.TEXT_VIEW_FACING
        marker.action = Marker.ADD
        marker.pose.position.x = float(origin[0])
        marker.pose.position.y = float(origin[1])
        marker.pose.position.z = float(origin[2] - index * line_spacing)
        marker.pose.orientation.w = 1.0
        marker.scale.z = float(text_height)
        if index == 0:
            r, g, b = UNLABELED_TEXT_RGB
        else:
            r, g, b = (float(c) / 255.0 for c in colors[index])
        marker.color.r, marker.color.g, marker.color.b, marker.color.a = r, g, b, 1.0
        marker.text = f"{index} {name}"
        marker.lifetime = Duration(sec=0, nanosec=0)  # forever
        marker.frame_locked = True
        array.markers.append(marker)
    return array
