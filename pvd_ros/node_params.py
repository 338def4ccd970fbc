"""The segmentation node's parameters: one table of names, types, defaults and checks.

Every parameter is declared with a descriptor (description, range, read-only) so that
``ros2 param describe`` documents it, and validated once at start-up: a bad value stops
the node with a :class:`ParameterError` naming the parameter, because a node that
silently runs with a typo'd QoS or threshold is worse than one that refuses to start.
All parameters are read-only after start (changing the model or QoS needs a restart).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from pvd_core.point_rule import DEFAULT_MIN_RANGE

DEVICES = ("auto", "cpu", "cuda")
RELIABILITIES = ("best_effort", "reliable")


class ParameterError(ValueError):
    """A node parameter has an invalid value; the message names it."""


@dataclass
class NodeParams:
    """Values of the node's ROS parameters (names identical to the parameter names)."""

    checkpoint: str = ""
    device: str = "auto"
    fp16: bool = False
    num_threads: int = 0
    max_points: int = 0
    min_range: float = DEFAULT_MIN_RANGE
    max_range: float = 0.0
    confidence_threshold: float = 0.0
    input_reliability: str = "best_effort"
    input_depth: int = 1
    output_reliability: str = "reliable"
    output_depth: int = 1
    processing_budget_ms: float = 100.0
    error_after_s: float = 5.0
    diagnostics_period_s: float = 1.0
    publish_legend: bool = True
    legend_frame_id: str = ""
    warmup_points: int = 20000
    retain_freed_memory: bool = True

    def validate(self) -> "NodeParams":
        if not self.checkpoint:
            raise ParameterError("parameter 'checkpoint' is empty: give the path of a .pt checkpoint "
                                 "(launch argument checkpoint:=..., or -p checkpoint:=...)")
        if self.device not in DEVICES:
            raise ParameterError(f"parameter 'device' must be one of {DEVICES}, got {self.device!r}")
        for name in ("max_points", "warmup_points"):
            if getattr(self, name) < 0:
                raise ParameterError(f"parameter '{name}' must be >= 0 (0 = no limit), got {getattr(self, name)}")
        if self.num_threads < 0:
            raise ParameterError(f"parameter 'num_threads' must be >= 0 (0 = one per core), got {self.num_threads}")
        for name in ("min_range", "max_range"):
            if getattr(self, name) < 0:
                raise ParameterError(f"parameter '{name}' must be >= 0 metres, got {getattr(self, name)}")
        if self.max_range and self.max_range <= self.min_range:
            raise ParameterError(f"parameter 'max_range' ({self.max_range}) must be > 'min_range' "
                                 f"({self.min_range}), or 0 for no limit")
        if not 0.0 <= self.confidence_threshold <= 1.0:
            raise ParameterError(f"parameter 'confidence_threshold' must be in [0, 1], got {self.confidence_threshold}")
        for name in ("input_reliability", "output_reliability"):
            if getattr(self, name) not in RELIABILITIES:
                raise ParameterError(f"parameter '{name}' must be one of {RELIABILITIES}, got {getattr(self, name)!r}")
        for name in ("input_depth", "output_depth"):
            if getattr(self, name) < 1:
                raise ParameterError(f"parameter '{name}' must be >= 1, got {getattr(self, name)}")
        for name in ("processing_budget_ms", "diagnostics_period_s"):
            if getattr(self, name) <= 0:
                raise ParameterError(f"parameter '{name}' must be > 0, got {getattr(self, name)}")
        if self.error_after_s < 0:
            raise ParameterError(f"parameter 'error_after_s' must be >= 0, got {self.error_after_s}")
        return self

    def input_qos(self) -> QoSProfile:
        return _qos(self.input_reliability, self.input_depth)

    def output_qos(self) -> QoSProfile:
        return _qos(self.output_reliability, self.output_depth)


_DESCRIPTIONS: dict[str, str] = {
    "checkpoint": "Path of the student checkpoint (.pt) to run; required.",
    "device": "auto (CUDA when available, else CPU), cpu or cuda.",
    "fp16": "Half-precision inference; needs a CUDA device: with true the node refuses to start on "
            "the CPU (device cpu, or auto without CUDA).",
    "num_threads": "CPU threads for inference (torch intra-op); 0 = torch's default, one per core. "
                   "Lower it to leave cores to other nodes on the robot.",
    "max_points": "Most points sent to the network per cloud (0 = all); the rest, chosen by a "
                  "uniform stride, get label 0 and confidence 0.",
    "min_range": "Points closer than this (metres, 3D distance to the sensor origin) get label 0 and never "
                 "reach the network. Points exactly at (0, 0, 0), the no-return pixels of organised clouds, "
                 "get label 0 whatever this is.",
    "max_range": "Points farther than this (metres) get label 0 and never reach the network; 0 = no limit.",
    "confidence_threshold": "Points whose max softmax probability is below this get label 0.",
    "input_reliability": "QoS reliability of ~/input/points: best_effort (sensor data) or reliable.",
    "input_depth": "QoS history depth of ~/input/points (keep last N); 1 = newest scan only.",
    "output_reliability": "QoS reliability of the outputs: reliable (RViz's default) or best_effort.",
    "output_depth": "QoS history depth of ~/output/points.",
    "processing_budget_ms": "Per-cloud processing time above which /diagnostics goes WARN.",
    "error_after_s": "Seconds continuously over budget after which /diagnostics goes ERROR.",
    "diagnostics_period_s": "Period of the /diagnostics status.",
    "publish_legend": "Publish the latched class legend (MarkerArray) on ~/legend.",
    "legend_frame_id": "Frame of the legend markers; empty = the frame of the first cloud.",
    "warmup_points": "Points in the synthetic warm-up scan run before the node reports ready.",
    "retain_freed_memory": "Tune glibc malloc (process-wide) to keep freed multi-megabyte buffers for "
                           "reuse instead of page-faulting them in again every scan: several ms less "
                           "transport latency, RSS stays at its per-scan peak (pvd_core/memory.py).",
}

_RANGES: dict[str, tuple[float, float]] = {
    "confidence_threshold": (0.0, 1.0),
}


def declare_parameters(node: Node) -> NodeParams:
    """Declare every parameter on ``node`` and return their validated values."""
    values: dict[str, Any] = {}
    for f in fields(NodeParams):
        default = f.default
        descriptor = ParameterDescriptor(
            name=f.name, description=_DESCRIPTIONS[f.name], read_only=True, type=_param_type(default))
        if f.name in _RANGES:
            lo, hi = _RANGES[f.name]
            descriptor.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi, step=0.0)]
        elif isinstance(default, int) and not isinstance(default, bool) and f.name in ("input_depth", "output_depth"):
            descriptor.integer_range = [IntegerRange(from_value=1, to_value=1000, step=1)]
        try:
            value = node.declare_parameter(f.name, default, descriptor).value
        except Exception as exc:  # rclpy raises several types for wrong types / out-of-range values
            raise ParameterError(f"parameter '{f.name}': {exc}") from exc
        values[f.name] = value
    return NodeParams(**values).validate()


def _param_type(default: Any) -> int:
    if isinstance(default, bool):
        return ParameterType.PARAMETER_BOOL
    if isinstance(default, int):
        return ParameterType.PARAMETER_INTEGER
    if isinstance(default, float):
        return ParameterType.PARAMETER_DOUBLE
    return ParameterType.PARAMETER_STRING


def _qos(reliability: str, depth: int) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort" else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )
