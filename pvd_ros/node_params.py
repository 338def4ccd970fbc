"""The segmentation node's parameters: one table, :data:`PARAMS`, and everything that follows from it.

Each parameter is written once, as a :class:`ParamSpec` (name, default and with it the type,
description, valid values). From the table follow

- :class:`NodeParams`, the values the node runs with (one field per parameter);
- the declaration (:func:`declare_parameters`), with a descriptor that carries the description,
  the range where rclpy can express one, the other constraints as text, and read-only, so that
  ``ros2 param describe`` documents each parameter as the code checks it;
- the validation (:meth:`NodeParams.validate`): a bad value stops the node with a
  :class:`ParameterError` naming the parameter, because a node that silently runs with a
  typo'd QoS or threshold is worse than one that refuses to start;
- the shipped ``config/segment.yaml``, generated with comments from the descriptions
  (``python -m pvd_ros.node_params --yaml > config/segment.yaml``; a test compares).

Two descriptions of one parameter used to drift apart (one contradicted the code); with a
single table there is nothing to drift. All parameters are read-only after start (changing
the model or QoS needs a restart).
"""
from __future__ import annotations

import argparse
import math
import sys
import textwrap
from dataclasses import dataclass, field, make_dataclass
from typing import Any, Callable, Optional, Sequence, Union

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from pvd_core.device import DEVICE_SYNTAX, check_device
from pvd_core.errors import PvdError
from pvd_core.point_rule import DEFAULT_MIN_RANGE

ParamValue = Union[bool, int, float, str]
RELIABILITIES = ("best_effort", "reliable")


class ParameterError(PvdError, ValueError):
    """A node parameter has an invalid value; the message names it."""


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: the single place its name, type, default, meaning and valid values live.

    The ROS type is the default's Python type (bool, int, float or str), as rclpy infers it.
    Valid values: ``minimum``/``maximum`` (inclusive; ``exclusive_minimum`` for "> minimum"),
    ``choices``, or ``check`` (raises ValueError whose message follows the parameter name)
    described by ``check_text``. ``in_params_file``: False for a parameter the shipped YAML
    leaves to the launch file (the checkpoint, whose absence selects the shipped model).
    """

    name: str
    default: ParamValue
    description: str
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    exclusive_minimum: bool = False
    choices: tuple[str, ...] = ()
    check: Optional[Callable[[Any], object]] = None
    check_text: str = ""
    read_only: bool = True
    in_params_file: bool = True

    @property
    def python_type(self) -> type:
        return type(self.default)

    @property
    def ros_type(self) -> int:
        return {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}[self.python_type]

    @property
    def type_name(self) -> str:
        return {bool: "bool", int: "integer", float: "double", str: "string"}[self.python_type]

    def constraint(self) -> str:
        """The valid values in words ('' = any value of the type); shown by describe and in the YAML."""
        if self.choices:
            return "one of " + " | ".join(self.choices)
        if self.check_text:
            return self.check_text
        if self.minimum is not None and self.maximum is not None:
            return f"in [{self.minimum:g}, {self.maximum:g}]"
        if self.minimum is not None:
            return f"{'>' if self.exclusive_minimum else '>='} {self.minimum:g}"
        return ""

    def descriptor(self) -> ParameterDescriptor:
        """What ``ros2 param describe`` shows: description, type, read-only, range, other constraints.

        rclpy checks a range itself at declaration, but it only knows closed intervals, so a
        half-open rule (">= 0", "> 0") goes to ``additional_constraints`` and :meth:`validate`.
        """
        descriptor = ParameterDescriptor(name=self.name, type=self.ros_type, description=self.description,
                                         read_only=self.read_only, additional_constraints=self.constraint())
        if self.minimum is not None and self.maximum is not None:
            if self.python_type is int:
                descriptor.integer_range = [IntegerRange(from_value=int(self.minimum), to_value=int(self.maximum),
                                                         step=1)]
            else:
                descriptor.floating_point_range = [FloatingPointRange(from_value=float(self.minimum),
                                                                      to_value=float(self.maximum), step=0.0)]
        return descriptor

    def validate(self, value: Any) -> None:
        """Raise :class:`ParameterError` naming this parameter unless ``value`` is valid for it."""
        numeric_for_double = self.python_type is float and isinstance(value, int) and not isinstance(value, bool)
        if type(value) is not self.python_type and not numeric_for_double:
            raise ParameterError(f"parameter '{self.name}' must be a {self.type_name}, got {value!r}")
        if self.check is not None:
            try:
                self.check(value)
            except ValueError as exc:
                raise ParameterError(f"parameter '{self.name}' {exc}") from None
        valid = ((not self.choices or value in self.choices)
                 and (self.minimum is None or value > self.minimum or (value == self.minimum
                                                                       and not self.exclusive_minimum))
                 and (self.maximum is None or value <= self.maximum))
        if not valid:
            raise ParameterError(f"parameter '{self.name}' must be {self.constraint()}, got {value!r}")


#: Every node parameter, in declaration and params-file order.
PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("checkpoint", "", "Path of the student checkpoint (.pt) to run; empty = the shipped default "
              "models/semantickitti_student_pvd.pt (real HDL-64 street scenes; non-commercial terms, "
              "printed at start).",
              in_params_file=False),
    ParamSpec("device", "auto", "auto (CUDA when available, else CPU), cpu, cuda or cuda:N (GPU number N). "
              "A GPU that PyTorch cannot see stops the node at start-up.",
              check=check_device, check_text=DEVICE_SYNTAX),
    ParamSpec("fp16", False, "Half-precision inference; needs a CUDA device: with true the node refuses to "
              "start on the CPU (device cpu, or auto without CUDA)."),
    ParamSpec("num_threads", 0, "CPU threads for inference (torch intra-op); 0 = torch's default, one per core. "
              "Lower it to leave cores to other nodes on the robot; the console script also makes OpenMP "
              "threads sleep while waiting (OMP_WAIT_POLICY=PASSIVE unless set), so a busy core slows "
              "a scan by about 1.2x instead of 3.4x (bench/loaded_cpu.py).", minimum=0),
    ParamSpec("max_points", 0, "Most points sent to the network per cloud (0 = all); the rest, chosen by a "
              "uniform stride, get label 0 and confidence 0.", minimum=0),
    ParamSpec("min_range", DEFAULT_MIN_RANGE, "Points closer than this (metres, 3D distance to the sensor origin) "
              "get label 0 and never reach the network. Points exactly at (0, 0, 0), the no-return pixels of "
              "organised clouds, get label 0 whatever this is.", minimum=0.0),
    ParamSpec("max_range", 0.0, "Points farther than this (metres) get label 0 and never reach the network; "
              "0 = no limit, otherwise it must exceed min_range.", minimum=0.0),
    ParamSpec("confidence_threshold", 0.0, "Points whose max softmax probability is below this get label 0.",
              minimum=0.0, maximum=1.0),
    ParamSpec("input_reliability", "best_effort", "QoS reliability of ~/input/points: best_effort (sensor data) "
              "or reliable.", choices=RELIABILITIES),
    ParamSpec("input_depth", 1, "QoS history depth of ~/input/points (keep last N); 1 = newest scan only.",
              minimum=1, maximum=1000),
    ParamSpec("output_reliability", "reliable", "QoS reliability of the outputs: reliable (RViz's default) "
              "or best_effort.", choices=RELIABILITIES),
    ParamSpec("output_depth", 1, "QoS history depth of ~/output/points.", minimum=1, maximum=1000),
    ParamSpec("processing_budget_ms", 100.0, "Per-cloud processing time above which /diagnostics goes WARN; "
              "the default is one 10 Hz scan period.", minimum=0.0, exclusive_minimum=True),
    ParamSpec("error_after_s", 5.0, "Seconds continuously over budget after which /diagnostics goes ERROR.",
              minimum=0.0),
    ParamSpec("diagnostics_period_s", 1.0, "Period of the /diagnostics status.", minimum=0.0,
              exclusive_minimum=True),
    ParamSpec("publish_legend", True, "Publish the latched class legend (MarkerArray) on ~/legend."),
    ParamSpec("legend_frame_id", "", "Frame of the legend markers; empty = the frame of the first cloud."),
    ParamSpec("warmup_points", 20000, "Points in the synthetic warm-up scan run before the node reports ready.",
              minimum=0),
    ParamSpec("retain_freed_memory", True, "Tune glibc malloc (process-wide) to keep freed multi-megabyte "
              "buffers for reuse instead of page-faulting them in again every scan: several ms less transport "
              "latency, RSS stays at its per-scan peak (pvd_core/memory.py)."),
)
SPECS: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMS}


class _NodeParamsBase:
    """Methods of :class:`NodeParams` (its fields come from :data:`PARAMS`)."""

    def validate(self) -> "NodeParams":
        """Check every value against its spec, then the rules that involve two parameters."""
        for spec in PARAMS:
            spec.validate(getattr(self, spec.name))
        max_range, min_range = getattr(self, "max_range"), getattr(self, "min_range")
        if max_range and max_range <= min_range:
            raise ParameterError(f"parameter 'max_range' ({max_range}) must be > 'min_range' "
                                 f"({min_range}), or 0 for no limit")
        return self  # type: ignore[return-value]

    def input_qos(self) -> QoSProfile:
        return _qos(getattr(self, "input_reliability"), getattr(self, "input_depth"))

    def output_qos(self) -> QoSProfile:
        return _qos(getattr(self, "output_reliability"), getattr(self, "output_depth"))


#: Values of the node's ROS parameters: one field per entry of :data:`PARAMS`, same name and default.
NodeParams = make_dataclass(
    "NodeParams", [(spec.name, spec.python_type, field(default=spec.default)) for spec in PARAMS],
    bases=(_NodeParamsBase,), namespace={"__module__": __name__, "__doc__": "Values of the node's ROS "
                                         "parameters (names, types and defaults from node_params.PARAMS)."})


def declare_parameters(node: Node) -> "NodeParams":
    """Declare every parameter on ``node`` and return their validated values."""
    values: dict[str, Any] = {}
    for spec in PARAMS:
        try:
            values[spec.name] = node.declare_parameter(spec.name, spec.default, spec.descriptor()).value
        except Exception as exc:  # rclpy raises several types for wrong types / out-of-range values
            rule = f"{spec.type_name}, {spec.constraint()}" if spec.constraint() else spec.type_name
            raise ParameterError(f"parameter '{spec.name}' ({rule}): {exc}") from exc
    return NodeParams(**values).validate()


def _qos(reliability: str, depth: int) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort" else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


# ---------------------------------------------------------------------------- the shipped params file
_YAML_HEADER = """\
# Parameters of segment_node with their defaults. GENERATED from the table in
# pvd_ros/node_params.py: edit the table, then run
#     python -m pvd_ros.node_params --yaml > config/segment.yaml
# (test/test_node_params.py fails while this file and the table differ). All are read-only.
# Loaded by launch/segment.launch.py and, unchanged, by test/test_segment_node.py.
# A params file of your own may give any subset, under /** or the node's name.
/**:
  ros__parameters:
"""
_INDENT = "    "
_WIDTH = 100


def _yaml_scalar(value: ParamValue) -> str:
    """``value`` as YAML that loads back as the same Python type (floats keep their point: 0.0, not 0)."""
    import json

    import yaml

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"no YAML literal for the default {value!r}")
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return value if value and yaml.safe_load(value) == value else json.dumps(value)


def params_file_text() -> str:
    """The shipped ``config/segment.yaml``: every parameter (but those left to the launch file)
    with its default, its description as a comment above it and its valid values beside it."""
    lines = [_YAML_HEADER.rstrip("\n")]
    for spec in PARAMS:
        comment = spec.description if spec.in_params_file else (
            f"{spec.name}: {spec.description} Not set here: given by the launch argument "
            f"{spec.name}:=... (or -p {spec.name}:=...).")
        lines += textwrap.wrap(comment, _WIDTH, initial_indent=_INDENT + "# ", subsequent_indent=_INDENT + "# ")
        if spec.in_params_file:
            entry = f"{_INDENT}{spec.name}: {_yaml_scalar(spec.default)}"
            lines.append(f"{entry}  # {spec.constraint()}" if spec.constraint() else entry)
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pvd_ros.node_params",
                                     description="Print the node's parameter table.")
    parser.add_argument("--yaml", action="store_true", required=True,
                        help="print config/segment.yaml as generated from the table")
    parser.parse_args(argv)
    sys.stdout.write(params_file_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
